"""Which recipe fits the user's budgets: the paper's Figure 1, from the user's own grid.

The grid (``speclm grid``) measured, for every method at every specialization size, the
macro perplexity over the grid's domains, the generic (shared) cost and the cost per
domain. Serving N domains costs (docs/paper.md §1, Eq. 1)

    C_total(N) = C_generic + N * C_spec

with C_generic the largest generic cost among the method's rows (pretraining paid once)
and C_spec the mean specialization cost per domain. A method is *admissible* when its
macro covers every domain of the grid, its specialized model is small when the user needs
a small one (``inference="small"``), C_total(N) <= budget when a budget is given, and it is
no ablation (speclm.core.sections.ABLATIONS: slm-is-full is listed, with its costs, but never
recommended: it measures what budget does to slm-is, and is not one of the paper's recipes).
The recommendation is the admissible method with the lowest macro perplexity; the picture
``plan.png`` colors each (N, budget) cell by that recommendation (the data-driven
Figure 1, docs/paper.md §8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core.errors import SpeclmError
from .results import grid_rows, macro_rows, order_methods

INFERENCE = ("small", "any")
COSTS = ("flops", "device_hours")
COST_UNIT = {"flops": "FLOPs", "device_hours": "device-hours"}
N_RANGE = (1, 1000)  # the picture's x axis


@dataclass
class PlanRow:
    """One method at one size, seen from a user who must serve ``n_domains`` domains."""

    method: str
    ppl: float
    generic: float  # C_generic (paid once)
    spec: float  # C_spec (per domain)
    total: float  # C_total(N)
    small: bool  # the specialized model is the small shape
    shared: bool  # pretraining shared by every domain
    domains_done: int
    domains_total: int
    admissible: bool
    why_not: str  # "" when admissible
    share: float = 1.0  # of the method's full pretraining: < 1 for a snapshot of eval/curves.jsonl
    ablation: bool = False  # an ablation (speclm.core.sections.ABLATIONS): shown, never recommended

    @property
    def label(self) -> str:
        """The method, or ``method@share`` for a partly pretrained snapshot."""
        return self.method if self.share >= 1 else f"{self.method}@{self.share:g}"

    @property
    def complete(self) -> bool:
        return self.domains_done == self.domains_total

    def total_at(self, n: float) -> float:
        return self.generic + n * self.spec


@dataclass
class Recommendation:
    method: str
    ppl: float
    reason: str  # one line, in the paper's terms
    crossover: Optional[str]  # "beyond N~X domains, Y becomes cheaper than Z", or None
    switch: Optional[str]  # with a budget: from which N on the recommendation changes, or None
    rows: list[PlanRow]
    share: float = 1.0  # the chosen point's share of its full pretraining (< 1: a snapshot of eval/curves.jsonl)


def check_inputs(n_domains: int, inference: str, budget: Optional[float], cost: str) -> None:
    if inference not in INFERENCE:
        raise SpeclmError(f"unknown --inference {inference!r}; use one of: {', '.join(INFERENCE)}")
    if cost not in COSTS:
        raise SpeclmError(f"unknown --cost {cost!r}; use one of: {', '.join(COSTS)}")
    if not isinstance(n_domains, int) or n_domains < 1:
        raise SpeclmError(f"--n-domains must be a whole number >= 1, got {n_domains!r}")
    if budget is not None and not (budget > 0 and math.isfinite(budget)):
        raise SpeclmError(f"--budget must be a positive number, got {budget!r}")


def sizes_of(rows: list[dict]) -> list[str]:
    from ..methods.sizes import parse_size

    return sorted({r["size"] for r in rows}, key=lambda s: parse_size(s) or math.inf)


def default_size(rows: list[dict]) -> str:
    """The largest size every method of the grid has (what the grid's cost panel shows)."""
    from .plots import cost_size

    return cost_size(rows, list(dict.fromkeys(x["method"] for x in rows)), sizes_of(rows))


def resolve_size(rows: list[dict], size: str) -> str:
    """The grid's label for ``size`` ("64000" -> "64k"), or a one-line error listing the sizes present."""
    from ..methods.sizes import size_label

    present = sizes_of(rows)
    label = size_label(size)
    if label not in present:
        raise SpeclmError(f"size {size} is not in the grid; sizes present: {', '.join(present) or '(none)'}")
    return label


def plan_rows(
    rows: list[dict],
    size: str,
    n_domains: int,
    inference: str = "small",
    budget: Optional[float] = None,
    cost: str = "flops",
    curves: Optional[list[dict]] = None,
) -> list[PlanRow]:
    """Every method present at ``size`` with its C_total(n_domains) and whether it is
    admissible: admissible ones first by macro perplexity, then the others (by perplexity)
    with the reason they are excluded. ``curves`` (rows of ``eval/curves.jsonl``): each
    partly pretrained snapshot (``pretrain_fraction`` < 1) of a method at ``size`` is a
    candidate too, with its own generic cost."""
    check_inputs(n_domains, inference, budget, cost)
    label = resolve_size(rows, size)
    domains = sorted({r["domain"] for r in rows})
    at = [r for r in rows if r["size"] == label]
    out = [_plan_row(m, [r for r in at if r["method"] == m], domains, n_domains, inference, budget, cost)
           for m in order_methods(list(dict.fromkeys(r["method"] for r in at)))]
    snaps: dict[tuple[str, float], list[dict]] = {}
    for r in curves or []:
        if r["size"] == label and r["domain"] in domains and float(r["pretrain_fraction"]) < 1:
            snaps.setdefault((r["method"], float(r["pretrain_fraction"])), []).append(r)
    order = order_methods(list({m for m, _ in snaps}))
    for (m, f), rs in sorted(snaps.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        out.append(_plan_row(m, rs, domains, n_domains, inference, budget, cost, share=f))
    out.sort(key=lambda p: (not p.admissible, p.ppl))
    return out


def _plan_row(m: str, rs: list[dict], domains: list[str], n_domains: int, inference: str, budget: Optional[float],
              cost: str, share: float = 1.0) -> PlanRow:
    from ..core.sections import ABLATIONS

    generic = max(float(r["cost"]["generic"][cost]) for r in rs)
    spec = sum(float(r["cost"]["specialization"][cost]) for r in rs) / len(rs)
    total = generic + n_domains * spec
    small = all(r.get("small_at_inference", True) for r in rs)
    shared = any(r.get("shared_pretraining", generic > 0) for r in rs)
    mac = macro_rows(rs)[(m, rs[0]["size"])]
    done = len(mac["domains"])
    why = [f"ablation of {ABLATIONS[m]}, not a recipe"] if m in ABLATIONS else []
    if done < len(domains):
        why.append(f"incomplete ({done}/{len(domains)} domains)")
    if inference == "small" and not small:
        why.append("large at inference")
    if budget is not None and total > budget:
        why.append(f"over budget ({format_cost(total, cost)} > {format_cost(budget, cost)})")
    return PlanRow(m, mac["ppl"], generic, spec, total, small, shared, done, len(domains), not why, "; ".join(why), share,
                   m in ABLATIONS)


def format_cost(value: float, cost: str) -> str:
    return f"{value:.3g}" if cost == "device_hours" else f"{value:.2e}"


def _cross(a: PlanRow, b: PlanRow) -> Optional[float]:
    """The N > 0 at which the C_total lines of a and b meet, or None if they never do."""
    if a.spec == b.spec:
        return None
    n = (b.generic - a.generic) / (a.spec - b.spec)
    return n if n > 0 else None


def _crossover(rec: PlanRow, plan: list[PlanRow], inference: str, cost: str) -> Optional[str]:
    """Where the recommended method's cost line crosses that of the best method of the
    other kind (shared pretraining vs per-domain), among complete methods meeting the
    inference constraint."""
    others = [p for p in candidates(plan, inference) if p.shared != rec.shared]
    if not others:
        return None
    other = min(others, key=lambda p: p.ppl)
    n = _cross(rec, other)
    if n is not None and n < 1:  # they cross before the first domain: one is cheaper for every N >= 1
        n = None
    if n is None:
        cheaper = rec if rec.total_at(1) <= other.total_at(1) else other
        dearer = other if cheaper is rec else rec
        return f"{cheaper.label} is cheaper than {dearer.label} for every N >= 1 (their cost lines do not cross there)"
    # beyond n, the one with the smaller per-domain cost is cheaper
    low, high = (rec, other) if rec.spec < other.spec else (other, rec)
    return (f"beyond N≈{n:.2f} domains, {low.label} becomes cheaper than {high.label} "
            f"(C_total {format_cost(low.total_at(n), cost)} at the crossing)")


def _pick(plan: list[PlanRow]) -> Optional[PlanRow]:
    return plan[0] if plan and plan[0].admissible else None


def nothing_fits(plan: list[PlanRow], n_domains: int, inference: str, budget: Optional[float], cost: str) -> str:
    """What to relax, in one line."""
    plan = [p for p in plan if not p.ablation]
    if not plan:
        return "no method has results at this size"
    complete = [p for p in plan if p.complete]
    if not complete:
        return "no method has results for every domain of the grid at this size; finish the grid (speclm grid) first"
    fitting_inference = [p for p in complete if p.small or inference == "any"]
    if not fitting_inference:
        return "no complete method has a small model at inference; use --inference any or finish the grid"
    cheapest = min(fitting_inference, key=lambda p: p.total)
    hints = [f"raise --budget to at least {format_cost(cheapest.total, cost)} ({cheapest.label})"]
    if cheapest.spec > 0 and budget is not None and budget > cheapest.generic:
        n_max = math.floor((budget - cheapest.generic) / cheapest.spec)
        if n_max >= 1:
            hints.append(f"serve at most {n_max} domains")
    if inference == "small":
        large = [p for p in complete if not p.small and p.total <= (budget or math.inf)]
        if large:
            hints.append("or allow a large model (--inference any)")
    return (f"nothing fits {n_domains} domain{'s' * (n_domains != 1)} with a budget of {format_cost(budget or 0, cost)} "
            f"{COST_UNIT[cost]}: " + ", or ".join(hints))


def recommend(
    rows: list[dict],
    size: str,
    n_domains: int,
    inference: str = "small",
    budget: Optional[float] = None,
    cost: str = "flops",
    curves: Optional[list[dict]] = None,
) -> Recommendation:
    """The admissible method with the lowest macro perplexity, why (in the paper's terms),
    where its cost line crosses the best one of the other kind, and (with a budget) from
    which N on the recommendation changes. Raises SpeclmError saying what to relax when
    nothing is admissible. ``curves``: partly pretrained snapshots are candidates too (see
    :func:`plan_rows`)."""
    plan = plan_rows(rows, size, n_domains, inference, budget, cost, curves)
    rec = _pick(plan)
    if rec is None:
        raise SpeclmError(nothing_fits(plan, n_domains, inference, budget, cost))
    better = [p for p in candidates(plan, inference) if p.ppl < rec.ppl]
    unit = COST_UNIT[cost]
    if not rec.small:
        reason = (f"large inference budget: a large model pretrained on generic data then fine-tuned "
                  f"({rec.label}) has the best perplexity")
    elif not rec.shared and budget is None:
        reason = (f"no budget given: {rec.label} has the best perplexity whatever it costs; it pays its "
                  f"pretraining per domain, so C_total = {n_domains} x {format_cost(rec.spec, cost)} = {format_cost(rec.total, cost)} "
                  f"{unit} (give --budget to see when shared pretraining wins)")
    elif not rec.shared:
        reason = (f"few domains: a per-domain pretraining ({rec.label}) is affordable: "
                  f"{n_domains} x {format_cost(rec.spec, cost)} = {format_cost(rec.total, cost)} <= {format_cost(budget, cost)} {unit}")
    else:
        reason = (f"many domains: shared pretraining wins ({rec.label}: C_generic {format_cost(rec.generic, cost)} paid once, "
                  f"{format_cost(rec.spec, cost)} per domain)")
        if not better:
            reason = (f"shared pretraining ({rec.label}) has the best perplexity: C_generic {format_cost(rec.generic, cost)} "
                      f"paid once, {format_cost(rec.spec, cost)} per domain")
    if better:
        b = min(better, key=lambda p: p.ppl)
        reason += f"; {b.label} (ppl {b.ppl:.4g}) would cost {format_cost(b.total, cost)} > budget"
    if rec.share < 1:
        reason += (f"; {rec.label} is {rec.method} stopped at {rec.share:.0%} of its pretraining "
                   f"(its snapshot in eval/curves.jsonl)")
    switch = None
    if budget is not None and rec.spec > 0:
        n_max = math.floor((budget - rec.generic) / rec.spec)
        nxt = _pick(plan_rows(rows, size, n_max + 1, inference, budget, cost, curves))
        switch = f"{rec.label} fits the budget up to N={n_max} domains; beyond, " + (
            f"{nxt.label} (ppl {nxt.ppl:.4g})" if nxt else "nothing fits")
    return Recommendation(rec.label, rec.ppl, reason, _crossover(rec, plan, inference, cost), switch, plan, rec.share)


# --- reading the grid -------------------------------------------------------------------


def load_rows(run, name: str = "results") -> tuple[list[dict], Path]:
    """The grid rows of ``run`` computed with its current config (as ``speclm grid`` and its
    plots pick them), and the results file; a one-line error when there are none."""
    from ..core import atomic
    from .rows import config_hash

    results = run.eval_dir / f"{name}.jsonl"
    if not results.exists():
        raise SpeclmError(f"no grid results in {results}; run `speclm grid --run {run.path}` first")
    rows = list(grid_rows(results, config_hash(run)).values())
    if not rows:
        other = len(atomic.read_jsonl(results))
        raise SpeclmError(f"no grid results for this run's current config in {results}"
                          + (f" ({other} rows from another config)" if other else "")
                          + f"; run `speclm grid --run {run.path}` first")
    return rows, results


def candidates(plan: list[PlanRow], inference: str) -> list[PlanRow]:
    """Methods that can be recommended at some budget: complete, meeting the inference
    constraint, no ablation; best macro perplexity first."""
    return sorted((p for p in plan if p.complete and not p.ablation and (p.small or inference == "any")),
                  key=lambda p: p.ppl)


# --- the paper's advice (no grid needed) ------------------------------------------------

# docs/paper.md §6 Table 3 (A100 GPU-hours): SLM-is pays its whole pretraining per domain; PN
# pays its pretraining once and a fine-tune per domain (0.02 GPUh at 1M .. 0.5 at 64M).
PAPER_IS_PER_DOMAIN = 130.0
PAPER_PN_GENERIC = 650.0
PAPER_PN_PER_DOMAIN = 0.5


def paper_crossover() -> float:
    """N at which SLM-is (N x 130 GPUh) costs as much as SLM-pn (650 + N x 0.5 GPUh)."""
    return PAPER_PN_GENERIC / (PAPER_IS_PER_DOMAIN - PAPER_PN_PER_DOMAIN)


def paper_advice(n_domains: int, inference: str) -> list[str]:
    """The paper's Figure-1 decision tree (docs/paper.md §8) for N domains, a few lines."""
    check_inputs(n_domains, inference, None, "flops")
    x = paper_crossover()
    lines = ["Figure 1 of the paper (docs/paper.md §8), with its costs (§6 Table 3, A100 GPU-hours):"]
    if inference == "any":
        lines += [
            "large inference budget -> a large model: pretrain on generic data, then fine-tune (llm).",
            "  (at 1M domain tokens SLM-is matches or beats the 771M LLM for under 130 GPUh: with a small "
            "budget at inference, use --inference small)",
        ]
        return lines
    lines.append("small inference budget -> it depends on the specialization budget, i.e. on N:")
    is_cost, pn_cost = n_domains * PAPER_IS_PER_DOMAIN, PAPER_PN_GENERIC + n_domains * PAPER_PN_PER_DOMAIN
    if n_domains < x:
        lines.append(f"N={n_domains}: few domains -> small model + importance sampling (slm-is): a per-domain "
                     f"pretraining is affordable ({is_cost:.0f} GPUh vs {pn_cost:.0f} for slm-pn).")
    else:
        lines.append(f"N={n_domains}: many domains -> projected network or hard mixture (slm-pn / slm-mix): "
                     f"shared pretraining wins ({pn_cost:.0f} GPUh vs {is_cost:.0f} for slm-is).")
    lines.append(f"  crossover: beyond N≈{x:.1f} domains, slm-pn (650 + N x 0.5 GPUh) is cheaper than slm-is "
                 f"(N x 130 GPUh). Run a grid and `speclm plan --run RUN` for numbers from your own data.")
    return lines


# --- the table ----------------------------------------------------------------------------


def format_table(plan: list[PlanRow], n_domains: int, cost: str) -> list[str]:
    from ..core.table import text_table

    unit = "dev-h" if cost == "device_hours" else "FLOPs"
    head = ["method", "macro ppl", f"C_generic {unit}", "C_spec/domain", f"C_total(N={n_domains})", "admissible"]
    cells = [[p.label + ("" if p.small else " (large)"), f"{p.ppl:.2f}", format_cost(p.generic, cost), format_cost(p.spec, cost),
              format_cost(p.total, cost), "yes" if p.admissible else f"no: {p.why_not}"] for p in plan]
    if any(p.share < 1 for p in plan):  # snapshots of eval/curves.jsonl: say how much of the pretraining each had
        head.insert(1, "pretraining share")
        for p, c in zip(plan, cells):
            c.insert(1, f"{p.share:g}")
    return text_table(head, cells).splitlines()
