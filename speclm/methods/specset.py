"""The specialization set as the per-domain methods see it: the size's slice of the domain
train split (:func:`speclm.methods.sizes.slice_indices`) and its histogram.

A user with 16k tokens of domain text has only those, so SLM-is (cluster histogram), SLM-dsir
(hashed n-gram target) and SLM-mix (expert choice) read the slice, as SLM-pn does. A
per-domain pretraining job is keyed by the hash of the slice's histogram: two sizes whose
slices give the same histogram share one job. Every target records its total variation
distance to the whole split's histogram (0.5 * sum |p_slice - p_split|), the paper's reason
why a large k hurts a small set (docs/paper.md §2.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..core.manifest import hash_obj
from . import inputs
from .base import Context
from .sizes import size_label, slice_indices


@dataclass
class Target:
    """What a per-domain pretraining is computed from: the slice's (normalized) histogram."""

    size: str
    windows: np.ndarray  # the slice's train-window indices
    histogram: np.ndarray  # float64, sums to 1
    whole: np.ndarray  # the whole train split's histogram
    payload: Any = field(default=None, repr=False)  # e.g. DSIR's slice features

    @property
    def tv(self) -> float:
        return total_variation(self.histogram, self.whole)

    @property
    def hash(self) -> str:
        return hash_obj([round(float(x), 12) for x in self.histogram])[:16]

    def report(self) -> dict:
        return {"size": self.size, "windows": int(len(self.windows)), "histogram_hash": self.hash,
                "tv_to_split": self.tv}


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def slice_of(ctx: Context, domain: str, size: Optional[str]) -> tuple[str, np.ndarray, int]:
    """(size label, the slice's train-window indices, windows in the whole split)."""
    s = inputs.shards(ctx)
    n = len(s.windows(domain, "train"))
    label = size_label(size or "all")
    return label, slice_indices(label, n, s.window, seed=ctx.config.seed, domain=domain), n


def cluster_target(ctx: Context, domain: str, size: Optional[str], k: int) -> Target:
    """The slice's cluster histogram at k, and the whole split's."""
    from ..clusters.store import histogram_of
    from ..core.errors import SpeclmError

    label, idx, n = slice_of(ctx, domain, size)
    assign = np.asarray(inputs.clusters(ctx).assign(k, domain, "train"), dtype=np.int64)
    if len(assign) != n:
        raise SpeclmError(f"{domain}/train: {len(assign)} cluster ids for {n} windows; rerun `speclm clusters`")
    return Target(size=label, windows=idx, histogram=histogram_of(assign[idx], k), whole=histogram_of(assign, k))
