"""The numbers a report stands on: macro averages with intervals and paired differences
between methods. One computation serves ``results.md``, ``report.md`` and the plots.

A macro estimate of method m at a size (the paper's macro average: the mean over domains of
the per-token NLL) has two sources of error, added in quadrature:

- **test documents**: a bootstrap over each domain's test documents, the same documents
  drawn for every method in replicate r (speclm.report.stats), the replicate's macro the
  mean over domains of their replicate r. With several seeds, each window's NLL is first
  averaged over the seeds. Rows written without per-window NLLs fall back to their own
  bootstrap SEs (``nll_se``), combined as if the domains were independent.
- **seeds**: the spread of the per-seed macros (seeds common to every domain), var / n.
  A method run with one seed borrows the seed spread of the reference method (``slm`` when it
  has seeds, else the first method that has), and says so (``Estimate.borrowed``): one seed
  is one draw, and counting it as noise-free would make every difference look decided.

Intervals use Student's t with (fewest test documents in a domain - 1) degrees of freedom:
with 19-20 test documents the 95% interval is 2.09 standard errors, not 1.96. Perplexity
intervals are the NLL interval mapped through exp; tables print ``ppl ± half-width``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .stats import Z95, p_greater, t_quantile

REFERENCE = "slm"  # whose seed spread a single-seed method borrows


@dataclass
class Estimate:
    """A mean per-token NLL and its standard error (0 when the run recorded none)."""

    nll: float
    se: float = 0.0
    n: int = 1  # rows (seeds, or domains for a macro) behind it
    domains: list[str] = field(default_factory=list)
    df: Optional[float] = None  # degrees of freedom of the interval (None: normal)
    seeds: int = 1
    borrowed: Optional[str] = None  # the method whose seed spread this estimate borrows

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    @property
    def q(self) -> float:
        return t_quantile(0.975, self.df)

    @property
    def half_width(self) -> float:
        return (math.exp(self.nll + self.q * self.se) - math.exp(self.nll - self.q * self.se)) / 2

    def text(self, digits: int = 2) -> str:
        mark = "†" if self.borrowed else ""
        return f"{self.ppl:.{digits}f} ± {self.half_width:.{digits}f}{mark}" if self.se > 0 else f"{self.ppl:.{digits}f}"


def row_estimate(rows: list[dict], key: str = "nll", se_key: Optional[str] = None) -> Optional[Estimate]:
    """One (method, domain, size) from its rows (one per seed): the mean of ``key`` (the NLL
    after fine-tuning, or ``pretrained_nll`` before it), with the SE of the mean combining
    the bootstrap SE of each seed (``<key>_se``) and the spread across seeds."""
    se_key = se_key or f"{key}_se"
    use = [r for r in rows if _num(r.get(key))]
    if not use:
        return None
    vals = [float(r[key]) for r in use]
    ses = [float(r.get(se_key) or 0.0) for r in use]
    boot = math.sqrt(sum(s * s for s in ses)) / len(vals)
    seeds = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
    return Estimate(nll=statistics.fmean(vals), se=math.sqrt(boot * boot + seeds * seeds), n=len(vals),
                    df=_df(use), seeds=len(vals))


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _df(rows: list[dict]) -> Optional[float]:
    docs = [int(r["eval_documents"]) for r in rows if isinstance(r.get("eval_documents"), int)]
    return float(min(docs) - 1) if docs and min(docs) > 1 else None


def group(rows: Iterable[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Rows by (method, domain, size): several when the grid ran several seeds."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["method"], r["domain"], r["size"]), []).append(r)
    return out


@dataclass
class Difference:
    """Macro NLL of method a minus method b (negative: a is better), with its SE."""

    a: str
    b: str
    delta: float
    se: float
    paired: bool
    df: Optional[float] = None
    borrowed: tuple = ()

    @property
    def q(self) -> float:
        return t_quantile(0.975, self.df)

    @property
    def significant(self) -> bool:
        return self.se > 0 and abs(self.delta) > self.q * self.se

    @property
    def p_a_better(self) -> float:
        """One-sided p-value for "a has the lower NLL"."""
        return p_greater(-self.delta, self.se, self.df)

    @property
    def p_b_better(self) -> float:
        return p_greater(self.delta, self.se, self.df)

    def within(self, margin: float, level: float = 0.95) -> bool:
        """Equivalence (two one-sided tests): the (2 level - 1) interval lies inside ±margin."""
        q = t_quantile(level, self.df)
        return self.delta - q * self.se > -margin and self.delta + q * self.se < margin

    def not_worse(self, margin: float, level: float = 0.95) -> bool:
        """Non-inferiority of a: its NLL exceeds b's by less than ``margin``, one-sided."""
        return self.delta + t_quantile(level, self.df) * self.se < margin

    def text(self) -> str:
        how = "paired over test documents" if self.paired else "unpaired"
        if self.borrowed:
            how += f"; seed spread borrowed from {REFERENCE} for {', '.join(self.borrowed)}"
        return (f"{self.a} vs {self.b}: NLL difference {self.delta:+.4f} ± {self.q * self.se:.4f} "
                f"(perplexity ratio {math.exp(self.delta):.3f}, {how})")


