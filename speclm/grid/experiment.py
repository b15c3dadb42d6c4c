"""The experiment grid: every method x domain x size, pretrained, specialized, evaluated.

For each (method, domain, size) the grid specializes the method (which pretrains first
when needed: once per run for shared pretraining, once per domain for SLM-is/SLM-dsir),
evaluates the specialized small model on the domain's test split, and appends one row to
``eval/<name>.jsonl``:

    method, domain, size, seed, train_tokens, nll, nll_se, ppl, ppl_lo, ppl_hi, stop, best_step, epochs,
    pretrained_nll, pretrained_nll_se (the start checkpoint, before fine-tuning, on the domain test split),
    generic_valid_nll, generic_valid_nll_se (the generic model on the generic valid split: the start
    checkpoint; for SLM-mix and SLM-pn every expert on its own cluster's windows, with
    generic_valid_routed true and the start checkpoint's value as generic_valid_nll_expert),
    windows (the per-window NLLs kept on disk, speclm.report.stats),
    cost: {generic: {...}, specialization: {...}}   (tokens, flops, device_hours, wall_seconds)
    extra: what the method reports (expert choice, effective sample size, ...)

With ``methods.seeds = N`` (``--seeds N``) every row is computed N times, seed i training
with ``train.seed + i`` in its own job folders (speclm.core.run.Run.with_seed).

Rows carry a hash of the config; rows already present with the same hash are skipped, so
a killed grid resumes where it stopped. After every row the markdown table
``eval/<name>.md`` is rewritten (:mod:`speclm.results`): per-domain perplexity and the macro average
(exp of the mean per-domain NLL, docs/paper.md §3) for every method and size, with costs. The
plots (``eval/<name>.png``) take a second or two each to draw: they are redrawn after a row
only when PLOT_EVERY seconds have passed since the last drawing, and always at the end.

Cost split (docs/paper.md Eq. 1): a method with shared pretraining pays its pretraining once
(C_generic); SLM-is/SLM-dsir pay theirs per domain, so it counts as specialization.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

from ..core import atomic
from ..core.errors import SpeclmError
from ..report.results import order_methods, seed_rows, write_table
from ..core.run import Run
from ..report.rows import config_hash  # noqa: F401 - the grid stamps each row with it

COST_KEYS = ("tokens", "flops", "device_hours", "wall_seconds")
GRID_UNDER_TORCHRUN = (
    "the method grid runs in one process: under torchrun use `speclm run --until clusters` "
    "(the embedding is shared over the ranks), then run `speclm grid` without torchrun"
)

def _phase(doc: dict, phase: str) -> dict:
    p = doc.get(phase) or {}
    return {k: p.get(k, 0) for k in COST_KEYS}


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in COST_KEYS}


def split_costs(cost_doc: dict, shared_pretraining: bool) -> dict:
    """cost.json phases -> the paper's generic / specialization split."""
    pre, spec = _phase(cost_doc, "pretrain"), _phase(cost_doc, "specialize")
    if shared_pretraining:
        return {"generic": pre, "specialization": spec}
    return {"generic": {k: 0 for k in COST_KEYS}, "specialization": _add(pre, spec)}


def evaluate_model(run: Run, ckpt: Path, domain: str, keep: Optional[Path] = None) -> dict:
    """Mean per-token NLL of a specialized checkpoint on the domain's test split, and its
    bootstrap SE over documents (speclm.grid.evaluation); ``keep``: the per-window file."""
    from .evaluation import evaluate_specialized

    return evaluate_specialized(run, ckpt, domain, keep)


def check_seeds(seeds: int) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SpeclmError(f"the seed count must be at least 1, got {seeds}")
    return seeds


