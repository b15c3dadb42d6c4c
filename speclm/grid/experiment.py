"""The experiment grid: every method x domain x size, pretrained, specialized, evaluated.

For each (method, domain, size) the grid specializes the method (which pretrains first
when needed: once per run for shared pretraining, once per domain for SLM-is/SLM-dsir),
evaluates the specialized small model on the domain's test split, and appends one row to
``eval/<name>.jsonl``:

    method, domain, size, train_tokens, nll, ppl,
    cost: {generic: {...}, specialization: {...}}   (tokens, flops, device_hours, wall_seconds)
    extra: what the method reports (expert choice, effective sample size, ...)

Rows carry a hash of the config; rows already present with the same hash are skipped, so
a killed grid resumes where it stopped. After every row the markdown table
``eval/<name>.md`` is rewritten (:mod:`speclm.results`): per-domain perplexity and the macro average
(exp of the mean per-domain NLL, PAPER.md §3) for every method and size, with costs.

Cost split (PAPER.md Eq. 1): a method with shared pretraining pays its pretraining once
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
from ..core.config import to_dict
from ..core.errors import SpeclmError
from ..core.manifest import hash_obj
from .results import grid_rows, order_methods, write_table
from ..core.run import Run

COST_KEYS = ("tokens", "flops", "device_hours", "wall_seconds")
GRID_UNDER_TORCHRUN = (
    "the method grid runs in one process: under torchrun use `speclm run --until clusters` "
    "(the embedding is shared over the ranks), then run `speclm grid` without torchrun"
)

def config_hash(run: Run) -> str:
    """What makes a row stale: every config section except the preset's name."""
    d = to_dict(run.config)
    d.pop("name", None)
    return hash_obj(d)[:16]


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


def evaluate_model(run: Run, ckpt: Path, domain: str) -> dict:
    """Mean per-token NLL of a specialized checkpoint on the domain's test split."""
    from ..train.validate import mean_nll
    from ..tokens.shards import TokenShards
    from ..train.checkpoint import load_transformer

    model = load_transformer(ckpt)
    t = run.config.train
    nll, n = mean_nll(model, TokenShards(run.tokens_dir).windows(domain, "test"), batch_size=t.batch_size,
                      max_windows=run.config.methods.eval_max_windows, dtype=t.dtype, progress=True,
                      desc=f"eval {domain}")
    return {"nll": nll, "tokens": n, "params": model.param_count()}


def run_grid(
    run: Run,
    methods: Optional[list[str]] = None,
    domains: Optional[list[str]] = None,
    sizes: Optional[list[str]] = None,
    name: str = "results",
    log: Callable[[str], None] = print,
    workers: int = 0,
    executor: str = "",
) -> Path:
    from ..methods import base, inputs
    from ..methods.sizes import size_label
    from ..core.ranks import env_rank_world

    if env_rank_world()[1] > 1:
        raise SpeclmError(GRID_UNDER_TORCHRUN)
    ctx = base.Context(run=run, log=log)
    methods = order_methods(methods or base.known())
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
    run.save_config()

    chash = config_hash(run)
    results = run.eval_dir / f"{name}.jsonl"
    _repair(results)
    table = run.eval_dir / f"{name}.md"
    done = set(grid_rows(results, chash))
    # size-major: a grid stopped early still has every method and domain at the first sizes
    todo = [(m, d, s) for s in sizes for m in methods for d in domains if (m, d, s) not in done]
    log(f"grid: {len(methods)} methods x {len(domains)} domains x {len(sizes)} sizes; {len(todo)} rows to do")
    from .executor import run_graph

    def on_row(row: dict) -> None:
        write_table(results, table, chash)
        _plot(results, chash, log)
        log(f"grid: {row['method']} / {row['domain']} / {row['size']}: ppl {row['ppl']:.2f} ({row['grid_seconds']:.0f} s)")

    spec = {"run": str(run.path), "name": name, "config": chash}
    run_graph(ctx, todo, spec, grid_job, on_row, workers=workers or run.config.methods.grid_workers,
              engine=executor or run.config.methods.grid_executor, log=log)
    write_table(results, table, chash)
    _plot(results, chash, log)
    return table


