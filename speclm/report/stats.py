"""Error bars of the grid: a bootstrap over test documents, per row, per macro average, and
for paired differences between two rows on the same test windows.

Windows of one document are correlated (they share topic, style, names), so the unit that
is resampled is the document: the per-window NLL sums and token counts are added up per
document, documents are drawn with replacement ``B`` times, and each replicate's mean
per-token NLL is sum(NLL) / sum(tokens) over the drawn documents. The standard error is the
standard deviation of the replicate means.

The replicates of a domain depend only on its documents and on :data:`BOOTSTRAP_SEED` and
the domain's name, so every method evaluated on the same test windows draws the same
documents in replicate ``r``: the macro average's replicate ``r`` is the mean over domains
of their replicate ``r`` (domains resampled independently), and a paired difference is the
difference of two rows' replicates.

Perplexity interval: ``[exp(nll - 1.96 SE), exp(nll + 1.96 SE)]`` (the normal interval in
log space, mapped); tables print ``ppl ± h`` with ``h`` half that interval's width.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from ..core import atomic
from ..core.errors import SpeclmError

BOOTSTRAP_SEED = 0x5EED
Z95 = 1.959963984540054
WINDOWS_FILE = "eval-test-windows.npy"  # float64 [n, 4]: window index, document index, tokens, summed NLL


def per_document(docs: np.ndarray, nll_sums: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document ids, summed NLL per document, tokens per document), documents sorted."""
    docs = np.asarray(docs, dtype=np.int64)
    ids, inv = np.unique(docs, return_inverse=True)
    nll = np.bincount(inv, weights=np.asarray(nll_sums, dtype=np.float64), minlength=len(ids))
    tok = np.bincount(inv, weights=np.asarray(tokens, dtype=np.float64), minlength=len(ids))
    return ids, nll, tok


def replicate_draws(n_docs: int, replicates: int, domain: str, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """int32 [replicates, n_docs]: how often each document is drawn in each replicate."""
    if replicates < 2:
        raise SpeclmError(f"methods.bootstrap must be at least 2 replicates, got {replicates}")
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode("utf-8"))])
    return rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=replicates).astype(np.int32)


def replicate_means(doc_nll: np.ndarray, doc_tok: np.ndarray, replicates: int, domain: str) -> np.ndarray:
    """float64 [replicates]: mean per-token NLL of each bootstrap replicate of the documents."""
    n = len(doc_nll)
    if n < 2:
        raise SpeclmError(f"{domain}: the test split has {n} document(s); a bootstrap over documents needs at least 2")
    counts = replicate_draws(n, replicates, domain)
    return (counts @ np.asarray(doc_nll, np.float64)) / (counts @ np.asarray(doc_tok, np.float64))


def bootstrap_se(docs, nll_sums, tokens, replicates: int, domain: str) -> float:
    """Bootstrap standard error over documents of the mean per-token NLL."""
    _, dn, dt = per_document(docs, nll_sums, tokens)
    return float(np.std(replicate_means(dn, dt, replicates, domain), ddof=1))


def ppl_interval(nll: float, se: float) -> tuple[float, float, float]:
    """(low, high, half-width) of the 95% perplexity interval mapped from log space."""
    lo, hi = math.exp(nll - Z95 * se), math.exp(nll + Z95 * se)
    return lo, hi, (hi - lo) / 2


def save_windows(path: Path, window_idx, docs, tokens, nll_sums) -> None:
    arr = np.stack([np.asarray(a, dtype=np.float64) for a in (window_idx, docs, tokens, nll_sums)], axis=1)
    atomic.save_npy(path, arr)


def load_windows(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise SpeclmError(f"{path}: expected per-window NLLs [n, 4], got shape {arr.shape}")
    return arr


def row_windows(run_path: Path, row: dict) -> Optional[np.ndarray]:
    """The per-window NLLs a grid row kept on disk (None for rows written before they were kept)."""
    rel = row.get("windows")
    if not rel:
        return None
    p = Path(run_path) / rel
    return load_windows(p) if p.exists() else None


def row_replicates(run_path: Path, row: dict, replicates: int) -> Optional[np.ndarray]:
    w = row_windows(run_path, row)
    if w is None:
        return None
    _, dn, dt = per_document(w[:, 1], w[:, 3], w[:, 2])
    return replicate_means(dn, dt, replicates, row["domain"])


def macro_se(run_path: Path, rows: list[dict], replicates: int) -> Optional[float]:
    """SE of the macro mean NLL: each domain bootstrapped on its own, replicate r averaged
    over the domains (the same r everywhere). None when a row has no per-window file."""
    reps = [row_replicates(run_path, r, replicates) for r in rows]
    if not reps or any(x is None for x in reps):
        return None
    return float(np.std(np.mean(np.stack(reps), axis=0), ddof=1))


def paired_difference(row_a: dict, row_b: dict, run_path: Path, replicates: int = 1000,
                      windows: Optional[tuple] = None) -> dict:
    """Mean per-token NLL of row_a minus row_b on the same test windows, with a bootstrap SE
    over documents (the same documents drawn for both rows in each replicate). ``windows``:
    the two rows' per-window arrays when the caller has them (e.g. averaged over seeds)."""
    wa, wb = windows if windows is not None else (row_windows(run_path, row_a), row_windows(run_path, row_b))
    if wa is None or wb is None:
        raise SpeclmError("paired difference: a row has no per-window NLLs on disk (rerun its grid row)")
    if row_a["domain"] != row_b["domain"] or wa.shape != wb.shape or not np.array_equal(wa[:, :3], wb[:, :3]):
        raise SpeclmError("paired difference: the two rows were not evaluated on the same test windows")
    ids, na, tok = per_document(wa[:, 1], wa[:, 3], wa[:, 2])
    _, nb, _ = per_document(wb[:, 1], wb[:, 3], wb[:, 2])
    if len(ids) < 2:
        raise SpeclmError(f"{row_a['domain']}: the test split has {len(ids)} document(s); a bootstrap needs at least 2")
    counts = replicate_draws(len(ids), replicates, row_a["domain"])
    ct = counts @ tok
    diff = (counts @ na) / ct - (counts @ nb) / ct
    mean = float(na.sum() / tok.sum() - nb.sum() / tok.sum())
    se = float(np.std(diff, ddof=1))
    return {"domain": row_a["domain"], "a": row_a["method"], "b": row_b["method"], "nll_diff": mean, "se": se,
            "z": mean / se if se > 0 else math.inf, "documents": int(len(ids))}
