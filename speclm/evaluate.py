"""Perplexity: per domain, on the generic set, and the paper's macro-average.

The macro-average (:func:`macro_perplexity`) is ``exp(mean over domains of the mean
per-token NLL)``: every domain weighs the same, whatever its token count. NLLs are
summed per window in float64, in window order, so a result does not depend on the batch
size (up to float rounding inside the model) and repeats exactly.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import atomic
from .errors import SpeclmError
from .train.data import eval_indices, to_batch
from .train.loop import autocast

GENERIC = "generic"


@torch.no_grad()
def window_nll(
    model: torch.nn.Module,
    windows,
    indices: Optional[np.ndarray] = None,
    batch_size: int = 8,
    dtype: str = "fp32",
    extras: Optional[Mapping[str, np.ndarray]] = None,
    progress: bool = False,
    desc: str = "eval",
) -> np.ndarray:
    """Summed next-token NLL of each window (float64 [n]), in the order of ``indices``."""
    if batch_size <= 0:
        raise SpeclmError(f"batch size must be positive, got {batch_size}")
    indices = np.arange(len(windows), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty(len(indices), dtype=np.float64)
    starts = range(0, len(indices), batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
        idx = indices[s : s + batch_size]
        batch = to_batch(windows.batch(idx), extras, idx)
        x, y = batch[0].to(device), batch[1].to(device)
        kw = {k: v.to(device) for k, v in batch[2].items()} if len(batch) > 2 else {}
        with autocast(device, dtype):
            logits, _ = model(x, **kw)
        nll = -F.log_softmax(logits.float(), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        out[s : s + len(idx)] = nll.double().sum(dim=1).cpu().numpy()
    model.train(was_training)
    return out


def mean_nll(model, windows, max_windows: int = 0, batch_size: int = 8, dtype: str = "fp32", **kw) -> tuple[float, int]:
    """(mean per-token NLL, number of tokens) over an evenly spread subset of windows."""
    if len(windows) == 0:
        raise SpeclmError("cannot evaluate on an empty split (no windows)")
    idx = eval_indices(len(windows), max_windows)
    sums = window_nll(model, windows, idx, batch_size=batch_size, dtype=dtype, **kw)
    seq = len(windows.batch(idx[:1])[0]) - 1
    n_tokens = len(idx) * seq
    return float(math.fsum(sums.tolist()) / n_tokens), n_tokens


def make_valid_fn(windows, max_windows: int = 0, batch_size: int = 8, dtype: str = "fp32") -> Callable:
    """A validation function for the training loop: model -> mean per-token NLL."""

    def valid(model) -> float:
        return mean_nll(model, windows, max_windows=max_windows, batch_size=batch_size, dtype=dtype)[0]

    return valid


def macro_perplexity(nll_by_domain: Mapping[str, float]) -> float:
    """The paper's macro-average: exp of the mean over domains of each domain's mean
    per-token NLL."""
    if not nll_by_domain:
        raise SpeclmError("macro perplexity needs at least one domain")
    vals = [float(v) for v in nll_by_domain.values()]
    if not all(math.isfinite(v) for v in vals):
        raise SpeclmError(f"macro perplexity: non-finite NLL in {dict(nll_by_domain)}")
    return math.exp(sum(vals) / len(vals))


def evaluate_sets(
    model: torch.nn.Module,
    shards,
    sets: Optional[list[str]] = None,
    split: str = "test",
    max_windows: int = 0,
    batch_size: int = 8,
    dtype: str = "fp32",
    progress: bool = True,
) -> dict:
    """Perplexity of ``model`` on ``split`` of each set (default: every domain and the
    generic set) and the macro-average over the domains."""
    sets = sets or shards.sets()
    rows = {}
    t0 = time.perf_counter()
    for name in sets:
        w = shards.windows(name, split)
        nll, n = mean_nll(model, w, max_windows=max_windows, batch_size=batch_size, dtype=dtype,
                          progress=progress, desc=f"eval {name}")
        rows[name] = {"nll": nll, "ppl": math.exp(nll), "tokens": n}
    domains = {k: v["nll"] for k, v in rows.items() if k != GENERIC}
    result = {"split": split, "sets": rows, "seconds": time.perf_counter() - t0}
    if domains:
        result["macro_ppl"] = macro_perplexity(domains)
        result["macro_domains"] = sorted(domains)
    return result


def check_tokenizer(meta: Mapping, shards, checkpoint) -> None:
    """Refuse a checkpoint trained with another tokenizer than the shards'."""
    want = meta.get("tokenizer_sha256")
    if want and want != shards.tokenizer_sha256:
        raise SpeclmError(
            f"checkpoint {checkpoint} was trained with another tokenizer than the one in {shards.dir}; "
            f"pass the run folder it was trained in"
        )
    vocab = meta.get("shape", {}).get("vocab_size")
    if vocab is not None and vocab < shards.vocab_size:
        raise SpeclmError(
            f"checkpoint {checkpoint} has a vocabulary of {vocab} but the shards in {shards.dir} use {shards.vocab_size}"
        )


def evaluate_checkpoint(checkpoint: str | Path, shards, device=None, **kw) -> dict:
    """Load a checkpoint folder (checked against the shards' tokenizer) and run
    :func:`evaluate_sets` on it (keywords: sets, split, max_windows, batch_size, dtype, progress)."""
    from .train.checkpoint import load_transformer, read_meta
    from .train.distributed import default_device

    check_tokenizer(read_meta(checkpoint), shards, checkpoint)
    model = load_transformer(checkpoint, device=device or default_device())
    result = evaluate_sets(model, shards, **kw)
    result["checkpoint"] = str(checkpoint)
    return result


def write_results(path: str | Path, result: Mapping) -> None:
    atomic.write_json(path, dict(result))
