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


# --- tests: t quantiles, one-sided p-values, Holm's correction, permutation tests ---------


def t_quantile(q: float, df: Optional[float]) -> float:
    """Student's t quantile (the normal one when ``df`` is None or large): the interval a
    handful of test documents supports is wider than 1.96 standard errors."""
    from scipy.stats import norm, t

    if df is None or df >= 1e6:
        return float(norm.ppf(q))
    return float(t.ppf(q, max(1.0, float(df))))


def p_greater(delta: float, se: float, df: Optional[float]) -> float:
    """One-sided p-value of "the true difference is > 0" being false, i.e. P(T >= delta/se)
    under a zero difference: small when ``delta`` is positive beyond its interval."""
    from scipy.stats import norm, t

    if se <= 0:
        return 0.0 if delta > 0 else 1.0
    z = delta / se
    return float(norm.sf(z) if df is None else t.sf(z, max(1.0, float(df))))


def holm(pvalues: list[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down correction: which of the hypotheses are rejected at family-wise level
    ``alpha`` (sorted p-values compared with alpha / (m - i); stops at the first failure)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    rejected = [False] * m
    for rank, i in enumerate(order):
        if pvalues[i] <= alpha / (m - rank):
            rejected[i] = True
        else:
            break
    return rejected


def holm_adjusted(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (monotone, capped at 1): reject where adjusted <= alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def ranks(v: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions)."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman_rho(xs: list[float], ys: list[float]) -> float:
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else 0.0


def spearman_permutation(xs: list[float], ys: list[float], resamples: int = 20000, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """(rho, one-sided p-value of rho >= observed): exact over all orderings up to 8
    points, else ``resamples`` random permutations. With 3 points the smallest attainable
    p is 1/6, so nothing can be significant at 5%."""
    import itertools

    rho = spearman_rho(xs, ys)
    n = len(xs)
    if n <= 8:
        perms = list(itertools.permutations(ys))
        hits = sum(spearman_rho(xs, list(p)) >= rho - 1e-12 for p in perms)
        return rho, hits / len(perms)
    rng = np.random.default_rng(seed)
    ys_arr = np.asarray(ys, dtype=np.float64)
    hits = sum(spearman_rho(xs, list(rng.permutation(ys_arr))) >= rho - 1e-12 for _ in range(resamples))
    return rho, (hits + 1) / (resamples + 1)