class Evidence:
    """Macro estimates and differences of one run's rows, computed one way everywhere.

    ``groups``: rows by (method, domain, size); ``run_path``: where rows keep their per-window
    NLLs (``windows``), so differences are paired and macro replicates drawn jointly;
    ``replicates``: bootstrap replicates."""

    def __init__(self, groups: dict, domains: list[str], run_path=None, replicates: int = 1000,
                 reference: str = REFERENCE):
        self.groups, self.domains, self.run_path = groups, list(domains), run_path
        self.replicates, self.reference = max(2, int(replicates or 0)), reference
        self._reps: dict = {}
        self._windows: dict = {}

    # -- seeds ----------------------------------------------------------------------------

    def seed_macros(self, method: str, size: str, key: str = "nll") -> list[float]:
        """The macro of each seed that every domain has."""
        per = []
        for d in self.domains:
            rows = self.groups.get((method, d, size), [])
            per.append({int(r.get("seed", 0)): float(r[key]) for r in rows if _num(r.get(key))})
        if not per or any(not p for p in per):
            return []
        common = sorted(set.intersection(*(set(p) for p in per)))
        return [statistics.fmean(p[s] for p in per) for s in common]

    def seed_var(self, method: str, size: str, key: str = "nll") -> tuple[float, int, Optional[str]]:
        """(variance of one seed's macro, seeds behind the estimate, method it was borrowed from)."""
        own = self.seed_macros(method, size, key)
        if len(own) >= 2:
            return statistics.variance(own), len(own), None
        donors = [self.reference] + sorted({m for m, _, _ in self.groups} - {self.reference})
        for m in donors:
            xs = self.seed_macros(m, size, key)
            if len(xs) >= 2:
                return statistics.variance(xs), max(1, len(own)), m
        return 0.0, max(1, len(own)), None

    # -- test documents -------------------------------------------------------------------

    def _row_windows(self, row: dict):
        from .stats import row_windows

        key = row.get("windows")
        if key not in self._windows:
            try:
                self._windows[key] = row_windows(self.run_path, row) if self.run_path is not None else None
            except Exception:  # noqa: BLE001 - a missing or damaged file: fall back to the row's own SE
                self._windows[key] = None
        return self._windows[key]

    def replicates_of(self, method: str, size: str):
        """float64 [B]: the macro NLL of each bootstrap replicate (seed-averaged windows,
        the same documents for every method in replicate r); None without window files."""
        import numpy as np

        from .stats import per_document, replicate_means

        k = (method, size)
        if k in self._reps:
            return self._reps[k]
        out = None
        if self.run_path is not None:
            reps = []
            for d in self.domains:
                rows = self.groups.get((method, d, size), [])
                ws = [self._row_windows(r) for r in rows]
                if not ws or any(w is None for w in ws) or any(w.shape != ws[0].shape for w in ws):
                    reps = None
                    break
                w = ws[0].copy()
                w[:, 3] = np.mean([x[:, 3] for x in ws], axis=0)
                _, dn, dt = per_document(w[:, 1], w[:, 3], w[:, 2])
                try:
                    reps.append(replicate_means(dn, dt, self.replicates, d))
                except Exception:  # noqa: BLE001 - fewer than 2 documents: no bootstrap
                    reps = None
                    break
            if reps:
                out = np.mean(np.stack(reps), axis=0)
        self._reps[k] = out
        return out

    # -- estimates ------------------------------------------------------------------------

    def macro_domain(self, method: str, domain: str, size: str, key: str = "nll") -> Optional[float]:
        """One domain's NLL of ``method``, the mean over its seeds (None without rows)."""
        e = row_estimate(self.groups.get((method, domain, size), []), key)
        return e.nll if e else None

    def macro(self, method: str, size: str, key: str = "nll") -> Optional[Estimate]:
        ests = [row_estimate(self.groups.get((method, d, size), []), key) for d in self.domains]
        if not self.domains or any(e is None for e in ests):
            return None
        rows = [r for d in self.domains for r in self.groups.get((method, d, size), [])]
        nll = statistics.fmean(e.nll for e in ests)
        reps = self.replicates_of(method, size) if key == "nll" else None
        if reps is not None:
            boot = float(reps.std(ddof=1))
        else:  # per-row SEs, domains as independent
            boot = math.sqrt(sum(_boot_se(self.groups.get((method, d, size), []), key) ** 2
                                 for d in self.domains)) / len(self.domains)
        var, n, borrowed = self.seed_var(method, size, key)
        se = math.sqrt(boot * boot + var / n)
        return Estimate(nll=nll, se=se, n=len(ests), domains=list(self.domains), df=_df(rows), seeds=n,
                        borrowed=borrowed)

    def difference(self, a: str, b: str, size: str) -> Optional[Difference]:
        ea, eb = self.macro(a, size), self.macro(b, size)
        if ea is None or eb is None:
            return None
        ra, rb = self.replicates_of(a, size), self.replicates_of(b, size)
        paired = ra is not None and rb is not None
        if paired:
            boot = float((ra - rb).std(ddof=1))
        else:
            boot = math.sqrt(sum(_boot_se(self.groups.get((m, d, size), []), "nll") ** 2
                                 for m in (a, b) for d in self.domains)) / len(self.domains)
        va, na, ba = self.seed_var(a, size)
        vb, nb, bb = self.seed_var(b, size)
        se = math.sqrt(boot * boot + va / na + vb / nb)
        rows = [r for m in (a, b) for d in self.domains for r in self.groups.get((m, d, size), [])]
        borrowed = tuple(m for m, x in ((a, ba), (b, bb)) if x)
        return Difference(a, b, ea.nll - eb.nll, se, paired, _df(rows), borrowed)


