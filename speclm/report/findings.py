"""The paper's findings (PAPER.md §8, 1 to 7), checked against one run's grid.

Each check returns a verdict — ``held``, ``did not hold`` or ``not testable at this
scale`` — and a paragraph with the numbers and intervals that decide it. A claim "A beats
B" holds only when the macro NLL difference is beyond its 95% interval; a difference
inside the interval is a tie, never a win. Everything is computed from grid rows (and the
clusters stage's Table 10 entropies for finding 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from .evidence import Z95, difference, macro, row_estimate

HELD, NOT_HELD, UNTESTABLE = "held", "did not hold", "not testable at this scale"
SHARED = ("slm-pn", "slm-mix")

CLAIMS = {
    1: "Fine-tuning on in-domain data is essential for every method, even with the smallest specialization set.",
    2: "Distillation from a large model brings little improvement once the teacher's pretraining is charged.",
    3: "SLM-is gives the best specialized perplexity of the small models, and at the smallest set matches or beats the large model.",
    4: "SLM-pn and SLM-mix beat the plain SLM at equal inference and specialization cost, most clearly at small sets.",
    5: "SLM-pn and SLM-mix perform similarly on average.",
    6: "Both asymmetric methods struggle on domains whose cluster histogram is diffuse (high entropy).",
    7: "Plan early: which recipe is best depends on how many domains share the pretraining.",
}


@dataclass
class Finding:
    n: int
    verdict: str
    text: str

    @property
    def claim(self) -> str:
        return CLAIMS[self.n]


class Grid:
    """The rows of one run, grouped, with the sizes and domains they cover."""

    def __init__(self, groups: dict, domains: list[str], sizes: list[str], methods: list[str], entropies: dict,
                 run_path=None):
        self.groups, self.domains, self.sizes, self.methods, self.entropies = groups, domains, sizes, methods, entropies
        self.run_path = run_path  # where rows keep their per-window NLLs: differences are then paired

    def has(self, method: str, size: Optional[str] = None) -> bool:
        sizes = [size] if size else self.sizes
        return any((method, d, s) in self.groups for d in self.domains for s in sizes)

    def macro(self, method: str, size: str, key: str = "nll"):
        return macro(self.groups, method, size, self.domains, key)

    def diff(self, a: str, b: str, size: str):
        return difference(self.groups, a, b, size, self.domains, self.run_path)


def fine_tuning_essential(g: Grid) -> Finding:
    size = g.sizes[0]
    parts, worse = [], []
    for m in g.methods:
        ft, pre = g.macro(m, size), g.macro(m, size, "pretrained_nll")
        if ft is None or pre is None:
            continue
        gain = pre.nll - ft.nll
        se = math.sqrt(ft.se ** 2 + pre.se ** 2)
        parts.append(f"{m} {pre.text()} → {ft.text()}")
        if not gain > Z95 * se:
            worse.append(m)
    if not parts:
        return Finding(1, UNTESTABLE, "The grid recorded no perplexity before fine-tuning (`pretrained_nll`), so the "
                                      "gain of fine-tuning cannot be measured from this run.")
    verdict = HELD if not worse else NOT_HELD
    tail = "" if not worse else f" Fine-tuning did not help beyond the interval for: {', '.join(worse)}."
    return Finding(1, verdict, f"Macro perplexity before → after fine-tuning on {size} tokens per domain: "
                               + "; ".join(parts) + "." + tail)


def distillation(g: Grid) -> Finding:
    if not (g.has("slm-d") and g.has("slm")):
        return Finding(2, UNTESTABLE, "slm-d or slm is missing from the grid.")
    texts, wins = [], 0
    for s in g.sizes:
        d = g.diff("slm-d", "slm", s)
        if d is None:
            continue
        texts.append(f"at {s}: {d.text()}")
        wins += d.significant and d.delta < 0
    if not texts:
        return Finding(2, UNTESTABLE, "slm-d and slm share no complete size.")
    verdict = HELD if wins == 0 else NOT_HELD
    note = ("slm-d never beats slm beyond the interval, although its generic cost includes the teacher's pretraining"
            if verdict == HELD else f"slm-d beats slm beyond the interval at {wins} size(s)")
    return Finding(2, verdict, f"{note}: " + "; ".join(texts) + ".")


def importance_sampling_best(g: Grid, small: Callable[[str], bool]) -> Finding:
    if not g.has("slm-is"):
        return Finding(3, UNTESTABLE, "slm-is is missing from the grid.")
    size = g.sizes[0]
    beaten = []
    lines = []
    for m in g.methods:
        if m == "slm-is" or not small(m):
            continue
        d = g.diff("slm-is", m, size)
        if d is None:
            continue
        lines.append(d.text())
        if d.significant and d.delta > 0:
            beaten.append(m)
    llm = g.diff("slm-is", "llm", size) if g.has("llm", size) else None
    llm_text = f" Against the large model: {llm.text()}." if llm else " The large model is not in the grid."
    llm_ok = llm is None or not (llm.significant and llm.delta > 0)
    if not lines:
        return Finding(3, UNTESTABLE, f"no other small method shares size {size} with slm-is.")
    verdict = HELD if not beaten and llm_ok else NOT_HELD
    lead = ("no small method is better than slm-is beyond the interval" if not beaten
            else f"{', '.join(beaten)} beat(s) slm-is beyond the interval")
    return Finding(3, verdict, f"At {size}: {lead} ({'; '.join(lines)}).{llm_text}")


def asymmetric_beat_slm(g: Grid) -> Finding:
    present = [m for m in SHARED if g.has(m)]
    if not present or not g.has("slm"):
        return Finding(4, UNTESTABLE, "slm-pn / slm-mix or slm is missing from the grid.")
    lines, smallest_win = [], False
    for s in g.sizes:
        for m in present:
            d = g.diff(m, "slm", s)
            if d is None:
                continue
            lines.append(f"{s}: {d.text()}")
            if s == g.sizes[0] and d.significant and d.delta < 0:
                smallest_win = True
    if not lines:
        return Finding(4, UNTESTABLE, "no complete size shared with slm.")
    verdict = HELD if smallest_win else NOT_HELD
    return Finding(4, verdict, ("At the smallest size an asymmetric method beats slm beyond the interval. " if smallest_win
                                else "No asymmetric method beats slm beyond the interval at the smallest size. ")
                   + "; ".join(lines) + ".")


def pn_vs_mix(g: Grid) -> Finding:
    if not (g.has("slm-pn") and g.has("slm-mix")):
        return Finding(5, UNTESTABLE, "slm-pn or slm-mix is missing from the grid.")
    lines, apart = [], []
    for s in g.sizes:
        d = g.diff("slm-pn", "slm-mix", s)
        if d is None:
            continue
        lines.append(f"{s}: {d.text()}")
        if d.significant:
            apart.append(s)
    if not lines:
        return Finding(5, UNTESTABLE, "slm-pn and slm-mix share no complete size.")
    return Finding(5, HELD if not apart else NOT_HELD,
                   ("Within the interval at every size" if not apart else f"Apart beyond the interval at {', '.join(apart)}")
                   + ": " + "; ".join(lines) + ".")


def _spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else 0.0


def diffuse_domains(g: Grid, k: Optional[int]) -> Finding:
    present = [m for m in SHARED if g.has(m)]
    if not present or not g.has("slm") or k is None:
        return Finding(6, UNTESTABLE, "needs slm, an asymmetric method and the clusters' entropies.")
    if len(g.domains) < 3:
        return Finding(6, UNTESTABLE, f"{len(g.domains)} domains are too few to relate the gap to the entropy.")
    size, lines, rhos = g.sizes[0], [], []
    for m in present:
        xs, ys, cells = [], [], []
        for d in g.domains:
            ea, eb = row_estimate(g.groups.get((m, d, size), [])), row_estimate(g.groups.get(("slm", d, size), []))
            ent = (g.entropies.get(d) or {}).get(str(k), {}).get("entropy")
            if ea is None or eb is None or ent is None:
                continue
            xs.append(ent)
            ys.append(ea.nll - eb.nll)
            cells.append(f"{d} H={ent:.2f} Δ={ea.nll - eb.nll:+.3f}")
        if len(xs) >= 3:
            rho = _spearman(xs, ys)
            rhos.append(rho)
            lines.append(f"{m} − slm at {size} (k={k}): Spearman ρ = {rho:+.2f} over {len(xs)} domains ({'; '.join(cells)})")
    if not rhos:
        return Finding(6, UNTESTABLE, "no domain has both rows and an entropy.")
    verdict = HELD if all(r > 0.5 for r in rhos) else NOT_HELD
    return Finding(6, verdict, "A positive ρ means the asymmetric method loses more to slm where the histogram is more "
                               "diffuse; with a handful of domains this is weak evidence either way. " + ". ".join(lines) + ".")


def plan_early(g: Grid, totals: dict) -> Finding:
    """``totals[method] = (C_generic, C_spec per domain)`` at the smallest size, in FLOPs."""
    per_domain = [m for m in ("slm-is", "slm-dsir") if m in totals]
    shared = [m for m in SHARED if m in totals]
    if not per_domain or not shared:
        return Finding(7, UNTESTABLE, "needs a per-domain-pretraining method (slm-is) and a shared one (slm-pn / slm-mix).")
    a, b = per_domain[0], shared[0]
    (ga, sa), (gb, sb) = totals[a], totals[b]
    if sa <= sb:
        return Finding(7, NOT_HELD, f"{a} costs no more per domain than {b} ({sa:.2e} vs {sb:.2e} FLOPs), so "
                                    "sharing the pretraining never pays off here.")
    n = (gb - ga) / (sa - sb)
    if n <= 1:
        return Finding(7, HELD, f"{b} is cheaper than {a} for every N ≥ 1 (C_total(N) = {gb:.2e} + N × {sb:.2e} vs "
                                f"{ga:.2e} + N × {sa:.2e} FLOPs): the shared pretraining wins from the first domain.")
    return Finding(7, HELD, f"C_total(N) = C_generic + N × C_spec: {a} {ga:.2e} + N × {sa:.2e}, {b} {gb:.2e} + N × {sb:.2e} "
                            f"FLOPs; they cross at N ≈ {n:.1f} domains: below it the per-domain pretraining is cheaper, "
                            "above it the shared one, so the choice must be made before pretraining.")


def check_all(g: Grid, small: Callable[[str], bool], k: Optional[int], totals: dict) -> list[Finding]:
    return [fine_tuning_essential(g), distillation(g), importance_sampling_best(g, small), asymmetric_beat_slm(g),
            pn_vs_mix(g), diffuse_domains(g, k), plan_early(g, totals)]
