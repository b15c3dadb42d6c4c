"""Perplexity: per domain, on the generic set, and the paper's macro-average.

The macro-average (:func:`macro_perplexity`) is ``exp(mean over domains of the mean
per-token NLL)``: every domain weighs the same, whatever its token count. The per-window
NLLs come from :mod:`speclm.train.validate`, the same code the training loop validates with.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch

from ..core import atomic
from ..core.errors import SpeclmError
from ..corpus.store import GENERIC
from ..train.validate import mean_nll


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
    expert: Optional[int] = None,
) -> dict:
    """Perplexity of ``model`` on ``split`` of each set (default: every domain and the
    generic set) and the macro-average over the domains. ``expert``: a projected network's
    expert every window goes through."""
    sets = sets or shards.sets()
    rows = {}
    t0 = time.perf_counter()
    for name in sets:
        w = shards.windows(name, split)
        extras = None if expert is None else {"expert": np.full(len(w), int(expert), dtype=np.int64)}
        nll, n = mean_nll(model, w, max_windows=max_windows, batch_size=batch_size, dtype=dtype,
                          progress=progress, desc=f"eval {name}", extras=extras)
        rows[name] = {"nll": nll, "ppl": math.exp(nll), "tokens": n}
    domains = {k: v["nll"] for k, v in rows.items() if k != GENERIC}
    result = {"split": split, "sets": rows, "seconds": time.perf_counter() - t0}
    if domains:
        result["macro_ppl"] = macro_perplexity(domains)
        result["macro_domains"] = sorted(domains)
    return result


def evaluate_checkpoint(checkpoint: str | Path, shards, device=None, expert: Optional[int] = None, **kw) -> dict:
    """Load a checkpoint folder (checked against the shards' tokenizer) and run
    :func:`evaluate_sets` on it (keywords: sets, split, max_windows, batch_size, dtype, progress).

    A projected network (slm-pn's pretraining, model.json kind ``projected-network``) is
    evaluated through one expert, ``expert``, for every set: it has no single model
    without one, and which expert suits a domain is the specialization's choice (the
    grid's slm-pn specializations are plain transformers). Without ``expert``: a one-line
    error saying to pass --expert."""
    from ..train.checkpoint import check_tokenizer, load_projected, load_transformer, read_meta
    from ..core.ranks import default_device

    meta = read_meta(checkpoint)
    check_tokenizer(meta, shards, checkpoint)
    device = device or default_device()
    if meta.get("kind") == "projected-network":
        k = int((meta.get("projected") or {}).get("k", 0))
        if expert is None:
            raise SpeclmError(f"{checkpoint} is a projected network with {k} experts: pass --expert E (0..{k - 1}) "
                              "to evaluate every set through expert E")
        if not 0 <= expert < k:
            raise SpeclmError(f"--expert {expert} is out of range: {checkpoint} has experts 0..{k - 1}")
        model = load_projected(checkpoint, device=device)
    else:
        if expert is not None:
            raise SpeclmError(f"--expert applies to projected networks only; {checkpoint} is a plain transformer")
        model = load_transformer(checkpoint, device=device)
    result = evaluate_sets(model, shards, expert=expert, **kw)
    result["checkpoint"] = str(checkpoint)
    if expert is not None:
        result["expert"] = int(expert)
    return result


def write_results(path: str | Path, result: Mapping) -> None:
    atomic.write_json(path, dict(result))