def _boot_se(rows: list[dict], key: str) -> float:
    """The bootstrap part of one domain's SE: each seed's ``<key>_se``, averaged as a mean."""
    use = [r for r in rows if _num(r.get(key))]
    if not use:
        return 0.0
    return math.sqrt(sum(float(r.get(f"{key}_se") or 0.0) ** 2 for r in use)) / len(use)


def macro(groups: dict, method: str, size: str, domains: list[str], key: str = "nll",
          run_path=None, replicates: int = 1000) -> Optional[Estimate]:
    """The macro estimate of ``method`` at ``size`` (None unless every domain has it)."""
    return Evidence(groups, domains, run_path, replicates).macro(method, size, key)


def difference(groups: dict, a: str, b: str, size: str, domains: list[str],
               run_path=None, replicates: int = 1000) -> Optional[Difference]:
    """Macro difference of a and b over ``domains`` at ``size`` (None unless both have them
    all): paired over test documents when every row kept its per-window NLLs."""
    return Evidence(groups, domains, run_path, replicates).difference(a, b, size)


def sizes_in(rows: Iterable[dict]) -> list[str]:
    from ..methods.sizes import parse_size

    return sorted({r["size"] for r in rows}, key=lambda s: parse_size(s) or math.inf)


__all__ = ["Z95", "Estimate", "Difference", "Evidence", "row_estimate", "group", "macro", "difference", "sizes_in"]
