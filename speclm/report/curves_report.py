"""The report's section "Operating curves over pretraining cost": the analogues of the
paper's Figure 3 (generic perplexity against pretraining cost), Figure 4 (specialized
perplexity against it, before fine-tuning and at each size) and Table 8 (perplexities
interpolated at fixed pretraining costs), and what the numbers say about two of the
paper's remarks (docs/paper.md §7, Fig. 4): perplexity before fine-tuning as a predictor of
perplexity after it, and whether the head start of slm-mix / slm-pn over slm shrinks as
the specialization set grows. Every number comes from ``eval/curves.jsonl`` and, for the
flat lines of the methods without a generic cost (slm-is, slm-dsir, slm-is-full), the results file.
"""

from __future__ import annotations

from typing import Optional

from .curve_reading import CURVES, END_TOLERANCE, HINT, curve_points, load_curves, spearman, swaps, table8
from .evidence import Estimate, macro

FLAT = ("slm-is", "slm-dsir", "slm-is-full")  # no generic cost: drawn as flat lines (the paper does so for SLM-is)
SHARED = ("slm-mix", "slm-pn")


def curve_facts(run, groups: dict, domains: list[str], sizes: list[str]) -> dict:
    """Every number of the section, as data (``report.json``'s ``curves``)."""
    rows = load_curves(run)
    if not rows:
        return {"rows": 0, "hint": HINT}
    points = curve_points(rows, domains, sizes)
    flat = {}
    for m in FLAT:
        if any(k[0] == m for k in groups):
            pre = next((e for s in sizes if (e := macro(groups, m, s, domains, "pretrained_nll"))), None)
            flat[m] = {"no_ft": pre.__dict__ if pre else None,
                       **{s: (e.__dict__ if (e := macro(groups, m, s, domains)) else None) for s in sizes}}
    t8 = table8(points, sizes)
    facts = {"rows": len(rows), "hint": None, "file": str(run.eval_dir / CURVES), "sizes": sizes,
             "points": {m: [p.as_dict() for p in ps] for m, ps in points.items()}, "flat": flat, "table8": t8}
    facts["predictor"] = predictor(points, t8, sizes)
    facts["head_start"] = head_start(t8, sizes)
    return facts


def common_cost(t8: dict, sizes: list[str]) -> Optional[tuple[float, dict[str, dict]]]:
    """The largest of Table 8's costs at which at least two methods have every column: (FLOPs, method -> ppl cells)."""
    for flops in sorted({r["flops"] for r in t8["rows"]}, reverse=True):
        full = {r["method"]: r["ppl"] for r in t8["rows"] if r["flops"] == flops
                and all(r["ppl"][w] is not None for w in ("no_ft", *sizes))}
        if len(full) >= 2:
            return flops, full
    return None


def predictor(points: dict, t8: dict, sizes: list[str]) -> dict:
    """Does the order before fine-tuning predict the order after it? Spearman's ρ over every
    snapshot with both numbers, per size; and at the largest common cost, the pairs of
    methods whose order changes after fine-tuning at each size."""
    rho = {}
    for s in sizes:
        pairs = [(p.value("no_ft"), p.value(s)) for ps in points.values() for p in ps
                 if p.value("no_ft") is not None and p.value(s) is not None]
        rho[s] = {"rho": spearman([a for a, _ in pairs], [b for _, b in pairs]), "snapshots": len(pairs)}
    out = {"spearman": rho, "cost": None}
    at = common_cost(t8, sizes)
    if at:
        flops, cells = at
        before = {m: c["no_ft"] for m, c in cells.items()}
        out["cost"] = flops
        out["order_no_ft"] = sorted(before, key=before.get)
        out["swaps"] = {}
        for s in sizes:
            sw, n = swaps(before, {m: c[s] for m, c in cells.items()})
            out["swaps"][s] = {"pairs": n, "swapped": [list(x) for x in sw], "order": sorted(cells, key=lambda m: cells[m][s])}
    return out


def head_start(t8: dict, sizes: list[str]) -> dict:
    """At the largest common cost: how much lower (in % of slm's perplexity) slm-mix and
    slm-pn are than slm after fine-tuning at each size, and whether it shrinks from the
    smallest to the largest size."""
    at = common_cost(t8, sizes)
    if not at or "slm" not in at[1]:
        return {}
    flops, cells = at
    out = {"cost": flops, "methods": {}}
    for m in SHARED:
        if m in cells:
            pct = {s: 100 * (1 - cells[m][s] / cells["slm"][s]) for s in sizes}
            out["methods"][m] = {"percent": pct, "shrinks": (pct[sizes[-1]] < pct[sizes[0]]) if len(sizes) > 1 else None}
    return out


# --- rendering ---------------------------------------------------------------------------


def _ppl(e: Optional[dict]) -> str:
    return Estimate(**e).text() if e else "—"


def _cell(v: Optional[float]) -> str:
    return f"{v:.2f}" if v is not None else "—"


