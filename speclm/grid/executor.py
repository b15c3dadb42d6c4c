"""The grid as a graph of jobs, run by an executor: this process, N local worker processes,
or a Ray cluster.

Jobs (plain dicts, so they cross process boundaries as data, never as pickled files):

    pretrain    method, domain (None for a shared pretraining; one per domain for
                SLM-is / SLM-dsir): runs ``method.pretrain``, exactly once per folder
    specialize  method, domain, size, no row: a specialization another method reads
                (SLM-d's LLM teacher when ``llm`` is not in the grid)
    row         method, domain, size: specialize, evaluate, append the row

A row depends on the pretrainings its method runs (``Method.pretrains``, default itself
or ``pretrain_from``) and on the specializations it reads (``Method.specialize_uses``).
Every job runs under the file lock of its job folder (:mod:`speclm.core.locks`), so two
``speclm grid`` processes, on one machine or on nodes sharing a file system, never run the
same job at once: the second waits, then finds it done. A job whose worker process dies
is run again (up to ``retries`` times); the training loop resumes from the job folder's
``checkpoint/``. Rows are appended to ``eval/<name>.jsonl`` by the job; ``on_row`` (the
table and plots) runs in this process.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from ..core.errors import SpeclmError

ENGINES = ("local", "ray")
RETRIES = 2


def _units(method: str) -> tuple[str, ...]:
    from ..methods import base

    obj = base.get(method)
    uses = getattr(obj, "pretrains", None)
    return tuple(uses) if uses is not None else (getattr(obj, "pretrain_from", None) or method,)


def plan_graph(todo: list[tuple[str, str, str]]) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Jobs (id -> job dict, in a runnable order: pretrainings, then specializations and
    rows size-major as ``todo``) and each job's dependencies (ids)."""
    from ..methods import base

    jobs: dict[str, dict] = {}
    deps: dict[str, list[str]] = {}
    rows = {f"row:{m}/{d}/{s}" for m, d, s in todo}

    def pretrain_ids(m: str, d: str) -> list[str]:
        out = []
        for u in _units(m):
            dom = d if base.get(u).needs_domain_for_pretrain else None
            jid = f"pretrain:{u}" + (f"/{dom}" if dom else "")
            jobs.setdefault(jid, {"kind": "pretrain", "method": u, "domain": dom, "size": None})
            deps.setdefault(jid, [])
            out.append(jid)
        return out

    for m, d, s in todo:  # pretrainings first, in the order rows need them
        pretrain_ids(m, d)
        for u in getattr(base.get(m), "specialize_uses", ()):
            pretrain_ids(u, d)
    for m, d, s in todo:
        need = pretrain_ids(m, d)
        for u in getattr(base.get(m), "specialize_uses", ()):
            uid = f"row:{u}/{d}/{s}"
            if uid not in rows:
                uid = f"specialize:{u}/{d}/{s}"
                jobs.setdefault(uid, {"kind": "specialize", "method": u, "domain": d, "size": s})
                deps[uid] = pretrain_ids(u, d)
            need.append(uid)
        jid = f"row:{m}/{d}/{s}"
        jobs[jid] = {"kind": "row", "method": m, "domain": d, "size": s}
        deps[jid] = need
    return jobs, deps


def run_graph(
    ctx,
    todo: list[tuple[str, str, str]],
    spec: dict,
    job_fn: Callable,
    on_row: Callable[[dict], None],
    workers: int = 1,
    engine: str = "local",
    retries: int = RETRIES,
    log: Callable[[str], None] = print,
) -> None:
    """Run the grid's jobs. ``job_fn(job, ctx=None)`` runs one job (``spec`` plus the job's
    fields, a plain dict) and returns its row or None; it must be a module-level function,
    so worker processes import it by name. ``workers <= 1`` with ``engine='local'`` runs
    every job in this process, in order."""
    if engine not in ENGINES:
        raise SpeclmError(f"unknown executor {engine!r}; known: {', '.join(ENGINES)}")
    if workers < 1:
        raise SpeclmError(f"--workers must be at least 1, got {workers}")
    jobs, deps = plan_graph(todo)
    if not jobs:
        return
    payload = {jid: {**spec, **job} for jid, job in jobs.items()}
    if engine == "local" and workers == 1:
        for jid in jobs:
            row = job_fn(payload[jid], ctx=ctx)
            if row:
                on_row(row)
        return
    pool = _RayPool(workers, retries) if engine == "ray" else _LocalPool(workers)
    log(f"grid: {len(jobs)} jobs on {workers} {engine} workers")
    try:
        _schedule(pool, job_fn, payload, deps, on_row, workers, retries, log)
    finally:
        pool.close()


