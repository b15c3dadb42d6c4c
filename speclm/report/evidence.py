"""The numbers a report stands on: macro averages with intervals, paired differences
between methods, and what the run's size allows one to conclude.

Every function here reads grid rows (``eval/<name>.jsonl``) and nothing else, so each number
in the report can be traced to the results file. A row's interval comes from ``nll_se``
(bootstrap over test documents) when the grid recorded it; rows of several seeds for one
(method, domain, size) are averaged, and their spread across seeds is added to the error.

Intervals are 95% (1.96 standard errors) on the mean per-token NLL, mapped to perplexity:
``ppl = exp(nll)``, ``[exp(nll - 1.96 se), exp(nll + 1.96 se)]``; the report prints
``ppl ± half-width`` with the half-width of that interval.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Optional

Z95 = 1.96


@dataclass
class Estimate:
    """A mean per-token NLL and its standard error (0 when the run recorded none)."""

    nll: float
    se: float = 0.0
    n: int = 1  # rows (seeds, or domains for a macro) behind it
    domains: list[str] = field(default_factory=list)

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    @property
    def half_width(self) -> float:
        return (math.exp(self.nll + Z95 * self.se) - math.exp(self.nll - Z95 * self.se)) / 2

    def text(self, digits: int = 2) -> str:
        return f"{self.ppl:.{digits}f} ± {self.half_width:.{digits}f}" if self.se > 0 else f"{self.ppl:.{digits}f}"


def row_estimate(rows: list[dict], key: str = "nll", se_key: Optional[str] = None) -> Optional[Estimate]:
    """One (method, domain, size) from its rows (one per seed): the mean of ``key`` (the NLL
    after fine-tuning, or ``pretrained_nll`` before it), with the SE of the mean combining
    the bootstrap SE of each seed (``<key>_se``) and the spread across seeds."""
    se_key = se_key or f"{key}_se"
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    if not vals:
        return None
    ses = [float(r.get(se_key) or 0.0) for r in rows if r.get(key) is not None]
    boot = math.sqrt(sum(s * s for s in ses)) / len(vals)
    seeds = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
    return Estimate(nll=statistics.fmean(vals), se=math.sqrt(boot * boot + seeds * seeds), n=len(vals))


def group(rows: Iterable[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Rows by (method, domain, size): several when the grid ran several seeds."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["method"], r["domain"], r["size"]), []).append(r)
    return out


def macro(groups: dict, method: str, size: str, domains: list[str], key: str = "nll") -> Optional[Estimate]:
    """The paper's macro average over ``domains`` (mean of per-domain NLLs; domains are
    independent test sets, so their SEs add in quadrature); None unless every domain has it."""
    ests = [row_estimate(groups.get((method, d, size), []), key) for d in domains]
    if not domains or any(e is None for e in ests):
        return None
    nll = statistics.fmean(e.nll for e in ests)
    se = math.sqrt(sum(e.se ** 2 for e in ests)) / len(ests)
    return Estimate(nll=nll, se=se, n=len(ests), domains=list(domains))


@dataclass
class Difference:
    """Macro NLL of method a minus method b (negative: a is better), with its SE."""

    a: str
    b: str
    delta: float
    se: float
    paired: bool

    @property
    def significant(self) -> bool:
        return self.se > 0 and abs(self.delta) > Z95 * self.se

    def text(self) -> str:
        how = "paired over test documents" if self.paired else "unpaired"
        ratio = math.exp(self.delta)
        return (f"{self.a} vs {self.b}: NLL difference {self.delta:+.4f} ± {Z95 * self.se:.4f} "
                f"(perplexity ratio {ratio:.3f}, {how})")


def difference(groups: dict, a: str, b: str, size: str, domains: list[str],
               run_path=None, replicates: int = 1000) -> Optional[Difference]:
    """Macro difference of a and b over ``domains`` at ``size`` (None unless both have them all).

    Paired when every domain has one row per method with its per-window NLLs on disk
    (``speclm.report.stats.paired_difference``: the same test documents drawn for both in each
    bootstrap replicate); otherwise the two rows' SEs are combined as if independent, which
    overstates the SE (the test documents are the same, so the errors correlate)."""

    diffs, ses, paired = [], [], run_path is not None
    for d in domains:
        ra, rb = groups.get((a, d, size), []), groups.get((b, d, size), [])
        ea, eb = row_estimate(ra), row_estimate(rb)
        if ea is None or eb is None:
            return None
        pd = _paired(ra, rb, run_path, replicates) if paired else None
        if pd is not None:
            diffs.append(pd["nll_diff"])
            ses.append(pd["se"])
        else:
            paired = False
            diffs.append(ea.nll - eb.nll)
            ses.append(math.sqrt(ea.se ** 2 + eb.se ** 2))
    if not diffs:
        return None
    return Difference(a, b, statistics.fmean(diffs), math.sqrt(sum(s * s for s in ses)) / len(ses), paired=paired)


def _paired(ra: list[dict], rb: list[dict], run_path, replicates: int) -> Optional[dict]:
    """Paired difference of two methods' rows on one domain: each method's per-window NLLs
    averaged over its seeds, then :func:`speclm.report.stats.paired_difference` (the same test
    documents drawn for both). The spread across seeds of a method with several seeds adds
    var/n to the SE. None when a row kept no per-window NLLs."""
    import numpy as np

    from ..core.errors import SpeclmError
    from .stats import paired_difference, row_windows

    def merged(rows: list[dict]):
        ws = [row_windows(run_path, r) for r in rows]
        if any(w is None for w in ws) or any(w.shape != ws[0].shape for w in ws):
            return None
        w = ws[0].copy()
        w[:, 3] = np.mean([x[:, 3] for x in ws], axis=0)
        return w

    try:
        wa, wb = merged(ra), merged(rb)
        if wa is None or wb is None:
            return None
        pd = paired_difference(ra[0], rb[0], run_path, replicates, windows=(wa, wb))
    except (SpeclmError, OSError, KeyError, ValueError):
        return None
    extra = sum(statistics.variance([r["nll"] for r in rs]) / len(rs) for rs in (ra, rb) if len(rs) > 1)
    return {**pd, "se": math.sqrt(pd["se"] ** 2 + extra)}


def sizes_in(rows: Iterable[dict]) -> list[str]:
    from ..methods.sizes import parse_size

    return sorted({r["size"] for r in rows}, key=lambda s: parse_size(s) or math.inf)


def evidence_checks(rows: list[dict], pretrain_tokens: Optional[float], spec_tokens: dict[str, int]) -> dict:
    """What decides whether the run can separate the methods at all (the report's first line):
    pretraining far larger than the specialization set, fine-tunes that stopped inside their
    cap, intervals beside the numbers, more than one seed."""
    stops: dict[str, int] = {}
    for r in rows:
        s = r.get("stop") or (r.get("extra") or {}).get("stop")
        stops[s or "unrecorded"] = stops.get(s or "unrecorded", 0) + 1
    largest = max(spec_tokens.values()) if spec_tokens else None
    ratio = (pretrain_tokens / largest) if pretrain_tokens and largest else None
    with_se = sum(1 for r in rows if (r.get("nll_se") or 0) > 0)
    seeds = {r.get("seed", 0) for r in rows}
    problems = []
    if ratio is not None and ratio < 100:
        problems.append(f"pretraining is only {ratio:.1f}x the largest specialization set (want >= 100x)")
    if rows and stops.get("cap", 0) > len(rows) / 2:
        problems.append(f"{stops['cap']} of {len(rows)} fine-tunes hit their step cap instead of stopping early")
    if rows and with_se < len(rows):
        problems.append(f"{len(rows) - with_se} of {len(rows)} rows carry no interval (nll_se)")
    return {"pretrain_tokens": pretrain_tokens, "largest_spec_tokens": largest, "pretrain_to_spec": ratio,
            "stops": stops, "rows_with_interval": with_se, "rows": len(rows), "seeds": len(seeds), "problems": problems}
