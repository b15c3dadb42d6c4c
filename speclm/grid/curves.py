"""Operating curves over pretraining cost, the grid's side (docs/paper.md Table 8, Figs. 3-4).

With ``methods.curve_fractions`` and ``methods.curve_methods`` set, the grid adds one
``curve`` job per (curve method of the grid, fraction f, domain, size): it specializes the
method from its pretraining's snapshot at f (speclm.methods.curves, under the run's curve
view :meth:`~speclm.core.run.Run.with_curve`), evaluates it through the results rows' own
code (``speclm.grid.experiment.grid_row``, handed in as ``row_fn``) and appends the row to ``eval/curves.jsonl``
(``eval/<name>-curves.jsonl`` for a grid named otherwise), never to the results file.

A curve row is a results row plus ``pretrain_fraction`` (f) and ``pretrain_step`` (the
snapshot's step; an SLM-mix expert's). Its ``cost.generic`` is the snapshot's share of the
whole pretraining: the finished pretraining's tokens, FLOPs, device-hours and wall seconds
times ``pretrain_step / max_steps``, so it compares with the results rows (fraction 1.0).
``pretrained_nll`` is measured on the snapshot's start checkpoint (for SLM-pn the expert
materialized from the snapshot), ``generic_valid_nll`` on the snapshot's generic model (for
SLM-mix every expert's snapshot on its own cluster's windows, for SLM-pn the snapshot's
projected network routed; ``Method.routed_generic``). The 1.0 points are the
seed-0 results rows of the curve methods, copied in with ``pretrain_fraction`` 1.0 and
``pretrain_step`` the pretraining's steps, so the curves file alone draws every curve.

Rows carry the grid's config hash; a row already present for it is skipped (resume). Every
append happens under the curves file's lock after checking the row is absent, so two grid
processes never write one twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from ..core import atomic, locks
from ..core.run import Run

FRACTION, STEP = "pretrain_fraction", "pretrain_step"
COST_KEYS = ("tokens", "flops", "device_hours", "wall_seconds")  # a row's cost.generic


def curves_path(run: Run, name: str = "results") -> Path:
    return run.eval_dir / ("curves.jsonl" if name == "results" else f"{name}-curves.jsonl")


def curve_methods(run: Run, methods: list[str]) -> list[str]:
    """The grid's methods that have curves (``methods.curve_methods`` in the grid's order)."""
    wanted = set(run.config.methods.curve_methods) if run.config.methods.curve_fractions else set()
    return [m for m in methods if m in wanted]


def curve_rows(path: Path, chash: Optional[str]) -> dict[tuple[str, str, str, float], dict]:
    """The rows of the curves file with config hash ``chash``, one per (method, domain, size, fraction)."""
    return {(r["method"], r["domain"], r["size"], float(r[FRACTION])): r
            for r in atomic.read_jsonl(path) if r.get("config") == chash and FRACTION in r}


def todo(run: Run, methods: list[str], domains: list[str], sizes: list[str], path: Path, chash: str) -> list[tuple]:
    """The curve jobs not yet done: (method, domain, size, fraction), size-major."""
    done = curve_rows(path, chash)
    return [(m, d, s, f) for s in sizes for f in run.config.methods.curve_fractions for m in curve_methods(run, methods)
            for d in domains if (m, d, s, f) not in done]


def append_once(path: Path, row: dict) -> bool:
    """Append ``row`` unless a row of its (method, domain, size, fraction) and config is there."""
    key = (row["method"], row["domain"], row["size"], float(row[FRACTION]))
    with locks.hold(path, f"curves file {path}"):
        if key in curve_rows(path, row["config"]):
            return False
        atomic.append_jsonl(path, row)
        return True


def curve_row(run: Run, obj, m: str, d: str, s: str, f: float, chash: str, log: Callable[[str], None],
              row_fn: Callable) -> dict:
    """Specialize method ``m`` from its pretraining's snapshot at ``f``, evaluate it with
    ``row_fn`` (the results rows' ``grid_row``), and return its curve row (not yet written)."""
    from ..methods import base, curves
    from ..train.cost import read_cost

    view = run.with_curve(f)
    row = row_fn(view, obj, m, d, s, 0, chash, log)
    point = curves.point(base.Context(run=view, log=log), m)
    pre = read_cost(run.pretrain_dir(curves.units(m)[0])).get("pretrain") or {}  # the whole pretraining's cost
    whole = {k: pre.get(k, 0) for k in COST_KEYS}
    share = point["share"]
    generic = {k: whole[k] * share for k in COST_KEYS}
    generic["tokens"] = int(round(whole["tokens"] * share))
    row["cost"] = {**row["cost"], "generic": generic}
    return {**row, FRACTION: f, STEP: point[STEP]}


def final_point(run: Run, m: str, results_row: dict) -> dict:
    """A seed-0 results row as the 1.0 point of its curve."""
    from ..methods import base, curves

    step = curves.point(base.Context(run=run, log=lambda s: None), m)[STEP]
    return {**results_row, FRACTION: 1.0, STEP: step}


def add_final_points(run: Run, methods: list[str], results: Path, name: str, chash: str) -> int:
    """Copy every seed-0 results row of a curve method into the curves file as its 1.0
    point, where it is not there yet; returns how many were added."""
    from ..report.results import seed_rows

    wanted = set(curve_methods(run, methods))
    if not wanted:
        return 0
    path = curves_path(run, name)
    have = curve_rows(path, chash)
    added = 0
    for (m, d, s, seed), r in seed_rows(results, chash).items():
        if seed == 0 and m in wanted and (m, d, s, 1.0) not in have:
            added += append_once(path, final_point(run, m, r))
    return added


def curve_job(run: Run, obj, job: dict, log: Callable[[str], None], row_fn: Callable) -> Optional[dict]:
    """The grid's ``curve`` job (under its folder's lock, in ``speclm.grid.experiment.grid_job``)."""
    m, d, s, f = job["method"], job["domain"], job["size"], float(job["fraction"])
    path = curves_path(run, job["name"])
    if (m, d, s, f) in curve_rows(path, job["config"]):
        log(f"grid: curve {m} / {d} / {s} at {f!r}: already in {path.name}")
        return None
    t0 = time.perf_counter()
    log(f"grid: curve {m} / {d} / {s} from the pretraining's snapshot at {f!r}")
    row = curve_row(run, obj, m, d, s, f, job["config"], log, row_fn)
    row["grid_seconds"] = time.perf_counter() - t0
    return row if append_once(path, row) else None