def grid_row(run: Run, obj, m: str, d: str, s: str, seed: int, chash: str, log: Callable[[str], None]) -> dict:
    """Specialize method ``m`` for (domain, size) with seed offset ``seed``, evaluate it, and
    return its row (not yet written)."""
    from ..methods import base
    from ..train.cost import read_cost
    from .evaluation import evaluate_routed, evaluate_start, route_start
    from ..report.stats import WINDOWS_FILE, ppl_interval

    srun = run.with_seed(seed)
    ctx = base.Context(run=srun, log=log)
    out = Path(obj.specialize(ctx, d, s))
    folder = ctx.specialize_dir(m, d, s)
    keep = folder / WINDOWS_FILE
    ev = evaluate_model(srun, out, d, keep)
    start = evaluate_start(srun, obj.start_checkpoint(ctx, d, s, folder), d)
    if "generic_valid_nll" in start:  # SLM-mix, SLM-pn: the generic model is every expert, routed
        start = route_start(start, evaluate_routed(srun, obj.routed_generic(ctx)))
    lo, hi, _ = ppl_interval(ev["nll"], ev["nll_se"])
    rel = lambda p: str(p.relative_to(run.path)) if p.is_relative_to(run.path) else str(p)  # noqa: E731
    row = {
        "method": m,
        "domain": d,
        "size": s,
        "seed": seed,
        "train_seed": srun.config.train.seed,
        "config": chash,
        "nll": float(ev["nll"]),
        "nll_se": float(ev["nll_se"]),
        "ppl": float(math.exp(ev["nll"])),
        "ppl_lo": lo,
        "ppl_hi": hi,
        "eval_tokens": int(ev["tokens"]),
        "eval_documents": int(ev["documents"]),
        "windows": rel(keep),
        **start,
        "inference_params": int(ev["params"]),
        "cost": split_costs(read_cost(out), obj.shared_pretraining),
        "shared_pretraining": obj.shared_pretraining,
        "small_at_inference": obj.small_at_inference,
        "checkpoint": rel(out),
        "extra": {**_extra(out), **obj.row_extra(ctx, d, s)},
    }
    ft = row["extra"]  # how the fine-tune stopped (speclm.methods.finetune): early, cap or pretrained
    row.update(stop=ft.get("stop"), best_step=ft.get("best_step"), epochs=ft.get("epochs"))
    return row