def compute_row(run: Run, ctx, m: str, d: str, s: str, chash: str) -> dict:
    """One row of the grid: specialize method ``m`` on domain ``d`` at size ``s`` (its
    pretraining is already done or done here), evaluate it, and return the row."""
    from ..methods import base
    from ..train.cost import read_cost

    objs = {m: base.get(m)}
    obj = objs[m]
    t0 = time.perf_counter()
    ctx.log(f"grid: {m} / {d} / {s}")
    out = Path(obj.specialize(ctx, d, s))
    ev = evaluate_model(run, out, d)
    cost_doc = read_cost(out)
    row = {
        "method": m,
        "domain": d,
        "size": s,
        "config": chash,
        "nll": float(ev["nll"]),
        "ppl": float(math.exp(ev["nll"])),
        "eval_tokens": int(ev["tokens"]),
        "inference_params": int(ev["params"]),
        "cost": split_costs(cost_doc, obj.shared_pretraining),
        "shared_pretraining": obj.shared_pretraining,
        "small_at_inference": obj.small_at_inference,
        "checkpoint": str(out.relative_to(run.path)) if out.is_relative_to(run.path) else str(out),
        "extra": _extra(out),
    }
    row["grid_seconds"] = time.perf_counter() - t0
    return row


_CONTEXTS: dict = {}


def grid_job(job: dict, ctx=None) -> Optional[dict]:
    """Run one job of the grid's graph (:mod:`speclm.grid.executor`) in this process, under
    the file lock of its job folder: ``pretrain`` (method, domain or None), ``specialize``
    (no row: a job another method reads, e.g. SLM-d's teacher) or ``row`` (specialize,
    evaluate, append the row to ``eval/<name>.jsonl``). ``job['wait']`` False: return
    ``{"busy": True}`` at once when another process holds the lock. A plain dict in, the row (or None)
    out, so it runs alike in this process (``ctx`` given), a worker process or a cluster
    worker (the run is opened once per process; log lines carry the process id)."""
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
    obj = base.get(m)
    folder = ctx.pretrain_dir(m, d) if kind == "pretrain" else ctx.specialize_dir(m, d, s)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(locks.hold(folder, f"{kind} {m}" + "".join(f" / {x}" for x in (d, s) if x),
                                      wait=job.get("wait", True), log=ctx.log))
    except SpeclmError:
        if job.get("wait", True):
            raise
        return {"busy": True}  # another process runs it; the executor tries other jobs first
    with lock:
        if kind == "pretrain":
            obj.pretrain(ctx, d)
            return None
        if kind == "specialize":
            obj.specialize(ctx, d, s)
            return None
        results = run.eval_dir / f"{job['name']}.jsonl"
        if (m, d, s) in grid_rows(results, job["config"]):  # another grid process did it meanwhile
            ctx.log(f"grid: {m} / {d} / {s}: already in {results.name}")
            return None
        row = compute_row(run, ctx, m, d, s, job["config"])
        atomic.append_jsonl(results, row)
        return row


def _plot(results: Path, chash: str, log: Callable[[str], None]) -> None:
    """Redraw eval/<name>.png and <name>-domains.png (speclm/experiment_plots.py). The
    pictures are derived from the rows and redrawn at the next row, so a failure to draw
    is reported, not allowed to stop the grid."""
    from .plots import plot_grid

    try:
        plot_grid(results, chash)
    except Exception as e:  # noqa: BLE001 - a report, not a result
        log(f"grid: could not draw the plots: {type(e).__name__}: {e}")


def _repair(results: Path) -> None:
    """Drop a torn last line (a grid killed while appending), so new rows start clean."""
    if results.exists():
        data = results.read_bytes()
        if data and not data.endswith(b"\n"):
            import json

            rows = atomic.read_jsonl(results)
            atomic.write_text(results, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def _extra(out: Path) -> dict:
    """What the method reported about this specialization (its job's summary)."""
    from ..core import manifest

    return manifest.job_summary(out.parent) if manifest.is_done(out.parent) else {}
