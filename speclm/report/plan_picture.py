"""The planner's picture: the data-driven Figure 1 (which recipe wins at each number of
domains N and total budget), drawn from :mod:`speclm.report.plan`'s recommendation logic."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..core.errors import SpeclmError
from .plan import COST_UNIT, N_RANGE, PlanRow, candidates, check_inputs, format_cost, nothing_fits, plan_rows, resolve_size


def region_map(cands: list[PlanRow], ns, budgets):
    """int array [len(budgets), len(ns)]: the index in ``cands`` (best perplexity first) of
    the recommended method at each (N, budget), len(cands) where nothing fits."""
    import numpy as np

    ns, budgets = np.asarray(ns, dtype=float), np.asarray(budgets, dtype=float)
    choice = np.full((len(budgets), len(ns)), len(cands), dtype=int)
    for i in reversed(range(len(cands))):  # best perplexity last, so it wins
        p = cands[i]
        choice[(p.generic + ns[None, :] * p.spec) <= budgets[:, None]] = i
    return choice


def shade(color, share: float) -> tuple:
    """A method's color for a snapshot with ``share`` of its pretraining: lighter the less it had."""
    keep = 0.35 + 0.65 * min(max(share, 0.0), 1.0)
    return tuple(1 - (1 - c) * keep for c in color[:3])


def plan_picture(
    rows: list[dict],
    size: str,
    out: Path,
    inference: str = "small",
    cost: str = "flops",
    point: Optional[tuple[int, Optional[float]]] = None,
    title: str = "",
    cells: int = 400,
    curves: Optional[list[dict]] = None,
) -> Path:
    """Write the data-driven Figure 1: x = number of domains N (log, 1..1000), y = budget
    C_total (log); each cell colored by the recommended method (best macro perplexity among
    complete methods meeting the inference constraint with C_total(N) <= budget), white
    where nothing fits. ``point`` = the user's (N, budget) is marked (budget None: a
    vertical line at N). ``curves`` (rows of ``eval/curves.jsonl``): partly pretrained
    snapshots are candidates too, drawn in a lighter shade of their method's color, and each
    snapshot's budget at N = 1 is marked on the left edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from .plots import method_styles, save_figure

    check_inputs(point[0] if point else 1, inference, point[1] if point else None, cost)
    plan = plan_rows(rows, size, 1, inference, None, cost, curves)
    label = resolve_size(rows, size)
    cands = candidates(plan, inference)
    if not cands:
        raise SpeclmError(nothing_fits(plan, 1, inference, None, cost))
    styles = method_styles([p.method for p in plan])

    n = np.logspace(0, math.log10(N_RANGE[1]), cells + 1)
    totals = [p.total_at(x) for p in cands for x in N_RANGE]
    positive = [t for t in totals if t > 0]
    lo = min(positive) / 4 if positive else 1e-6
    hi = max(positive) * 4 if positive else 1.0
    if point and point[1]:
        lo, hi = min(lo, point[1] / 2), max(hi, point[1] * 2)
    b = np.logspace(math.log10(lo), math.log10(hi), cells + 1)
    nc, bc = np.sqrt(n[:-1] * n[1:]), np.sqrt(b[:-1] * b[1:])  # cell centers
    choice = region_map(cands, nc, bc)
    shown = sorted(set(np.unique(choice).tolist()) - {len(cands)})
    colors = [shade(styles[p.method]["color"], p.share) for p in cands] + [(1.0, 1.0, 1.0)]
    fig, ax = plt.subplots(figsize=(7.5, 5.6), layout="constrained")
    ax.pcolormesh(n, b, choice, cmap=ListedColormap(colors), vmin=-0.5, vmax=len(cands) + 0.5, shading="flat")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*N_RANGE)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("number of domains N (log)")
    ax.set_ylabel(f"budget: total {COST_UNIT[cost]} = C_generic + N x C_spec (log)")
    ax.grid(True, which="major", color="black", alpha=0.15)
    handles = [Patch(facecolor=colors[i], edgecolor="black", linewidth=0.4,
                     label=f"{cands[i].label}{'' if cands[i].small else ' (large)'}: ppl {cands[i].ppl:.4g}")
               for i in shown]
    for i, p in enumerate(cands):  # the curve points: where each snapshot becomes affordable for one domain
        if p.share < 1 and i in shown and lo <= p.total_at(1) <= hi:
            ax.plot([1], [p.total_at(1)], marker="o", markersize=7, color=colors[i], markeredgecolor="black",
                    linestyle="none", clip_on=False, zorder=5)
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=0.4, label="nothing fits"))
    if point:
        pn, pb = point
        if pb is not None:
            ax.plot([pn], [pb], marker="*", markersize=16, color="black", markerfacecolor="yellow",
                    linestyle="none", label="you", clip_on=False)
            at = int(region_map(cands, [pn], [pb])[0, 0])
            ax.annotate(cands[at].label if at < len(cands) else "nothing fits", (pn, pb), xytext=(9 if pn < 100 else -9, 6),
                        textcoords="offset points", ha="left" if pn < 100 else "right", fontsize=9, fontweight="bold",
                        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
            handles.append(plt.Line2D([], [], marker="*", markersize=12, color="black", markerfacecolor="yellow",
                                      linestyle="none", label=f"you: N={pn}, budget {format_cost(pb, cost)}"))
        else:
            ax.axvline(pn, color="black", linestyle="--", linewidth=1.2)
            handles.append(plt.Line2D([], [], color="black", linestyle="--", label=f"you: N={pn} (no budget)"))
            best = cands[0]  # no budget: the best perplexity, at the budget it needs
            need = best.total_at(pn)
            if need > 0:
                ax.plot([pn], [need], marker="*", markersize=14, color="black", markerfacecolor="white",
                        linestyle="none", clip_on=False)
                ax.annotate(f"{best.label} needs {format_cost(need, cost)}", (pn, need), xytext=(9 if pn < 100 else -9, -14),
                            textcoords="offset points", ha="left" if pn < 100 else "right", fontsize=9, fontweight="bold",
                            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False,
              title="best admissible\n(macro ppl)", title_fontsize=8)
    what = "small at inference" if inference == "small" else "any inference size"
    ax.set_title((f"{title}\n" if title else "") + f"which recipe: size {label}, {what}", fontsize=10)
    out = Path(out)
    save_figure(fig, out)
    return out
