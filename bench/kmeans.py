"""k-means on the real window embeddings: faiss (what the stage uses) against
scikit-learn's KMeans.

Both get the same L2-normalized Sentence-BERT embeddings of generic train windows (read
from a run's embedding cache, ``clusters/embeddings/generic/train``), the same k and the
same number of iterations, on the same machine in the same run, alternating. faiss runs
spherical k-means as the stage does; scikit-learn runs Lloyd's algorithm with one
k-means++ init (``n_init=1``) and its default tolerance. Prints the time (median of the
repeats), the ratio sklearn / faiss, and the inertia (sum of squared distances to the
mean of its cluster, computed the same way for both) of each.

    python bench/kmeans.py --run runs/demo                 # a run whose embeddings are cached
    python bench/kmeans.py --run runs/demo --ks 4 16 64 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def cached_embeddings(run: str) -> np.ndarray:
    """Every verified shard of the run's generic train embedding cache (any key)."""
    import json

    from speclm.core import manifest

    root = Path(run) / "clusters" / "embeddings" / "generic" / "train"
    parts = []
    for npy in sorted(root.glob("shard-*.npy")):
        side = npy.with_suffix(".json")
        if side.exists() and json.loads(side.read_text())["sha256"] == manifest.hash_file(npy):
            parts.append(np.load(npy, allow_pickle=False))
    if not parts:
        sys.exit(f"no cached generic train embeddings under {root}: run `speclm clusters embed --run {run}` first")
    return np.concatenate(parts)


def partition_inertia(x: np.ndarray, labels: np.ndarray, k: int, inertia) -> float:
    """Sum of squared distances to the mean of each point's cluster: the same yardstick for
    both (faiss keeps unit-norm centroids, scikit-learn plain means)."""
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    means = (sums / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]).astype(np.float32)
    return inertia(x, means, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder with cached embeddings")
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from sklearn.cluster import KMeans

    from speclm.clusters.kmeans import assign_flat, fit_kmeans, inertia, normalize

    x = normalize(cached_embeddings(args.run))
    print(f"embeddings: {x.shape[0]:,} x {x.shape[1]} from {args.run}; niter {args.niter}; "
          f"threads: faiss {__import__('faiss').omp_get_max_threads()}")
    print(f"\n| k | faiss s (median of {args.repeats}) | sklearn s | sklearn / faiss | inertia faiss | inertia sklearn |")
    print("|---|---|---|---|---|---|")
    for k in args.ks:
        if k > len(x):
            print(f"| {k} | k larger than the {len(x)} windows: skipped |||||")
            continue
        tf, ts = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            cf = fit_kmeans(x, k, niter=args.niter, seed=r)
            tf.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            km = KMeans(n_clusters=k, n_init=1, max_iter=args.niter, random_state=r).fit(x)
            ts.append(time.perf_counter() - t0)
        inf = partition_inertia(x, assign_flat(x, cf), k, inertia)
        ins = partition_inertia(x, km.predict(x).astype(np.int64), k, inertia)
        f, s = statistics.median(tf), statistics.median(ts)
        print(f"| {k} | {f:.3f} | {s:.3f} | {s / f:.1f}x | {inf:.1f} | {ins:.1f} |")


if __name__ == "__main__":
    main()
