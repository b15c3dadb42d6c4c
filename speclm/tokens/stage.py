"""The tokens stage: train a byte-level BPE on the generic train split, then encode every
set and split into packed token streams with document and window indexes.

Outputs (``tokens/``, replaced whole and atomically; manifest last): ``tokenizer.json``,
``summary.json`` and, per set and split, ``.tokens.bin`` / ``.docs.npy`` /
``.windows.npy`` (layout in :mod:`speclm.tokens.shards`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from ..core.progress import progress as progress_bar

from ..core import atomic, manifest
from ..core.table import text_table
from ..corpus.overlap_stage import apply_overlap, overlap_dir
from ..corpus.store import SPLITS, list_sets, read_summary, read_texts
from ..core.errors import SpeclmError
from ..core.atomic import read_required_json
from ..core.run import Run
from .bpe import EOT_ID, check_vocab_size, save_tokenizer, set_threads, train_bpe
from .shards import stream_paths, token_dtype

STAGE = "tokens"
SUMMARY = "summary.json"
TOKENIZER = "tokenizer.json"
ENCODE_CHUNK_BYTES = 4_000_000  # texts per encode_batch call: about this many bytes


def _stage_config(run: Run) -> dict:
    cfg = dataclasses.asdict(run.config.tokens)
    cfg.pop("workers", None)  # how many threads encode does not change the tokens
    cfg["seed"] = run.config.seed  # picks the tokenizer's training sample
    return cfg


def _inputs(run: Run) -> dict[str, str]:
    """The corpus as built, and the contamination check applied to it (speclm.corpus.overlap_stage)."""
    return {"corpus": manifest.require_fingerprint(run.corpus_dir, "corpus build"),
            "overlap": manifest.require_fingerprint(overlap_dir(run), "corpus overlap")}


def tokenizer_sample(texts: list[str], max_mb: float, seed: int) -> list[str]:
    """A deterministic random sample of ``texts`` of at most ``max_mb`` MB (at least one text)."""
    order = np.random.default_rng(seed).permutation(len(texts))
    budget, used, out = max_mb * 1e6, 0, []
    for i in order:
        n = len(texts[i].encode("utf-8"))
        if out and used + n > budget:
            continue
        out.append(texts[i])
        used += n
        if used >= budget:
            break
    return out


def encode_stream(tok, texts: list[str], out_file, dtype: np.dtype, bar=None) -> np.ndarray:
    """Encode ``texts`` into ``out_file`` as ``<eot> doc0 <eot> doc1 ...``; returns docs [n, 2]."""
    docs = np.zeros((len(texts), 2), dtype=np.int64)
    eot = np.array([EOT_ID], dtype=dtype)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    pos, i = 0, 0
    while i < len(texts):
        j, size = i, 0
        while j < len(texts) and (j == i or size < ENCODE_CHUNK_BYTES):
            size += len(texts[j])
            j += 1
        parts = []
        for k, enc in enumerate(encode(texts[i:j], add_special_tokens=False), start=i):
            ids = np.asarray(enc.ids, dtype=dtype)
            parts += [eot, ids]
            docs[k] = (pos + 1, len(ids))
            pos += 1 + len(ids)
        out_file.write(np.concatenate(parts).tobytes())
        if bar is not None:
            bar.update(sum(len(t.encode("utf-8")) for t in texts[i:j]))
        i = j
    return docs


def window_index(n_tokens: int, docs: np.ndarray, window: int) -> np.ndarray:
    """int64 [(n_tokens - 1) // window, 2]: (start, index of the document holding the start;
    a separator belongs to the document after it)."""
    n = max(0, (n_tokens - 1) // window)
    starts = np.arange(n, dtype=np.int64) * window
    doc = np.searchsorted(docs[:, 0] - 1, starts, side="right") - 1
    return np.stack([starts, doc], axis=1).astype(np.int64)


def build_tokens(run: Run, force: bool = False) -> dict:
    """Hold the stage folder's lock (another process building it waits) around :func:`_build_tokens`."""
    from ..core.locks import hold_stage

    with hold_stage(run.tokens_dir, f"tokens of {run.path}"):
        return _build_tokens(run, force)


