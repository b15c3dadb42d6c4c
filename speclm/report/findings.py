"""The paper's findings (docs/paper.md §8, 1 to 7), checked against one run, each only where
its premises hold (speclm.report.premises).

Each check returns a verdict and a paragraph with the numbers that decide it:

- ``not testable at this scale``: a premise failed; the text names it and its value;
- ``held`` / ``did not hold``: every premise met and the test decided beyond its interval,
  with Holm's correction over the tests of the finding (family-wise 5%) and Student's t
  for the handful of test documents behind each interval;
- ``inconclusive``: the premises hold but the interval decides neither way.

"Similar" and "matches" are equivalence tests with a stated margin (:data:`MARGIN`: 2% in
perplexity), never read from the absence of a difference. Finding 4 is checked per method
(slm-pn and slm-mix apart).

An ablation (speclm.core.sections.ABLATIONS: slm-is-full, slm-is at the full pretraining budget)
is no competitor: :class:`Grid` keeps it out of ``methods``, so no finding tests it or counts it
in a Holm family; finding 3 adds one sentence with its paired differences to slm and slm-is, to
tell selection apart from budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from .evidence import Difference, Estimate, Evidence
from .premises import gate
from .stats import holm, p_greater, spearman_permutation, t_quantile

HELD, NOT_HELD, UNTESTABLE, INCONCLUSIVE = "held", "did not hold", "not testable at this scale", "inconclusive"
SHARED = ("slm-pn", "slm-mix")
MARGIN = math.log(1.02)  # equivalence margin: 2% in perplexity, in NLL
ALPHA = 0.05

CLAIMS = {
    1: "Fine-tuning on in-domain data is essential for every method, even with the smallest specialization set.",
    2: "Distillation from a large model brings little improvement once the teacher's pretraining is charged.",
    3: "SLM-is gives the best specialized perplexity of the small models, and at the smallest set matches or beats the large model.",
    4: "SLM-pn and SLM-mix beat the plain SLM at equal inference and specialization cost, most clearly at small sets.",
    5: "SLM-pn and SLM-mix perform similarly on average.",
    6: "Both asymmetric methods struggle on domains whose cluster histogram is diffuse (high entropy).",
    7: "Plan early: which recipe is best depends on how many domains share the pretraining.",
}

PREMISES = {  # the premises (speclm.report.premises keys) each finding needs
    1: ["pretrain_to_spec"],
    2: ["pretrain_to_spec"],
    3: ["slm_saturated", "is_max_passes"],
    "4:slm-pn": ["slm_saturated", "pn_param_ratio"],
    "4:slm-mix": ["slm_saturated", "slm_loss_at_expert_budget_nats"],
    5: ["slm_saturated", "pn_param_ratio", "slm_loss_at_expert_budget_nats"],
    6: ["domains", "entropy_range_routing_k", "slm_saturated"],
    7: ["pretrain_to_spec"],
}


@dataclass
class Finding:
    n: int
    verdict: str
    text: str
    part: str = ""  # finding 4: the method checked
    failed: list[str] = field(default_factory=list)  # premises that failed

    @property
    def claim(self) -> str:
        return CLAIMS[self.n]

    @property
    def title(self) -> str:
        return f"{self.n}" + (f" ({self.part})" if self.part else "")


class Grid:
    """The rows of one run, grouped, with the sizes and domains they cover, its premises and
    one :class:`Evidence` for every estimate and difference."""

    def __init__(self, groups: dict, domains: list[str], sizes: list[str], methods: list[str], entropies: dict,
                 run_path=None, premises: Optional[dict] = None, replicates: int = 1000,
                 small: Optional[Callable[[str], bool]] = None, routing_k: Optional[dict] = None):
        from ..core.sections import ABLATIONS

        self.groups, self.domains, self.sizes, self.entropies = groups, domains, sizes, entropies
        self.methods = [m for m in methods if m not in ABLATIONS]  # the competitors every finding reads
        self.ablations = [m for m in methods if m in ABLATIONS]  # reported beside, never compared as rivals
        self.run_path = run_path
        self.premises = premises or {"table": []}
        self.ev = Evidence(groups, domains, run_path, replicates)
        self.small = small or (lambda m: True)
        self.routing_k = routing_k or {}

    @property
    def judged_sizes(self) -> list[str]:
        """The sizes the shared pretraining dwarfs (at least 100x the set; all when unmeasured):
        findings that compare across sizes read only these."""
        from .premises import MIN_PRETRAIN_RATIO

        by = self.premises.get("pretrain_to_spec_by_size") or {}
        return [s for s in self.sizes if by.get(s) is None or by[s] >= MIN_PRETRAIN_RATIO]

    def has(self, method: str, size: Optional[str] = None) -> bool:
        sizes = [size] if size else self.sizes
        return any((method, d, s) in self.groups for d in self.domains for s in sizes)

    def macro(self, method: str, size: str, key: str = "nll") -> Optional[Estimate]:
        return self.ev.macro(method, size, key)

    def diff(self, a: str, b: str, size: str) -> Optional[Difference]:
        return self.ev.difference(a, b, size)

    def failed(self, key) -> list[str]:
        return gate(self.premises, PREMISES[key])


def _untestable(n: int, failed: list[str], part: str = "") -> Finding:
    return Finding(n, UNTESTABLE, "Premise not met: " + "; ".join(failed) + ".", part, failed)


def fine_tuning_essential(g: Grid) -> Finding:
    if failed := g.failed(1):
        return _untestable(1, failed)
    size = g.sizes[0]
    parts, gains = [], []
    for m in g.methods:
        ft, pre = g.macro(m, size), g.macro(m, size, "pretrained_nll")
        if ft is None or pre is None:
            continue
        gain, se = pre.nll - ft.nll, math.sqrt(ft.se ** 2 + pre.se ** 2)
        df = min(x for x in (ft.df, pre.df, 1e9) if x is not None)
        gains.append((m, gain, se, df))
        parts.append(f"{m} {pre.text()} → {ft.text()}")
    if not gains:
        return Finding(1, UNTESTABLE, "The grid recorded no perplexity before fine-tuning (`pretrained_nll`).")
    helped = holm([p_greater(g_, se, df) for _, g_, se, df in gains], ALPHA)
    small_gain = [m for m, g_, se, df in gains if g_ + t_quantile(0.95, df) * se < MARGIN]
    lead = f"Macro perplexity before → after fine-tuning on {size} tokens per domain: " + "; ".join(parts) + "."
    if all(helped):
        return Finding(1, HELD, lead + f" Every gain is beyond its interval (Holm over {len(gains)} methods).")
    if small_gain:
        return Finding(1, NOT_HELD, lead + f" Fine-tuning brings less than 2% perplexity, beyond the interval, for: "
                                          f"{', '.join(small_gain)}.")
    undecided = [m for (m, *_), h in zip(gains, helped) if not h]
    return Finding(1, INCONCLUSIVE, lead + f" Not decided for: {', '.join(undecided)}.")


def distillation(g: Grid) -> Finding:
    if failed := g.failed(1):
        return _untestable(2, failed)
    if not (g.has("slm-d") and g.has("slm") and g.has("llm")):
        return Finding(2, UNTESTABLE, "slm-d, slm or the teacher (llm) is missing from the grid.")
    lbs = g.premises.get("large_beats_small_by_size") or {}
    tested, notes = [], []
    for s in g.judged_sizes:
        if not lbs.get(s):
            notes.append(f"at {s} the teacher (llm) does not beat the student (slm) after fine-tuning")
            continue
        d = g.diff("slm-d", "slm", s)
        cost_d, cost_s = _generic_cost(g, "slm-d", s), _generic_cost(g, "slm", s)
        if d is None or cost_d is None or cost_s is None:
            continue
        tested.append((s, d, cost_d <= cost_s * 1.01, cost_d / cost_s))
    if not tested:
        keys = {p["key"] for p in g.premises.get("table", [])}
        return _untestable(2, (gate(g.premises, ["large_beats_small"]) if "large_beats_small" in keys else [])
                           or ["the teacher beats the student at no size: " + "; ".join(notes)])
    texts = [f"at {s}: {d.text()}; slm-d's generic cost (teacher charged) is {r:.2f}x slm's" for s, d, _, r in tested]
    little = [d.delta - t_quantile(0.95, d.df) * d.se > -MARGIN for _, d, _, _ in tested]
    # "little" is judged against the margin, so its opposite is a gain beyond the margin, not beyond zero
    better = holm([p_greater(-d.delta - MARGIN, d.se, d.df) if equal else 1.0 for _, d, equal, _ in tested], ALPHA)
    note = (" " + "; ".join(notes) + ".") if notes else ""
    if any(better):
        return Finding(2, NOT_HELD, "slm-d beats slm by more than 2% at equal total pretraining cost beyond the "
                                    "interval: " + "; ".join(texts) + "." + note)
    if all(little):
        return Finding(2, HELD, "slm-d gains less than 2% perplexity over slm (one-sided, beyond the interval), "
                                "although its generic cost includes the teacher's pretraining: " + "; ".join(texts) + "." + note)
    costly = [s for s, d, equal, _ in tested if not equal and d.significant and d.delta < 0]
    extra = (f" slm-d beats slm at {', '.join(costly)}, but at a higher total cost, and the run has no slm pretrained "
             "at slm-d's cost to compare with." if costly else "")
    return Finding(2, INCONCLUSIVE, "; ".join(texts) + "." + extra + note)


def _generic_cost(g: Grid, m: str, s: str) -> Optional[float]:
    rs = [r for d in g.domains for r in g.groups.get((m, d, s), [])]
    return max(float(r["cost"]["generic"]["flops"]) for r in rs) if rs else None


def importance_sampling_best(g: Grid) -> Finding:
    """Finding 3, with :func:`budget_sentence` (selection apart from budget) after every verdict."""
    f = _importance_sampling_best(g)
    f.text += budget_sentence(g)
    return f


def budget_sentence(g: Grid) -> str:
    """Finding 3's sentence on budget: slm-is at its per-domain share of the pretraining
    budget decides it; the ablation slm-is-full (the same resample at the full budget), when
    the run has it, is given as its paired differences to slm and slm-is at the smallest size."""
    share = g.premises.get("per_domain_budget")
    if not isinstance(share, (int, float)):
        at = "its per-domain share of the pretraining budget (methods.per_domain_budget)"
    elif abs(share - 0.25) < 0.01:
        at = "the paper's quarter budget (methods.per_domain_budget = 0.25; the paper: 130 of 530 GPU-hours)"
    else:
        at = f"methods.per_domain_budget = {share:g} of the pretraining budget (the paper: about 0.25)"
    text = f" Budget: slm-is at {at} decides this finding"
    size = g.sizes[0] if g.sizes else None
    full = [d for b in ("slm", "slm-is") if "slm-is-full" in g.ablations and size and (d := g.diff("slm-is-full", b, size))]
    if not full:
        return text + "."
    return (text + f"; the ablation slm-is-full (the same resample at the full budget; no competitor) at {size}: "
            + "; ".join(d.text() for d in full) + ".")


def _importance_sampling_best(g: Grid) -> Finding:
    if failed := g.failed(3):
        return _untestable(3, failed)
    if not g.has("slm-is"):
        return Finding(3, UNTESTABLE, "slm-is is missing from the grid.")
    size = g.sizes[0]
    diffs = [d for m in g.methods if m != "slm-is" and g.small(m) and (d := g.diff("slm-is", m, size))]
    if not diffs:
        return Finding(3, UNTESTABLE, f"no other small method shares size {size} with slm-is.")
    beaten = [d.b for d, r in zip(diffs, holm([d.p_b_better for d in diffs], ALPHA)) if r]
    not_worse = all(d.not_worse(MARGIN) for d in diffs)
    lines = "; ".join(d.text() for d in diffs)
    llm_part, llm_ok, llm_bad = "", True, False
    if g.has("llm", size):
        d = g.diff("slm-is", "llm", size)
        if not (g.premises.get("large_beats_small_by_size") or {}).get(size):
            llm_part = (" Against the large model: not testable at this scale (the large model does not beat slm after "
                        f"fine-tuning at {size}); {d.text() if d else ''}.")
        elif d is not None:
            llm_ok, llm_bad = d.not_worse(MARGIN), d.delta - t_quantile(0.95, d.df) * d.se > MARGIN
            llm_part = f" Against the large model (margin 2%): {d.text()}."
    head = f"At {size}, slm-is against every other small method: {lines}."
    if beaten or llm_bad:
        who = ", ".join(beaten + (["llm (beyond the 2% margin)"] if llm_bad else []))
        return Finding(3, NOT_HELD, head + llm_part + f" Better than slm-is beyond the interval (Holm): {who}.")
    if not_worse and llm_ok:
        return Finding(3, HELD, head + llm_part + " No small method is better than slm-is by 2% or more (one-sided, "
                                                   "beyond the interval).")
    return Finding(3, INCONCLUSIVE, head + llm_part)


def asymmetric_beat_slm(g: Grid) -> list[Finding]:
    out, tests = [], []
    for m in SHARED:
        if not g.has(m):
            continue
        if failed := g.failed(f"4:{m}"):
            out.append(_untestable(4, failed, m))
            continue
        ds = [(s, d) for s in g.judged_sizes if (d := g.diff(m, "slm", s))]
        if not ds:
            out.append(Finding(4, UNTESTABLE, f"{m} and slm share no complete size.", m))
            continue
        tests.append((m, ds))
        out.append(Finding(4, "", "", m))
    flat = [(m, s, d) for m, ds in tests for s, d in ds]
    wins = dict(zip([(m, s) for m, s, _ in flat], holm([d.p_a_better for _, _, d in flat], ALPHA)))
    for f in out:
        if f.verdict:
            continue
        ds = dict(next(ds for m, ds in tests if m == f.part))
        s0 = g.sizes[0]
        d0 = ds.get(s0)
        lines = "; ".join(f"{s}: {d.text()}" for s, d in ds.items())
        trend = _trend(ds, g.judged_sizes)
        if d0 is not None and wins.get((f.part, s0)):
            f.verdict, f.text = HELD, f"At {s0} {f.part} beats slm beyond the interval (Holm). {lines}.{trend}"
        elif d0 is not None and d0.delta - t_quantile(0.95, d0.df) * d0.se > -MARGIN:
            f.verdict, f.text = NOT_HELD, f"At {s0} {f.part} is not better than slm by 2% or more (one-sided). {lines}.{trend}"
        else:
            f.verdict, f.text = INCONCLUSIVE, f"{lines}.{trend}"
    if not out:
        return [Finding(4, UNTESTABLE, "slm-pn and slm-mix are missing from the grid.")]
    return out


def _trend(ds: dict, sizes: list[str]) -> str:
    present = [s for s in sizes if s in ds]
    if len(present) < 2:
        return " The trend over sizes needs two sizes."
    a, b = ds[present[0]], ds[present[-1]]
    delta, se = a.delta - b.delta, math.sqrt(a.se ** 2 + b.se ** 2)
    q = t_quantile(0.975, min(x for x in (a.df, b.df, 1e9) if x is not None))
    shown = "yes" if se > 0 and delta + q * se < 0 else ("no, the opposite" if se > 0 and delta - q * se > 0 else "undecided")
    return (f" Advantage larger at {present[0]} than at {present[-1]} (\"most clearly at small sets\"): {shown} "
            f"(difference of differences {delta:+.4f} ± {q * se:.4f}).")


def pn_vs_mix(g: Grid) -> Finding:
    if failed := g.failed(5):
        return _untestable(5, failed)
    if not (g.has("slm-pn") and g.has("slm-mix")):
        return Finding(5, UNTESTABLE, "slm-pn or slm-mix is missing from the grid.")
    ds = [(s, d) for s in g.judged_sizes if (d := g.diff("slm-pn", "slm-mix", s))]
    if not ds:
        return Finding(5, UNTESTABLE, "slm-pn and slm-mix share no complete size.")
    lines = "; ".join(f"{s}: {d.text()}" for s, d in ds)
    # "apart" is the equivalence test's other side: |difference| > the margin beyond the interval
    # (a difference that is significant but inside ±2% is "similar", not "did not hold")
    beyond = [min(1.0, 2 * min(p_greater(d.delta - MARGIN, d.se, d.df), p_greater(-d.delta - MARGIN, d.se, d.df)))
              for _, d in ds]
    apart = [s for (s, _), r in zip(ds, holm(beyond, ALPHA)) if r]
    if apart:
        return Finding(5, NOT_HELD, f"Apart by more than ±2% perplexity beyond the interval (Holm) at "
                                    f"{', '.join(apart)}: {lines}.")
    if all(d.within(MARGIN) for _, d in ds):
        return Finding(5, HELD, f"Equivalent within ±2% perplexity at every size (two one-sided tests): {lines}.")
    return Finding(5, INCONCLUSIVE, f"Neither apart nor shown within ±2% perplexity: {lines}.")


def diffuse_domains(g: Grid) -> Finding:
    if failed := g.failed(6):
        return _untestable(6, failed)
    present = [m for m in SHARED if g.has(m)]
    if not present or not g.has("slm"):
        return Finding(6, UNTESTABLE, "needs slm and an asymmetric method.")
    size, lines, tests = g.sizes[0], [], []
    for m in present:
        k = g.routing_k.get(m)
        xs, ys, cells = [], [], []
        for d in g.domains:
            ea, eb = g.ev.macro_domain(m, d, size), g.ev.macro_domain("slm", d, size)
            ent = ((g.entropies.get(d) or {}).get(str(k)) or {}).get("entropy")
            if ea is None or eb is None or ent is None:
                continue
            xs.append(float(ent))
            ys.append(ea - eb)
            cells.append(f"{d} H={ent:.2f} Δ={ea - eb:+.3f}")
        if len(xs) >= 3:
            rho, p_pos = spearman_permutation(xs, ys)
            _, p_neg = spearman_permutation(xs, [-y for y in ys])
            tests.append((m, rho, p_pos, p_neg))
            lines.append(f"{m} − slm at {size} (entropy at its routing k={k}): Spearman ρ = {rho:+.2f}, permutation "
                         f"p = {p_pos:.3f} over {len(xs)} domains ({'; '.join(cells)})")
    if not tests:
        return Finding(6, UNTESTABLE, "no domain has both rows and an entropy at the routing k.")
    pos = holm([p for _, _, p, _ in tests], ALPHA)
    neg = holm([p for _, _, _, p in tests], ALPHA)
    text = "; ".join(lines) + "."
    if all(pos):
        return Finding(6, HELD, "The gap to slm grows with the entropy beyond chance for every method (Holm). " + text)
    if any(neg):
        return Finding(6, NOT_HELD, "The gap to slm shrinks with the entropy beyond chance (Holm). " + text)
    return Finding(6, INCONCLUSIVE, text)


def plan_early(g: Grid, candidates: Callable[[int, float], list], reference_total: Callable[[int], Optional[float]],
               estimate: Callable[[str], Optional[Estimate]]) -> Finding:
    """The best recipe at N = 1 and at N = 50 domains: the lowest macro perplexity among the
    recipes (and partly pretrained snapshots) whose total cost C_generic + N C_spec stays
    within the plain SLM's total cost for N domains. ``candidates(n, budget)``: admissible
    plan rows, best first; ``estimate(label)``: the macro estimate of a candidate."""
    if failed := g.failed(7):
        return _untestable(7, failed)
    picks, decided, texts = {}, [], []
    for n in (1, 50):
        budget = reference_total(n)
        if budget is None:
            return Finding(7, UNTESTABLE, "the plain slm is missing, so there is no reference budget.")
        rows = candidates(n, budget * 1.01)
        if not rows:
            return Finding(7, UNTESTABLE, f"no recipe fits slm's total cost at N={n}.")
        best = rows[0]
        picks[n] = best.label
        runner = rows[1] if len(rows) > 1 else None
        d = _unpaired(g, best.label, runner.label, estimate) if runner else None
        p = d.p_a_better if d else 0.0
        decided.append(p)
        texts.append(f"N={n} (budget {budget:.2e} FLOPs, slm's total): best {best.label} (ppl {best.ppl:.2f})"
                     + (f", next {runner.label} (ppl {runner.ppl:.2f}; {d.text()})" if d else ", the only recipe that fits"))
    ok = holm(decided, ALPHA)
    text = "; ".join(texts) + "."
    if picks[1] != picks[50] and all(ok):
        return Finding(7, HELD, f"The best recipe changes with N: {picks[1]} for one domain, {picks[50]} for 50. " + text)
    if picks[1] == picks[50] and all(ok):
        return Finding(7, NOT_HELD, f"{picks[1]} is best both for one domain and for 50, beyond the interval. " + text)
    return Finding(7, INCONCLUSIVE, text)


def _unpaired(g: Grid, a: str, b: str, estimate) -> Optional[Difference]:
    if "@" not in a and "@" not in b:
        return g.diff(a, b, g.sizes[0])
    ea, eb = estimate(a), estimate(b)
    if ea is None or eb is None:
        return None
    df = min(x for x in (ea.df, eb.df, 1e9) if x is not None)
    return Difference(a, b, ea.nll - eb.nll, math.sqrt(ea.se ** 2 + eb.se ** 2), False, None if df >= 1e9 else df)


def check_all(g: Grid, candidates, reference_total, estimate) -> list[Finding]:
    return [fine_tuning_essential(g), distillation(g), importance_sampling_best(g), *asymmetric_beat_slm(g),
            pn_vs_mix(g), diffuse_domains(g), plan_early(g, candidates, reference_total, estimate)]
