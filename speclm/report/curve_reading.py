"""Operating curves over pretraining cost: the grid's ``eval/curves.jsonl`` (docs/paper.md §7,
Table 8 and Figures 3-4), read, checked and interpolated.

Each row of the curves file is a grid row (the results file's fields) of one pretraining
snapshot: ``pretrain_fraction`` (in (0, 1]: the share of the method's full pretraining it
had), ``pretrain_step`` and ``cost.generic`` (the snapshot's own pretraining cost). Rows at
fraction 1.0 are the final checkpoints. Only rows with the run's current config hash count,
as for the results file.

A method's curve is one :class:`Point` per snapshot: its pretraining FLOPs, its generic
valid NLL (Figure 3), the macro NLL before fine-tuning (Figure 4, first panel) and after
fine-tuning at each size (the other panels). :func:`interpolate` reads a curve at a fixed
cost: linear in NLL against log FLOPs between the two nearest measured points, never
outside the measured range (Table 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core import atomic
from ..core.errors import SpeclmError
from .evidence import Estimate, group, macro
from .results import order_methods

CURVES = "curves.jsonl"
HINT = ("No operating curves in this run (eval/curves.jsonl is absent or has no rows for the current config): set "
        "`methods.curve_methods` (e.g. ['slm', 'llm', 'slm-mix', 'slm-pn']) and `methods.curve_fractions` "
        "(e.g. [0.25, 0.5]) and rerun `speclm grid`.")
# A target cost this close (relative) to a curve's cheapest or dearest snapshot reads that
# snapshot: the grid gives the methods one FLOP budget, and their step counts round it apart.
END_TOLERANCE = 0.01


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_row(r: dict) -> Optional[str]:
    """What is wrong with one curves row, or None."""
    for key in ("method", "domain", "size"):
        if not isinstance(r.get(key), str):
            return f"no {key}"
    f = r.get("pretrain_fraction")
    if f is None:
        return "no pretrain_fraction"
    if not _number(f) or not 0 < f <= 1:
        return f"pretrain_fraction {f!r} is outside (0, 1]"
    step = r.get("pretrain_step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        return f"pretrain_step {step!r} is not a whole number >= 0"
    if not _number(r.get("nll")):
        return "no nll"
    generic = (r.get("cost") or {}).get("generic") if isinstance(r.get("cost"), dict) else None
    if not isinstance(generic, dict) or not _number(generic.get("flops")) or generic["flops"] <= 0:
        return "no positive cost.generic.flops"
    return None


def read_curves(path: Path, chash: Optional[str]) -> list[dict]:
    """The rows of ``path`` with config hash ``chash`` (none when the file is absent), the
    last one written per (method, domain, size, fraction); a bad row is a one-line error
    naming the file and line."""
    path = Path(path)
    out: dict[tuple, dict] = {}
    for n, r in atomic.read_jsonl_numbered(path):  # a torn last line skipped, a bad one elsewhere refused
        if r.get("config") != chash:
            continue
        bad = check_row(r)
        if bad:
            raise SpeclmError(f"{path} line {n}: {bad}; delete or repair that line")
        out[(r["method"], r["domain"], r["size"], float(r["pretrain_fraction"]))] = r
    return list(out.values())


def load_curves(run) -> list[dict]:
    """The curves rows of ``run`` computed with its current config."""
    from .rows import config_hash

    return read_curves(run.eval_dir / CURVES, config_hash(run))


@dataclass
class Point:
    """One snapshot of one method: its pretraining cost and what it measures."""

    method: str
    fraction: float
    step: Optional[int]
    flops: float
    generic_nll: Optional[float]
    no_ft: Optional[Estimate]
    ft: dict[str, Optional[Estimate]] = field(default_factory=dict)

    def value(self, what: str) -> Optional[float]:
        """The NLL of ``what``: "generic", "no_ft" or a size."""
        if what == "generic":
            return self.generic_nll
        e = self.no_ft if what == "no_ft" else self.ft.get(what)
        return e.nll if e else None

    def as_dict(self) -> dict:
        return {"method": self.method, "fraction": self.fraction, "step": self.step, "flops": self.flops,
                "generic_nll": self.generic_nll, "no_ft": self.no_ft.__dict__ if self.no_ft else None,
                "ft": {s: (e.__dict__ if e else None) for s, e in self.ft.items()}}


def curve_points(rows: list[dict], domains: list[str], sizes: list[str]) -> dict[str, list[Point]]:
    """method -> its snapshots, cheapest first. Macros need every domain of ``domains``
    (None otherwise); before fine-tuning, the first size whose rows give every domain."""
    out: dict[str, list[Point]] = {}
    for m in order_methods(list(dict.fromkeys(r["method"] for r in rows))):
        mine = [r for r in rows if r["method"] == m]
        for f in sorted({float(r["pretrain_fraction"]) for r in mine}):
            rs = [r for r in mine if float(r["pretrain_fraction"]) == f]
            g = group(rs)
            gen = [float(r["generic_valid_nll"]) for r in rs if _number(r.get("generic_valid_nll"))]
            no_ft = next((e for s in sizes if (e := macro(g, m, s, domains, "pretrained_nll"))), None)
            steps = {r.get("pretrain_step") for r in rs} - {None}
            out.setdefault(m, []).append(Point(
                m, f, max(steps) if steps else None, max(float(r["cost"]["generic"]["flops"]) for r in rs),
                sum(gen) / len(gen) if gen else None, no_ft, {s: macro(g, m, s, domains) for s in sizes}))
        out[m].sort(key=lambda p: p.flops)
    return out


def interpolate(points: list[tuple[float, float]], x: float, tol: float = END_TOLERANCE) -> Optional[float]:
    """The NLL at cost ``x`` from measured (cost, NLL) points: linear in NLL against log cost
    between the two nearest points; a cost within ``tol`` (relative) of the cheapest or
    dearest point reads that point; None outside the measured range (never extrapolated)."""
    pts = sorted((c, y) for c, y in points if c > 0 and y is not None)
    if not pts or x <= 0:
        return None
    (c0, y0), (c1, y1) = pts[0], pts[-1]
    if x < c0:
        return y0 if x >= c0 * (1 - tol) else None
    if x > c1:
        return y1 if x <= c1 * (1 + tol) else None
    for (ca, ya), (cb, yb) in zip(pts, pts[1:]):
        if ca <= x <= cb:
            if cb == ca:
                return ya
            t = (math.log(x) - math.log(ca)) / (math.log(cb) - math.log(ca))
            return ya + t * (yb - ya)
    return y0  # a single point, x equal to it


def target_costs(curves: dict[str, list[Point]]) -> tuple[list[tuple[float, float]], str]:
    """Table 8's fixed costs: (fraction, FLOPs) for every curve fraction, times the SLM's full
    pretraining FLOPs (without an slm curve: the largest cost every method reaches), and
    which base was used."""
    fractions = sorted({p.fraction for ps in curves.values() for p in ps})
    full = {m: ps[-1].flops for m, ps in curves.items() if ps}
    if not full:
        return [], ""
    if "slm" in full:
        base, how = full["slm"], "the slm's full pretraining"
    else:
        base, how = min(full.values()), "the largest pretraining cost every curve reaches"
    return [(f, f * base) for f in fractions], how


def table8(curves: dict[str, list[Point]], sizes: list[str]) -> dict:
    """Per fixed cost and method: the interpolated perplexity of the generic valid split,
    before fine-tuning and at each size (None outside the method's measured range)."""
    costs, how = target_costs(curves)
    rows = []
    for f, x in costs:
        for m, ps in curves.items():
            cells = {}
            for what in ("generic", "no_ft", *sizes):
                nll = interpolate([(p.flops, p.value(what)) for p in ps], x)
                cells[what] = math.exp(nll) if nll is not None else None
            rows.append({"fraction": f, "flops": x, "method": m, "ppl": cells})
    return {"base": how, "rows": rows}


def spearman(xs: list[float], ys: list[float]) -> Optional[float]:
    """Spearman's rank correlation (ties at their mean rank); None under 3 points or without spread."""
    from .stats import ranks, spearman_rho

    if len(xs) < 3 or len(set(ranks(xs))) < 2 or len(set(ranks(ys))) < 2:
        return None
    return spearman_rho(xs, ys)


def swaps(before: dict[str, float], after: dict[str, float]) -> tuple[list[tuple[str, str]], int]:
    """The pairs whose order changes between ``before`` and ``after`` (lower is better), and the pairs compared."""
    names = [n for n in before if n in after]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    out = [(a, b) for a, b in pairs if (before[a] - before[b]) * (after[a] - after[b]) < 0]
    return out, len(pairs)
