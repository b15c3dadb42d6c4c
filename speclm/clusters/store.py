"""On-disk layout of the clusters stage, and its readers.

```
clusters/
  manifest.json  summary.json
  embeddings/<set>/<split>/shard-00000.npy  .json   cached Sentence-BERT embeddings (resumable)
  k<K>/centroids.npy     float32 [K, 384], unit rows
  k<K>/meta.json         k, parent_k (nested), cluster sizes, fingerprint
  k<K>/assign/<set>/<split>.npy   int32 [n_windows], aligned with TokenShards windows
  describe/              report.md, summary.json, <domain>.png, k<K>-clusters.md
```

Each embedding shard holds the embeddings of ``shard_size`` consecutive entries of its
(set, split)'s list of embedded windows; its ``.json`` sidecar records the cache key
(model, embedding rule, token shards, window list), the row count and the sha256 of the
``.npy``. A shard whose sidecar is missing, whose key differs, or whose bytes do not match
(truncated, corrupted) is recomputed; every other shard is reused, so a killed run
resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core import atomic, manifest
from ..core.errors import SpeclmError

SHARD_SIZE = 512


class EmbeddingCache:
    def __init__(self, clusters_dir: str | Path, shard_size: int = SHARD_SIZE):
        self.root = Path(clusters_dir) / "embeddings"
        self.shard_size = shard_size

    def paths(self, set_name: str, split: str, shard: int) -> tuple[Path, Path]:
        base = self.root / set_name / split / f"shard-{shard:05d}"
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def n_shards(self, n_rows: int) -> int:
        return (n_rows + self.shard_size - 1) // self.shard_size

    def load(self, set_name: str, split: str, shard: int, key: str, rows: int, dim: int) -> np.ndarray | None:
        """The cached shard, or None when it is missing, stale, truncated or corrupted."""
        npy, side = self.paths(set_name, split, shard)
        if not npy.exists() or not side.exists():
            return None
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            if meta.get("key") != key or meta.get("rows") != rows or meta.get("sha256") != manifest.hash_file(npy):
                return None
            arr = np.load(npy, allow_pickle=False)
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        if arr.shape != (rows, dim) or arr.dtype != np.float32 or not np.isfinite(arr).all():
            return None
        return arr

    def save(self, set_name: str, split: str, shard: int, key: str, emb: np.ndarray) -> None:
        npy, side = self.paths(set_name, split, shard)
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        atomic.save_npy(npy, emb)
        atomic.write_json(side, {"key": key, "rows": int(len(emb)), "sha256": manifest.hash_file(npy)})


def k_dir(clusters_dir: str | Path, k: int) -> Path:
    return Path(clusters_dir) / f"k{int(k)}"


def assign_path(clusters_dir: str | Path, k: int, set_name: str, split: str) -> Path:
    return k_dir(clusters_dir, k) / "assign" / set_name / f"{split}.npy"


class Clusters:
    """Reader of the clusters stage: ``.ks``, ``.assign(k, set, split)``, ``.histogram(...)``."""

    def __init__(self, clusters_dir: str | Path):
        self.dir = Path(clusters_dir)
        if not self.dir.is_dir():
            raise SpeclmError(f"no clusters in {self.dir}: run `speclm clusters` (or `speclm run`) first")
        self._cache: dict[tuple, np.ndarray] = {}

    @property
    def ks(self) -> list[int]:
        out = []
        for p in self.dir.glob("k*"):
            if p.name[1:].isdigit() and (p / "meta.json").exists() and (p / "centroids.npy").exists():
                out.append(int(p.name[1:]))
        return sorted(out)

    def _check_k(self, k: int) -> None:
        if int(k) not in self.ks:
            raise SpeclmError(
                f"no clustering with k={k} in {self.dir} (have k={', '.join(map(str, self.ks)) or 'none'}); "
                "add it to clusters.ks and run `speclm clusters`"
            )

    def meta(self, k: int) -> dict:
        self._check_k(k)
        return json.loads((k_dir(self.dir, k) / "meta.json").read_text(encoding="utf-8"))

    def centroids(self, k: int) -> np.ndarray:
        self._check_k(k)
        return atomic.load_npy(k_dir(self.dir, k) / "centroids.npy")

    def assign(self, k: int, set_name: str, split: str) -> np.ndarray:
        """int32 [n_windows]: the cluster of each window of (set, split) at this k."""
        key = (int(k), set_name, split)
        if key not in self._cache:
            self._check_k(k)
            path = assign_path(self.dir, k, set_name, split)
            if not path.exists():
                raise SpeclmError(f"{set_name}/{split} was not clustered at k={k} ({path} is missing); run `speclm clusters`")
            self._cache[key] = atomic.load_npy(path)
        return self._cache[key]

    def histogram(self, k: int, set_name: str, split: str = "train") -> np.ndarray:
        """float64 [k]: the share of (set, split)'s windows in each cluster (sums to 1)."""
        a = self.assign(k, set_name, split)
        if len(a) == 0:
            raise SpeclmError(f"{set_name}/{split} has no windows, so it has no cluster histogram")
        return histogram_of(a, k)


def histogram_of(assign: np.ndarray, k: int) -> np.ndarray:
    """Cluster probabilities of a set of windows (``assign``: their cluster ids)."""
    assign = np.asarray(assign, dtype=np.int64)
    if len(assign) == 0:
        raise SpeclmError("cannot build a cluster histogram from no windows")
    if assign.min() < 0 or assign.max() >= k:
        raise SpeclmError(f"cluster ids outside [0, {k}) in the assignments; the clustering does not have k={k}")
    return np.bincount(assign, minlength=int(k)).astype(np.float64) / len(assign)
