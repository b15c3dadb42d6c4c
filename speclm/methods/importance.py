"""Cluster-based importance resampling of the generic set (SLM-is, docs/paper.md §2.3).

The domain's cluster histogram p_spec(c) says how often to draw each cluster; a window is
then drawn uniformly inside the drawn cluster. Equivalently, generic window x is drawn with
probability q(x) = p_spec(c(x)) / n_c(x) (n_c: generic windows in cluster c), which is the
paper's weight w(x) = p_spec(c(x)) / p_generic(c(x)) times the uniform 1/n.

Options: additive smoothing of the histogram (avoids putting all mass on a few clusters),
and a share of uniformly drawn generic windows. Clusters with no generic window cannot be
drawn; their mass is spread over the others (and reported).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import SpeclmError


@dataclass
class ResamplePlan:
    cluster_probs: np.ndarray  # [k] probability of drawing each cluster (after smoothing, renormalized)
    cluster_sizes: np.ndarray  # [k] generic windows per cluster
    uniform_share: float
    dropped_mass: float  # domain mass on clusters with no generic window

    def window_probs(self, assign: np.ndarray) -> np.ndarray:
        """q(x) for every generic window (sums to 1)."""
        n = len(assign)
        per_window = np.where(self.cluster_sizes > 0, self.cluster_probs / np.maximum(self.cluster_sizes, 1), 0.0)
        return (1 - self.uniform_share) * per_window[assign] + self.uniform_share / n

    def weights(self, assign: np.ndarray) -> np.ndarray:
        """The importance weights w(x) = n * q(x) (mean 1 over the generic set)."""
        return self.window_probs(assign) * len(assign)


def plan(histogram: np.ndarray, generic_assign: np.ndarray, smoothing: float = 0.0, uniform_share: float = 0.0) -> ResamplePlan:
    hist = np.asarray(histogram, dtype=np.float64)
    k = len(hist)
    if smoothing < 0:
        raise SpeclmError(f"methods.is_smoothing must be >= 0, got {smoothing}")
    if not 0.0 <= uniform_share <= 1.0:
        raise SpeclmError(f"methods.is_uniform_share must be in [0, 1], got {uniform_share}")
    if hist.sum() <= 0:
        raise SpeclmError("the domain's cluster histogram is empty")
    sizes = np.bincount(np.asarray(generic_assign, dtype=np.int64), minlength=k)[:k]
    p = hist / hist.sum() + smoothing
    p = p / p.sum()
    dropped = float(p[sizes == 0].sum())
    p = np.where(sizes > 0, p, 0.0)
    if p.sum() <= 0:
        raise SpeclmError("none of the domain's clusters holds a generic window: nothing to resample")
    return ResamplePlan(cluster_probs=p / p.sum(), cluster_sizes=sizes, uniform_share=uniform_share, dropped_mass=dropped)


def effective_sample_size(q: np.ndarray, draws: int) -> dict:
    """How much a stream of ``draws`` windows drawn with probabilities ``q`` repeats.

    - ``kish_ess``: (sum w)^2 / sum w^2 for w = n q, the effective number of generic
      windows the resample stands for (n when uniform);
    - ``expected_unique``: expected distinct windows in ``draws`` draws;
    - ``repeat_factor``: draws / expected_unique (1 = no repeats).
    """
    q = np.asarray(q, dtype=np.float64)
    n = len(q)
    kish = float(1.0 / np.sum(q * q))  # (sum q)^2 / sum q^2 with sum q = 1
    unique = float(np.sum(-np.expm1(draws * np.log1p(-np.minimum(q, 1 - 1e-15)))))
    return {
        "generic_windows": n,
        "draws": int(draws),
        "kish_ess": kish,
        "kish_ess_fraction": kish / n,
        "expected_unique": unique,
        "repeat_factor": draws / max(unique, 1e-12),
    }


DRAWS = ("iid", "cycle")  # methods.is_draw


def draw(rng: np.random.Generator, plan_: ResamplePlan, members: list[np.ndarray], n: int, n_generic: int,
         within: str = "iid") -> np.ndarray:
    """Draw ``n`` generic window indices: a cluster by the plan, then a window inside it
    (or, with probability ``uniform_share``, a uniform generic window).

    ``within``: ``iid`` draws the window uniformly with replacement; ``cycle`` reads the
    cluster's windows in shuffled passes (a fresh permutation per pass), so a cluster drawn
    m times reads each of its n_c windows floor(m / n_c) or ceil(m / n_c) times. Either way
    every window of the cluster is equally likely at every draw (the same q(x))."""
    if within not in DRAWS:
        raise SpeclmError(f"methods.is_draw must be one of {', '.join(DRAWS)}, got {within!r}")
    clusters = rng.choice(len(plan_.cluster_probs), size=n, p=plan_.cluster_probs)
    out = np.empty(n, dtype=np.int64)
    for c in np.unique(clusters):
        where = np.nonzero(clusters == c)[0]
        mem = members[c]
        if within == "iid":
            out[where] = mem[rng.integers(0, len(mem), size=len(where))]
        else:
            passes = -(-len(where) // len(mem))
            out[where] = np.concatenate([rng.permutation(mem) for _ in range(passes)])[: len(where)]
    if plan_.uniform_share > 0:
        uni = rng.random(n) < plan_.uniform_share
        out[uni] = rng.integers(0, n_generic, size=int(uni.sum()))
    return out


def cluster_members(assign: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(k)]