def _build_tokens(run: Run, force: bool = False) -> dict:
    """Build (or reuse) the tokenizer and token shards of ``run``; returns the summary."""
    cfg = run.config.tokens
    tokens_dir = run.tokens_dir
    check_vocab_size(cfg.vocab_size)  # bad settings are refused before anything is written
    if cfg.window < 1:
        raise SpeclmError(f"tokens.window = {cfg.window} must be at least 1")
    manifest.require_fingerprint(run.corpus_dir, "corpus build")
    apply_overlap(run)  # skipped when its manifest matches; drops leaked generic documents first
    stage_cfg, inputs = _stage_config(run), _inputs(run)
    if not force and manifest.is_fresh(tokens_dir, STAGE, stage_cfg, inputs):
        return read_tokens_summary(tokens_dir)
    set_threads(cfg.workers)
    atomic.remove_stale_temps(tokens_dir)  # what a killed build left behind
    corpus_dir = run.corpus_dir
    sets = list_sets(corpus_dir)
    progress = sys.stderr.isatty()

    t0, c0 = time.perf_counter(), time.process_time()
    sample = tokenizer_sample(read_texts(corpus_dir, "generic", "train"), cfg.tokenizer_train_mb, run.config.seed)
    sample_mb = sum(len(t.encode("utf-8")) for t in sample) / 1e6
    tok = train_bpe(sample, cfg.vocab_size, cfg.min_frequency, length=len(sample), progress=progress)
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    del sample
    vocab_size = tok.get_vocab_size()
    dtype = token_dtype(vocab_size)

    # Smallest splits first: a window too long for the data is reported before the long work.
    corpus_mb = read_summary(corpus_dir)["sets"]
    jobs = sorted(((s, sp) for s in sets for sp in SPLITS), key=lambda j: corpus_mb[j[0]][j[1]]["mb"])
    total_bytes = int(sum(corpus_mb[s][sp]["mb"] for s, sp in jobs) * 1e6)
    stats: dict[str, dict] = {s: {} for s in sets}
    t1, c1 = time.perf_counter(), time.process_time()
    with atomic.atomic_dir(tokens_dir) as tmp, progress_bar(total_bytes, desc="encode", unit="B", unit_scale=True) as bar:
        save_tokenizer(tok, tmp / TOKENIZER)
        for set_name, split in jobs:
            texts = read_texts(corpus_dir, set_name, split)
            paths = stream_paths(tmp, set_name, split)
            paths["tokens"].parent.mkdir(parents=True, exist_ok=True)
            with open(paths["tokens"], "wb") as f:
                docs = encode_stream(tok, texts, f, dtype, bar)
            n_tokens = int(docs[:, 1].sum() + len(docs))
            if n_tokens < cfg.window + 1:
                raise SpeclmError(
                    f"window length {cfg.window} is larger than {set_name}/{split}, which has only {n_tokens} tokens "
                    f"(a window needs window + 1 = {cfg.window + 1}); lower tokens.window"
                )
            windows = window_index(n_tokens, docs, cfg.window)
            np.save(paths["docs"], docs, allow_pickle=False)
            np.save(paths["windows"], windows, allow_pickle=False)
            nbytes = sum(len(t.encode("utf-8")) for t in texts)
            stats[set_name][split] = {
                "docs": len(docs),
                "tokens": n_tokens,
                "windows": len(windows),
                "mb": round(nbytes / 1e6, 4),
                "bytes_per_token": round(nbytes / max(1, n_tokens - len(docs)), 3),
            }
        encode_s, encode_cpu_s = time.perf_counter() - t1, time.process_time() - c1
        summary = {
            "vocab_size": vocab_size,
            "window": cfg.window,
            "dtype": dtype.name,
            "sets": {s: {sp: stats[s][sp] for sp in SPLITS} for s in sets},
            "tokenizer": {"train_mb": round(sample_mb, 3), "train_s": round(train_s, 3), "train_cpu_s": round(train_cpu_s, 3)},
            "encode": {
                "mb": round(total_bytes / 1e6, 3),
                "s": round(encode_s, 3),
                "cpu_s": round(encode_cpu_s, 3),
                "mb_per_s": round(total_bytes / 1e6 / max(encode_s, 1e-9), 3),
                "tokens_per_s": round(sum(v["tokens"] for d in stats.values() for v in d.values()) / max(encode_s, 1e-9)),
                "workers": cfg.workers,
            },
        }
        atomic.write_json(tmp / SUMMARY, summary)
        tok_sha = manifest.hash_file(tmp / TOKENIZER)
    outputs = [TOKENIZER, SUMMARY] + [
        str(p.relative_to(tmp)) for s in sets for sp in SPLITS for p in stream_paths(tmp, s, sp).values()
    ]
    info = {"vocab_size": vocab_size, "window": cfg.window, "dtype": dtype.name, "tokenizer_sha256": tok_sha, "sets": sets}
    manifest.write(tokens_dir, STAGE, stage_cfg, inputs, outputs, info)
    return summary


def read_tokens_summary(tokens_dir: str | Path) -> dict:
    return read_required_json(Path(tokens_dir) / SUMMARY, f"no tokens in {tokens_dir}: run `speclm tokens` first",
                              fix="rebuild the tokens with `speclm tokens --force`")


def format_tokens_summary(summary: dict) -> str:
    rows = []
    for set_name, per in summary["sets"].items():
        for split in SPLITS:
            s = per[split]
            rows.append([set_name, split, s["docs"], s["tokens"], s["windows"], round(s["mb"], 2), s["bytes_per_token"]])
    tk, enc = summary["tokenizer"], summary["encode"]
    head = (
        f"tokens: byte-level BPE, vocab {summary['vocab_size']:,}, window {summary['window']}, {summary['dtype']}; "
        f"tokenizer trained on {tk['train_mb']:.1f} MB in {tk['train_s']:.1f} s (cpu {tk.get('train_cpu_s', 0):.1f} s); "
        f"encoded {enc['mb']:.1f} MB in {enc['s']:.1f} s, cpu {enc.get('cpu_s', 0):.1f} s "
        f"({enc['mb_per_s']:.1f} MB/s, {enc['tokens_per_s']:,} tokens/s)"
    )
    return head + "\n" + text_table(["set", "split", "docs", "tokens", "windows", "MB", "bytes/token"], rows)
