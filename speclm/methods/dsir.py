"""DSIR importance weights of generic windows for a domain (Xie et al. 2023; PyPI
``data-selection``).

Features are the package's own hashed n-gram counts (``get_ngram_counts``: word-punct
tokens, unigrams + bigrams for ngrams=2, hashed into ``buckets``) of each window's decoded
text; the importance estimator is the package's: ``log_diff = log(p_domain + 1e-8) -
log(p_generic + 1e-8)`` over buckets, and a window's log weight is ``counts . log_diff``.

The package's ``HashedNgramDSIR`` re-featurizes the whole generic set twice per domain
(fit, then weights); featurizing is the slow part (a sha256 per n-gram in Python), so here
the generic candidate pool is featurized once per run and cached
(``pretrain/slm-dsir/generic-pool/``), and each domain only featurizes its own windows.
``methods.dsir_pool`` caps the pool (a seeded sample of generic train windows; 0 = all).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from ..core.progress import track

from ..core import atomic
from ..core.errors import SpeclmError


def _featurizer(ngrams: int, buckets: int):
    try:
        from data_selection.hashed_ngram_dsir import get_ngram_counts, wpt
    except ImportError:  # pragma: no cover - a declared dependency
        raise SpeclmError("slm-dsir needs the data-selection package: pip install 'speclm[selection]'") from None
    if ngrams <= 0 or buckets <= 0:
        raise SpeclmError(f"methods.dsir_ngrams and methods.dsir_buckets must be positive, got {ngrams}, {buckets}")
    return lambda text: get_ngram_counts(text, n=ngrams, num_buckets=buckets, tokenizer=wpt.tokenize)


def featurize(windows, idx: np.ndarray, ngrams: int, buckets: int, desc: str = "dsir features"):
    """Sparse hashed n-gram counts [len(idx), buckets] (scipy CSR, float32) of windows' text."""
    from scipy import sparse

    feat = _featurizer(ngrams, buckets)
    data, cols, indptr = [], [], [0]
    for i in track(np.asarray(idx, dtype=np.int64), desc=desc, unit="win", leave=False, mininterval=2.0):
        counts = feat(windows.text(int(i)))
        nz = np.nonzero(counts)[0]
        cols.append(nz.astype(np.int32))
        data.append(counts[nz].astype(np.float32))
        indptr.append(indptr[-1] + len(nz))
    return sparse.csr_matrix(
        (np.concatenate(data) if data else np.zeros(0, np.float32),
         np.concatenate(cols) if cols else np.zeros(0, np.int32),
         np.asarray(indptr, dtype=np.int64)),
        shape=(len(indptr) - 1, buckets),
    )


def pool_indices(n_windows: int, pool: int, seed: int) -> np.ndarray:
    if pool <= 0 or pool >= n_windows:
        return np.arange(n_windows, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, 0xD51]).choice(n_windows, size=pool, replace=False)).astype(np.int64)


def generic_pool(cache_dir: Path, windows, key: dict, pool: int, seed: int, ngrams: int, buckets: int):
    """(pool indices, CSR features) of the generic candidate pool, computed once and cached."""
    from scipy import sparse

    cache_dir = Path(cache_dir)
    meta_path = cache_dir / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            meta = {}
        if meta.get("key") == key:
            load = lambda name: np.load(cache_dir / f"{name}.npy", allow_pickle=False)  # noqa: E731
            feats = sparse.csr_matrix((load("data"), load("indices"), load("indptr")), shape=tuple(meta["shape"]))
            return load("pool"), feats, meta["seconds"]
    t0 = time.perf_counter()
    idx = pool_indices(len(windows), pool, seed)
    feats = featurize(windows, idx, ngrams, buckets, desc="dsir generic pool")
    seconds = time.perf_counter() - t0
    for name, arr in (("pool", idx), ("data", feats.data), ("indices", feats.indices), ("indptr", feats.indptr)):
        atomic.save_npy(cache_dir / f"{name}.npy", arr)
    atomic.write_json(meta_path, {"key": key, "shape": list(feats.shape), "seconds": seconds})  # last
    return idx, feats, seconds


def log_weights(generic_feats, domain_feats) -> np.ndarray:
    """The package's estimator: counts . (log p_domain - log p_generic) over hashed n-grams."""
    raw = np.asarray(generic_feats.sum(axis=0), dtype=np.float64).ravel()
    target = np.asarray(domain_feats.sum(axis=0), dtype=np.float64).ravel()
    if raw.sum() <= 0 or target.sum() <= 0:
        raise SpeclmError("DSIR: no n-gram in the generic pool or in the domain windows")
    log_diff = np.log(target / target.sum() + 1e-8) - np.log(raw / raw.sum() + 1e-8)
    return np.asarray(generic_feats @ log_diff, dtype=np.float64).ravel()


def resample(lw: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """DSIR's importance resampling: ``draws`` windows without replacement by Gumbel top-k
    when the pool holds that many, else with replacement by the weights (positions in lw)."""
    n = len(lw)
    if draws <= n:
        keys = lw + rng.gumbel(size=n)
        return np.sort(np.argpartition(-keys, draws - 1)[:draws]).astype(np.int64)
    return rng.choice(n, size=draws, p=probs(lw)).astype(np.int64)


def probs(lw: np.ndarray) -> np.ndarray:
    p = np.exp(lw - lw.max())
    return p / p.sum()
