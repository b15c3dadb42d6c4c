"""Spherical k-means with faiss, for several k at once, flat or nested.

Embeddings are L2-normalized and faiss runs spherical k-means (centroids are
renormalized after each step), so "nearest centroid" is "largest cosine".

* flat:   one independent k-means per k (each seeded with ``seed``);
* nested: ``ks`` sorted ascending, each a multiple of the one before; level l splits each
  cluster p of level l-1 into ``k_l / k_{l-1}`` children (numbered ``p * m + j``), fitted
  on p's members only. A window's cluster at level l is then always a child of its
  cluster at level l-1 (assignment goes down the tree).

Empty clusters: faiss re-seeds a cluster that empties during training by splitting a
large one; clusters still empty at the end (duplicate points, a nested parent with fewer
members than children) are kept (their centroid is a copy of a neighbour or of the
parent, so nothing is assigned to it twice over) and reported by :func:`cluster_sizes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import SpeclmError


def normalize(x: np.ndarray) -> np.ndarray:
    """float32 rows of unit L2 norm (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, 1e-12), dtype=np.float32)


def check_ks(ks: list[int], nested: bool) -> list[int]:
    if not ks:
        raise SpeclmError("clusters.ks is empty: give at least one number of clusters, e.g. [4, 16]")
    if any(int(k) < 1 for k in ks):
        raise SpeclmError(f"clusters.ks must be positive, got {ks}")
    out = sorted(set(int(k) for k in ks))
    if nested:
        for a, b in zip(out, out[1:]):
            if b % a:
                raise SpeclmError(f"clusters.nested needs each k to be a multiple of the one before; {b} is not a multiple of {a}")
    return out


def fit_kmeans(x: np.ndarray, k: int, niter: int = 25, seed: int = 0) -> np.ndarray:
    """Centroids [k, d] (unit rows) of spherical k-means on the rows of ``x``."""
    import faiss

    x = normalize(x)
    n, d = x.shape
    if k > n:
        raise SpeclmError(f"k={k} is larger than the number of windows to fit on ({n}): lower clusters.ks or give more data")
    if k == n:
        return x.copy()
    km = faiss.Kmeans(
        d, k, niter=niter, seed=seed, spherical=True, verbose=False,
        max_points_per_centroid=1 << 30,  # use every point given (fit_sample is the one knob)
        min_points_per_centroid=1,
    )
    km.train(x)
    return normalize(np.asarray(km.centroids).reshape(k, d))


def assign_flat(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest (largest cosine) centroid of each row, int32."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(normalize(centroids))
    out = np.empty(len(x), dtype=np.int32)
    for s in range(0, len(x), chunk):
        _, idx = index.search(normalize(x[s : s + chunk]), 1)
        out[s : s + chunk] = idx[:, 0]
    return out


def assign_children(x: np.ndarray, centroids: np.ndarray, parent_assign: np.ndarray, m: int) -> np.ndarray:
    """Nested assignment: the nearest of the ``m`` children of each row's parent cluster."""
    x = normalize(x)
    out = np.empty(len(x), dtype=np.int32)
    for p in np.unique(parent_assign):
        rows = np.flatnonzero(parent_assign == p)
        kids = centroids[p * m : (p + 1) * m]
        for s in range(0, len(rows), 65536):
            r = rows[s : s + 65536]
            out[r] = p * m + np.argmax(x[r] @ kids.T, axis=1)
    return out


@dataclass
class Level:
    k: int
    centroids: np.ndarray  # float32 [k, d], unit rows
    parent_k: int = 0  # nested: the k of the level above (0 = flat)


def _split_level(x: np.ndarray, k: int, parent: Level, parent_assign: np.ndarray, niter: int, seed: int) -> Level:
    m = k // parent.k
    cents = np.empty((k, x.shape[1]), dtype=np.float32)
    for p in range(parent.k):
        members = x[parent_assign == p]
        if len(members) >= m:
            cents[p * m : (p + 1) * m] = fit_kmeans(members, m, niter, seed + p)
        else:  # too few members: each gets its own child, the rest copy the parent (and stay empty)
            cents[p * m : (p + 1) * m] = parent.centroids[p]
            cents[p * m : p * m + len(members)] = members
    return Level(k, cents, parent.k)


def fit_levels(x: np.ndarray, ks: list[int], nested: bool = False, niter: int = 25, seed: int = 0,
               progress: bool = False) -> list[Level]:
    """Fit every k of ``ks`` on the rows of ``x`` (see the module docstring)."""
    from ..core.progress import track

    ks = check_ks(ks, nested)
    x = normalize(x)
    if ks[-1] > len(x):
        raise SpeclmError(f"k={ks[-1]} is larger than the number of windows to fit on ({len(x)}): lower clusters.ks or give more data")
    levels: list[Level] = []
    for k in track(ks, desc="k-means", unit="k", show=progress):
        if not nested or not levels:
            levels.append(Level(k, fit_kmeans(x, k, niter, seed)))
        else:
            parent_assign = assign_levels(x, levels)[levels[-1].k]
            levels.append(_split_level(x, k, levels[-1], parent_assign, niter, seed))
    return levels


def assign_levels(x: np.ndarray, levels: list[Level]) -> dict[int, np.ndarray]:
    """Cluster of each row for every level: {k: int32 [n]}."""
    out: dict[int, np.ndarray] = {}
    for lv in levels:
        if lv.parent_k:
            out[lv.k] = assign_children(x, lv.centroids, out[lv.parent_k], lv.k // lv.parent_k)
        else:
            out[lv.k] = assign_flat(x, lv.centroids)
    return out


def cluster_sizes(assign: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(assign, minlength=k).astype(np.int64)


def inertia(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray) -> float:
    """Sum of squared L2 distances of the rows to their assigned centroids."""
    x = np.asarray(x, dtype=np.float32)
    total = 0.0
    for s in range(0, len(x), 65536):
        d = x[s : s + 65536] - centroids[assign[s : s + 65536]]
        total += float(np.einsum("ij,ij->", d, d, dtype=np.float64))
    return total
