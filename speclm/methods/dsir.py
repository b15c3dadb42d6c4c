"""DSIR importance weights of the generic windows for a domain (Xie et al. 2023, PyPI
``data-selection``): hashed unigram+bigram bag-of-words models of the domain and of the
generic set; a window's log weight is the log-likelihood ratio of its hashed n-grams.

The texts are the windows' own decoded text (what the model trains on), so a weight is
per training window, like SLM-is's cluster weights.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import SpeclmError


def _texts(windows, desc: str):
    for i in tqdm(range(len(windows)), desc=desc, leave=False, mininterval=2.0):
        yield {"text": windows.text(i)}


def log_weights(generic, domain, ngrams: int, buckets: int, work_dir: Path) -> tuple[np.ndarray, dict]:
    """Log importance weight of every generic window (float64 [n]) and timings."""
    try:
        from data_selection import HashedNgramDSIR
    except ImportError:  # pragma: no cover - the package is a declared extra
        raise SpeclmError("slm-dsir needs the data-selection package: pip install 'speclm[selection]'") from None
    if ngrams <= 0 or buckets <= 0:
        raise SpeclmError(f"methods.dsir_ngrams and methods.dsir_buckets must be positive, got {ngrams}, {buckets}")
    sets = {"generic": generic, "domain": domain}
    work_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix=".dsir.", dir=work_dir))
    try:
        t0 = time.perf_counter()
        dsir = HashedNgramDSIR(
            raw_datasets=["generic"],
            target_datasets=["domain"],
            cache_dir=str(cache),
            raw_load_dataset_fn=lambda name: _texts(sets[name], f"dsir {name}"),
            target_load_dataset_fn=lambda name: _texts(sets[name], f"dsir {name}"),
            num_proc=1,
            ngrams=ngrams,
            num_buckets=buckets,
            min_example_length=0,  # windows all have the same token length
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        t_fit = time.perf_counter() - t0
        dsir.compute_importance_weights()
        lw = np.load(cache / "log_importance_weights" / "0.npy", allow_pickle=False).astype(np.float64)
        t_all = time.perf_counter() - t0
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if len(lw) != len(generic):
        raise SpeclmError(f"DSIR returned {len(lw)} weights for {len(generic)} generic windows")
    return lw, {"fit_seconds": t_fit, "seconds": t_all}


def resample(lw: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """DSIR's importance resampling: ``draws`` windows without replacement by Gumbel top-k
    when the generic set holds that many, else with replacement by the weights."""
    n = len(lw)
    if draws <= n:
        keys = lw + rng.gumbel(size=n)
        return np.sort(np.argpartition(-keys, draws - 1)[:draws]).astype(np.int64)
    p = np.exp(lw - lw.max())
    return rng.choice(n, size=draws, p=p / p.sum()).astype(np.int64)


def probs(lw: np.ndarray) -> np.ndarray:
    p = np.exp(lw - lw.max())
    return p / p.sum()
