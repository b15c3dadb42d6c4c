"""The routed generic model of an asymmetric method (issue 19, item 4b).

SLM-mix and SLM-pn pretrain one generic model made of experts, one per generic cluster.
Their generic perplexity (docs/paper.md, Table 8 / Figure 3) is that model's: every generic valid
window through its own cluster's expert, not one expert (the domain's, from which a
specialization starts) on every window. :meth:`speclm.methods.base.Method.routed_generic`
gives a :class:`Routed` for these methods (None for the others); the grid evaluates it on
the generic valid split and caches the result per pretraining checkpoint (or snapshot),
speclm.grid.evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..core.errors import SpeclmError


@dataclass
class Routed:
    """A routed generic model: what it is made of and its per-window NLL.

    checkpoints: the checkpoint folders the routed model reads (the cache's stamp);
    k: the clustering that routes; nll(windows, indices, batch_size, dtype, progress):
    the summed NLL of each generic valid window of ``indices``, each through its cluster's expert."""

    checkpoints: list[Path]
    k: int
    nll: Callable[..., np.ndarray]


def mixture(experts: Mapping[int, Path], assign: np.ndarray, k: int) -> Routed:
    """SLM-mix: expert ``c`` (a plain checkpoint folder) on the windows of cluster ``c``;
    ``assign``: the cluster of every generic valid window."""
    from ..train.checkpoint import load_transformer
    from ..train.validate import window_nll

    def nll(windows, indices, batch_size: int = 8, dtype: str = "fp32", progress: bool = False) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        a = assign[indices]
        missing = sorted(set(np.unique(a).tolist()) - set(experts))
        if missing:
            raise SpeclmError(f"generic valid windows in cluster(s) {missing} of k={k}, which have no expert "
                              "(no generic train window): the mixture cannot route them")
        out = np.empty(len(indices), dtype=np.float64)
        for c, ckpt in sorted(experts.items()):
            sel = np.nonzero(a == c)[0]
            if len(sel):
                out[sel] = window_nll(load_transformer(ckpt), windows, indices[sel], batch_size=batch_size,
                                      dtype=dtype, progress=progress, desc=f"eval generic/valid expert {c}")
        return out

    return Routed(checkpoints=[Path(experts[c]) for c in sorted(experts)], k=k, nll=nll)


def projected(checkpoint: Path, assign: np.ndarray, k: int) -> Routed:
    """SLM-pn: the projected network, each window with its cluster's expert id."""
    from ..train.checkpoint import load_projected
    from ..train.validate import window_nll

    def nll(windows, indices, batch_size: int = 8, dtype: str = "fp32", progress: bool = False) -> np.ndarray:
        return window_nll(load_projected(checkpoint), windows, indices, batch_size=batch_size, dtype=dtype,
                          extras={"expert": assign}, progress=progress, desc="eval generic/valid routed")

    return Routed(checkpoints=[Path(checkpoint)], k=k, nll=nll)