def run_grid(
    run: Run,
    methods: Optional[list[str]] = None,
    domains: Optional[list[str]] = None,
    sizes: Optional[list[str]] = None,
    name: str = "results",
    log: Callable[[str], None] = print,
    seeds: Optional[int] = None,
    workers: int = 0,
    executor: str = "",
) -> Path:
    from ..methods import base, inputs
    from ..methods.sizes import size_label
    from ..core.outputs import check_name
    from ..core.ranks import env_rank_world

    check_name(name)

    if env_rank_world()[1] > 1:
        raise SpeclmError(GRID_UNDER_TORCHRUN)
    ctx = base.Context(run=run, log=log)
    methods = order_methods(methods or run.config.methods.grid_methods or base.default_methods())
    objs = {m: base.get(m) for m in methods}  # unknown names fail here, before any work
    all_domains = inputs.domains(ctx)
    domains = domains or all_domains
    for d in domains:
        if d not in all_domains:
            raise SpeclmError(f"unknown domain {d!r}; known: {', '.join(all_domains) or '(none)'}")
    sizes = [size_label(s) for s in (sizes or run.config.methods.sizes)]
    for m, obj in objs.items():
        obj.check(ctx)
        for d in domains:
            inputs.check_domain(ctx, obj, d)
    for d in domains:
        for s in sizes:
            inputs.check_size(ctx, d, s)
    n_seeds = check_seeds(run.config.methods.seeds if seeds is None else seeds)
    from .evaluation import check_bootstrap

    check_bootstrap(run, domains)
    from ..train.budget import check_run_config

    check_run_config(run.config)
    from ..train.logger import check_logger

    check_logger(run.config.train.logger)
    run.save_config()

    chash = config_hash(run)
    results = run.eval_dir / f"{name}.jsonl"
    _repair(results)
    table = run.eval_dir / f"{name}.md"
    done = set(seed_rows(results, chash))
    # size-major: a grid stopped early still has every method and domain at the first sizes
    seeded = run.config.methods.seed_methods
    unknown = sorted(set(seeded) - set(base.known()))
    if unknown:
        raise SpeclmError(f"methods.seed_methods: unknown method(s) {', '.join(unknown)}; known: {', '.join(base.known())}")
    n_of = {m: n_seeds if (not seeded or m in seeded) else 1 for m in methods}
    todo = [(m, d, s, i) for s in sizes for i in range(n_seeds) for m in methods for d in domains
            if i < n_of[m] and (m, d, s, i) not in done]
    from . import curves

    curve_todo = curves.todo(run, methods, domains, sizes, curves.curves_path(run, name), chash)
    log(f"grid: {len(methods)} methods x {len(domains)} domains x {len(sizes)} sizes x {n_seeds} seed(s); "
        f"{len(todo)} rows to do" + (f", {len(curve_todo)} curve points" if curve_todo else ""))
    from .executor import run_graph

    replot = Every(PLOT_EVERY)

    def on_row(row: dict) -> None:
        if curves.FRACTION in row and row["pretrain_fraction"] < 1:  # a curve point: eval/curves.jsonl
            log(f"grid: curve {row['method']} / {row['domain']} / {row['size']} at {row['pretrain_fraction']!r} "
                f"(step {row['pretrain_step']}): ppl {row['ppl']:.2f} ({row['grid_seconds']:.0f} s)")
            return
        write_table(results, table, chash)
        if replot.due():
            _plot(results, chash, log)
        log(f"grid: {row['method']} / {row['domain']} / {row['size']}" + (f" / seed {row['seed']}" if n_seeds > 1 else "")
            + f": ppl {row['ppl']:.2f} [{row['ppl_lo']:.2f}, {row['ppl_hi']:.2f}]"
            + (f", no FT {row['pretrained_ppl']:.2f}" if "pretrained_ppl" in row else "") + f" ({row['grid_seconds']:.0f} s)")

    spec = {"run": str(run.path), "name": name, "config": chash}
    run_graph(ctx, todo, spec, grid_job, on_row, workers=workers or run.config.methods.grid_workers,
              engine=executor or run.config.methods.grid_executor, log=log, curves=curve_todo)
    curves.add_final_points(run, methods, results, name, chash)  # 1.0 points a killed grid had not copied
    write_table(results, table, chash)
    _plot(results, chash, log)
    return table


_CONTEXTS: dict = {}