def _schedule(pool, job_fn, payload, deps, on_row, workers, retries, log) -> None:
    pending = list(payload)
    done: set[str] = set()
    running: dict = {}  # handle -> job id
    tries: dict[str, int] = {}
    while pending or running:
        for jid in list(pending):
            if len(running) >= workers:
                break
            if all(d in done for d in deps[jid]):
                pending.remove(jid)
                running[pool.submit(job_fn, payload[jid])] = jid
        if not running:
            raise SpeclmError(f"grid: jobs {', '.join(pending)} wait on jobs that cannot run")
        died, unstarted = [], []
        for h in pool.wait_any(list(running)):
            jid = running.pop(h)
            try:
                row = pool.result(h)
            except WorkerDied as e:
                (died if e.started else unstarted).append(jid)
                continue
            except BaseException:
                pool.close()
                raise
            done.add(jid)
            if row:
                on_row(row)
        if died or unstarted:
            died += [running.pop(h) for h in pool.lost(list(running))]
            pool.restart()
            pending[:0] = unstarted
            for jid in reversed(died):
                tries[jid] = tries.get(jid, 0) + 1
                if tries[jid] > retries:
                    raise SpeclmError(f"grid: job {jid}: its worker died {tries[jid]} times; see the log above")
                log(f"grid: job {jid}: its worker died; retry {tries[jid]} of {retries} (resumes from its checkpoint)")
                pending.insert(0, jid)


class WorkerDied(Exception):
    """The process running a job died (killed, out of memory): the job is run again.
    ``started=False``: the pool broke before the job reached a worker (not a try)."""

    def __init__(self, started: bool = True) -> None:
        super().__init__()
        self.started = started


class _NotStarted(Exception):
    pass


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class _LocalPool:
    """``workers`` fresh processes (multiprocessing 'spawn'), each with its share of the
    CPU threads. A dead worker breaks the whole pool (concurrent.futures): its running jobs
    are all reported lost and retried in a new pool."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = self._make()

    def _make(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads,))

    def submit(self, fn, job):
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.pool.submit(fn, job)
        except BrokenProcessPool:  # a worker died since the last wait: report it at the next one
            f = Future()
            f.set_exception(_NotStarted())
            return f

    def wait_any(self, handles):
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(handles, return_when=FIRST_COMPLETED)[0]

    def result(self, h):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return h.result()
        except BrokenProcessPool:
            raise WorkerDied() from None
        except _NotStarted:
            raise WorkerDied(started=False) from None

    def lost(self, handles):
        return handles  # a broken pool loses every running job

    def restart(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._make()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _ray_job(fn, job):
    import torch

    torch.set_num_threads(1)
    return fn(job)


class _RayPool:
    """Ray tasks, one CPU each: a local Ray (``ray.init(num_cpus=workers)``) or the cluster
    named by ``RAY_ADDRESS``. Ray itself retries a task whose worker died (``max_retries``)."""

    def __init__(self, workers: int, retries: int) -> None:
        try:
            import ray
        except ImportError:
            raise SpeclmError("--executor ray needs Ray: pip install 'speclm[cluster]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if os.environ.get("RAY_ADDRESS"):
                ray.init(include_dashboard=False, log_to_driver=True)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=True)
        self.task = ray.remote(num_cpus=1, max_retries=retries)(_ray_job)

    def submit(self, fn, job):
        return self.task.remote(fn, job)

    def wait_any(self, handles):
        return self.ray.wait(handles, num_returns=1)[0]

    def result(self, h):
        try:
            return self.ray.get(h)
        except self.ray.exceptions.WorkerCrashedError:
            raise WorkerDied() from None
        except self.ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None

    def lost(self, handles):
        return []  # one dead Ray worker loses only its own task

    def restart(self) -> None:
        pass

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