def render_curves(cf: dict, figures: dict[str, str], label) -> list[str]:
    """The section's markdown lines; ``label(method)`` marks large models."""
    out = ["## Operating curves over pretraining cost", ""]
    if not cf["rows"]:
        return out + [cf["hint"], ""]
    sizes, points = cf["sizes"], cf["points"]
    snaps = ", ".join(label(m) + " " + "/".join(f"{p['fraction']:g}" for p in ps) for m, ps in points.items())
    out += [f"{cf['rows']} rows of `{CURVES}`: snapshots of each curve method's pretraining, by share of its full "
            f"pretraining ({snaps}), each fine-tuned and evaluated like the grid's final models. Curves are seed 0 "
            f"(their 1.0 points are the seed-0 rows, so they can differ from the tables above where those average "
            f"several seeds).", ""]
    if "fig3" in figures:
        out += ["### Figure 3 analogue: generic perplexity against pretraining cost", "",
                f"![generic perplexity against pretraining cost]({figures['fig3']})", ""]
    if "fig4" in figures:
        flat = ", ".join(cf["flat"])
        out += ["### Figure 4 analogue: specialized perplexity against pretraining cost", "",
                f"![specialized perplexity against pretraining cost]({figures['fig4']})", "",
                "Macro perplexity over the domains; error bars: 95% intervals (bootstrap over test documents, "
                "domains combined in quadrature)." + (f" Flat lines: {flat} (no generic cost; the paper draws SLM-is so)."
                                                      if flat else ""), ""]
    t8 = cf["table8"]
    out += ["### Table 8 analogue: perplexity at fixed pretraining costs", "",
            "| pretraining FLOPs | share | method | generic ppl | spec. ppl, no FT | "
            + " | ".join(f"FT {s}" for s in sizes) + " |", "|---|---|---|---|---|" + "---|" * len(sizes)]
    for r in t8["rows"]:
        c = r["ppl"]
        out.append(f"| {r['flops']:.3e} | {r['fraction']:g} | {label(r['method'])} | {_cell(c['generic'])} | "
                   f"{_cell(c['no_ft'])} | " + " | ".join(_cell(c[s]) for s in sizes) + " |")
    out += ["", f"Costs: each curve share times {t8['base']}. Interpolated linearly in NLL against log pretraining FLOPs "
            f"between the method's two nearest snapshots, never extrapolated: — outside its measured range (a cost "
            f"within {END_TOLERANCE:.0%} of its cheapest or dearest snapshot reads that snapshot).", ""]
    for m, f in cf["flat"].items():
        out += [f"{label(m)} (no generic cost, not in the table): no FT {_ppl(f['no_ft'])}; "
                + "; ".join(f"FT {s} {_ppl(f[s])}" for s in sizes) + ".", ""]
    return out + _remarks(cf, sizes, label)


def _prediction(swapped: int, pairs: int) -> str:
    """How well the pair orders before fine-tuning predict those after it, in words."""
    if not swapped:
        return "predicts the order after it here."
    if 2 * swapped < pairs:
        return "predicts most of the order after it here, not all of it."
    return "does not predict the order after it here."


def _remarks(cf: dict, sizes: list[str], label) -> list[str]:
    out = []
    pr = cf["predictor"]
    rhos = [f"ρ = {v['rho']:+.2f} at {s} ({v['snapshots']} snapshots)" for s, v in pr["spearman"].items()
            if v["rho"] is not None]
    text = ("**Before vs after fine-tuning.** The paper finds perplexity before fine-tuning a poor predictor of "
            "perplexity after it. Here, Spearman's rank correlation between the two over every snapshot: "
            + ("; ".join(rhos) if rhos else "too few snapshots (needs 3)") + ".")
    if pr["cost"] is not None:
        n_sw = sum(len(v["swapped"]) for v in pr["swaps"].values())
        n_pairs = sum(v["pairs"] for v in pr["swaps"].values())
        per = "; ".join(f"FT {s}: {' < '.join(v['order'])}"
                        + (f" ({', '.join('/'.join(p) for p in v['swapped'])} swapped)" if v["swapped"] else "")
                        for s, v in pr["swaps"].items())
        text += (f" At {pr['cost']:.3e} FLOPs (the largest common cost of Table 8) the order before fine-tuning is "
                 f"{' < '.join(pr['order_no_ft'])}; after it, {per}: {n_sw} of {n_pairs} pair orders change, so the "
                 + "order before fine-tuning " + _prediction(n_sw, n_pairs))
    out += [text, ""]
    hs = cf["head_start"]
    if hs and hs["methods"]:
        parts = []
        for m, v in hs["methods"].items():
            nums = ", ".join(f"{v['percent'][s]:+.1f}% at {s}" for s in sizes)
            verdict = ("one size only" if v["shrinks"] is None else
                       f"it {'shrinks' if v['shrinks'] else 'does not shrink'} from {sizes[0]} to {sizes[-1]}")
            parts.append(f"{label(m)} {nums} ({verdict})")
        out += [f"**Head start over slm.** At {hs['cost']:.3e} FLOPs, how much lower than slm's perplexity after "
                f"fine-tuning (positive: ahead of slm): " + "; ".join(parts)
                + ". The paper finds this head start shrinks as the specialization set grows.", ""]
    return out


def draw_curves(cf: dict, out_dir, label) -> dict[str, str]:
    """The section's pictures beside the report: name -> file name (empty without curves)."""
    if not cf["rows"]:
        return {}
    from .curve_figures import figure3, figure4

    figures = {}
    if figure3(cf["points"], out_dir / "report-fig3.png", label):
        figures["fig3"] = "report-fig3.png"
    if figure4(cf["points"], cf["flat"], cf["sizes"], out_dir / "report-fig4.png", label):
        figures["fig4"] = "report-fig4.png"
    return figures