def grid_job(job: dict, ctx=None) -> Optional[dict]:
    """Run one job of the grid's graph (:mod:`speclm.grid.executor`) in this process, under
    the file lock of its job folder: ``pretrain`` (method, domain or None, and the size for
    a per-domain pretraining, whose histogram comes from the specialization set),
    ``specialize`` (no row: a job another method reads, e.g. SLM-d's teacher) or ``row``
    (specialize, evaluate, append the row to ``eval/<name>.jsonl``); ``seed``: the seed
    offset of the job (``Run.with_seed``). ``job['wait']`` False: return ``{"busy": True}``
    at once when another process holds the lock. A plain dict in, the row (or None) out, so
    it runs alike in this process (``ctx`` given), a worker process or a cluster worker (the
    run is opened once per process; log lines carry the process id)."""
    from ..core import locks
    from ..core.run import open_run
    from ..methods import base

    key = (job["run"], job["config"])
    if ctx is None and key not in _CONTEXTS:
        run = open_run(job["run"], None, [], save=False)
        if config_hash(run) != job["config"]:
            raise SpeclmError(f"{run.path}/config.toml changed while the grid ran (config hash "
                              f"{config_hash(run)}, grid {job['config']}); rerun `speclm grid`")
        pid = os.getpid()
        _CONTEXTS[key] = base.Context(run=run, log=lambda text: print(f"[{pid}] {text}", flush=True))
    ctx = ctx or _CONTEXTS[key]
    run, kind, m, d, s = ctx.run, job["kind"], job["method"], job.get("domain"), job.get("size")
    seed = int(job.get("seed", 0))
    sctx = base.Context(run=run.with_seed(seed), log=ctx.log, force=ctx.force) if seed else ctx
    if kind == "curve":  # a point of an operating curve: its own specialization folder (speclm.grid.curves)
        sctx = base.Context(run=run.with_curve(float(job["fraction"])), log=ctx.log, force=ctx.force)
    obj = base.get(m)
    folder = sctx.pretrain_dir(m, d) if kind == "pretrain" else sctx.specialize_dir(m, d, s)
    what = f"{kind} {m}" + "".join(f" / {x}" for x in (d, s) if x) + (f" / seed {seed}" if seed else "")
    what += f" at {job['fraction']!r}" if kind == "curve" else ""
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(locks.hold(folder, what, wait=job.get("wait", True), log=ctx.log))
    except SpeclmError:
        if job.get("wait", True):
            raise
        return {"busy": True}  # another process runs it; the executor tries other jobs first
    with lock:
        if kind == "pretrain":
            if obj.needs_domain_for_pretrain and s is not None:
                obj.pretrain(sctx, d, s)  # per domain and specialization set (its histogram)
            else:
                obj.pretrain(sctx, d)
            return None
        if kind == "specialize":
            obj.specialize(sctx, d, s)
            return None
        from . import curves

        if kind == "curve":
            return curves.curve_job(run, obj, job, ctx.log, grid_row)
        results = run.eval_dir / f"{job['name']}.jsonl"
        if (m, d, s, seed) in seed_rows(results, job["config"]):  # another grid process did it meanwhile
            ctx.log(f"grid: {m} / {d} / {s} / seed {seed}: already in {results.name}")
            return None
        t0 = time.perf_counter()
        ctx.log(f"grid: {m} / {d} / {s}" + (f" / seed {seed}" if seed else ""))
        row = grid_row(run, obj, m, d, s, seed, job["config"], ctx.log)
        row["grid_seconds"] = time.perf_counter() - t0
        atomic.append_jsonl(results, row)
        if seed == 0 and m in curves.curve_methods(run, [m]):  # the row is also its curve's 1.0 point
            curves.append_once(curves.curves_path(run, job["name"]), curves.final_point(run, m, row))
        return row


PLOT_EVERY = 60.0  # seconds between redrawings of the plots while the grid runs


class Every:
    """``due()`` is True at most once per ``seconds`` (counted from the creation)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.last = clock()

    def due(self) -> bool:
        now = self.clock()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def _plot(results: Path, chash: str, log: Callable[[str], None]) -> None:
    """Redraw eval/<name>.png and <name>-domains.png (speclm/experiment_plots.py). The
    pictures are derived from the rows and redrawn at the next drawing (PLOT_EVERY, and the
    grid's end), so a failure to draw is reported, not allowed to stop the grid."""
    from ..report.plots import plot_grid

    try:
        plot_grid(results, chash)
    except Exception as e:  # noqa: BLE001 - a report, not a result
        log(f"grid: could not draw the plots: {type(e).__name__}: {e}")


def _repair(results: Path) -> None:
    """Drop a torn last line (a grid killed while appending), so new rows start clean."""
    if results.exists():
        import json

        data = results.read_bytes()
        last = next((ln for ln in reversed(data.decode("utf-8", "replace").splitlines()) if ln.strip()), "")
        try:
            whole = isinstance(json.loads(last), dict) if last else True
        except (ValueError, RecursionError):
            whole = False
        if data and (not data.endswith(b"\n") or not whole):
            rows = atomic.read_jsonl(results)
            atomic.write_text(results, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def _extra(out: Path) -> dict:
    """What the method reported about this specialization (its job's summary)."""
    from ..core import manifest

    return manifest.job_summary(out.parent) if manifest.is_done(out.parent) else {}
