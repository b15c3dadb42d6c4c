"""The grid as a graph of jobs, run by an executor: this process, N local worker processes,
or a Ray cluster.

Jobs (plain dicts, so they cross process boundaries as data, never as pickled files):

    pretrain    method, domain (None for a shared pretraining; one per domain for
                SLM-is / SLM-dsir): runs ``method.pretrain``, exactly once per folder
    specialize  method, domain, size, no row: a specialization another method reads
                (SLM-d's LLM teacher when ``llm`` is not in the grid)
    row         method, domain, size: specialize, evaluate, append the row
    curve       method, domain, size, fraction: the same from the pretraining's snapshot at
                that fraction, its row appended to eval/curves.jsonl (speclm.grid.curves)

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
from typing import Callable

from ..core.errors import SpeclmError

ENGINES = ("local", "ray")
RETRIES = 2
BUSY = {"busy": True}  # what a job returns, with ``wait: False``, when another process holds its lock


def _units(method: str) -> tuple[str, ...]:
    from ..methods import base

    obj = base.get(method)
    uses = getattr(obj, "pretrains", None)
    return tuple(uses) if uses is not None else (getattr(obj, "pretrain_from", None) or method,)


def plan_graph(todo: list[tuple], curves: list[tuple] = ()) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Jobs (id -> job dict, in a runnable order: pretrainings, then specializations and
    rows size-major as ``todo``, then the curve points) and each job's dependencies (ids).

    ``curves`` holds (method, domain, size, fraction) points of operating curves (seed 0):
    each a ``curve`` job after the method's pretrainings.

    ``todo`` holds (method, domain, size, seed) rows (a 3-tuple is seed 0). Each seed has
    its own pretrainings (``Run.with_seed``); a per-domain pretraining (SLM-is, SLM-dsir) is
    one job per (domain, size), since its histogram is the specialization set's."""
    from ..methods import base

    todo = [tuple(t) if len(t) == 4 else (*t, 0) for t in todo]
    jobs: dict[str, dict] = {}
    deps: dict[str, list[str]] = {}
    tag = lambda i: f"@{i}" if i else ""  # noqa: E731
    rows = {f"row:{m}/{d}/{s}{tag(i)}" for m, d, s, i in todo}

    def pretrain_ids(m: str, d: str, s: str, i: int) -> list[str]:
        out = []
        for u in _units(m):
            per_domain = base.get(u).needs_domain_for_pretrain
            dom, size = (d, s) if per_domain else (None, None)
            jid = f"pretrain:{u}" + (f"/{dom}/{size}" if per_domain else "") + tag(i)
            jobs.setdefault(jid, {"kind": "pretrain", "method": u, "domain": dom, "size": size, "seed": i})
            deps.setdefault(jid, [])
            out.append(jid)
        return out

    for m, d, s, i in todo:  # pretrainings first, in the order rows need them
        pretrain_ids(m, d, s, i)
        for u in getattr(base.get(m), "specialize_uses", ()):
            pretrain_ids(u, d, s, i)
    for m, d, s, i in todo:
        need = pretrain_ids(m, d, s, i)
        for u in getattr(base.get(m), "specialize_uses", ()):
            uid = f"row:{u}/{d}/{s}{tag(i)}"
            if uid not in rows:
                uid = f"specialize:{u}/{d}/{s}{tag(i)}"
                jobs.setdefault(uid, {"kind": "specialize", "method": u, "domain": d, "size": s, "seed": i})
                deps[uid] = pretrain_ids(u, d, s, i)
            need.append(uid)
        jid = f"row:{m}/{d}/{s}{tag(i)}"
        jobs[jid] = {"kind": "row", "method": m, "domain": d, "size": s, "seed": i}
        deps[jid] = need
    for m, d, s, f in curves:
        need = pretrain_ids(m, d, s, 0)
        jid = f"curve:{m}/{d}/{s}/f-{f!r}"
        jobs[jid] = {"kind": "curve", "method": m, "domain": d, "size": s, "seed": 0, "fraction": f}
        deps[jid] = need
    return jobs, deps


def run_graph(
    ctx,
    todo: list[tuple],
    spec: dict,
    job_fn: Callable,
    on_row: Callable[[dict], None],
    workers: int = 1,
    engine: str = "local",
    retries: int = RETRIES,
    log: Callable[[str], None] = print,
    curves: list[tuple] = (),
) -> None:
    """Run the grid's jobs (``curves``: the curve points, :func:`plan_graph`). ``job_fn(job, ctx=None)`` runs one job (``spec`` plus the job's
    fields, a plain dict) and returns its row, None, or BUSY when ``job['wait']`` is False
    and another process holds the job's lock (the job is tried again after the other ready
    jobs, then waits). It must be a module-level function, so worker processes import it by
    name. ``workers=1`` with ``engine='local'`` runs every job in this process, in order."""
    if engine not in ENGINES:
        raise SpeclmError(f"unknown executor {engine!r} (--executor, methods.grid_executor); known: {', '.join(ENGINES)}")
    if workers < 1:
        raise SpeclmError(f"workers (--workers, methods.grid_workers) must be at least 1, got {workers}")
    jobs, deps = plan_graph(todo, curves)
    if not jobs:
        return
    payload = {jid: {**spec, **job} for jid, job in jobs.items()}
    if engine == "local" and workers == 1:
        pool = _InlinePool(ctx)
    else:
        pool = _RayPool(workers, retries) if engine == "ray" else _LocalPool(workers)
        log(f"grid: {len(jobs)} jobs on {workers} {engine} workers")
    try:
        _schedule(pool, job_fn, payload, deps, on_row, workers, retries, log)
    finally:
        pool.close()


def _progress(total: int):
    """One bar over every job of the grid: done / total, the jobs running, the time left
    from the measured rate (tqdm's estimate; pretrainings come first, so it is pessimistic
    early on)."""
    from ..core.progress import progress

    return progress(total, desc="grid jobs", unit="job", leave=True)


def _schedule(pool, job_fn, payload, deps, on_row, workers, retries, log) -> None:
    bar = _progress(len(payload))
    try:
        _run_jobs(pool, job_fn, payload, deps, on_row, workers, retries, log, bar)
    finally:
        bar.close()


def _run_jobs(pool, job_fn, payload, deps, on_row, workers, retries, log, bar) -> None:
    pending = list(payload)
    done: set[str] = set()
    running: dict = {}  # handle -> job id
    tries: dict[str, int] = {}
    busy: set[str] = set()  # found locked by another process once: the next try waits
    while pending or running:
        for jid in list(pending):
            if len(running) >= workers:
                break
            if all(d in done for d in deps[jid]):
                pending.remove(jid)
                running[pool.submit(job_fn, {**payload[jid], "wait": jid in busy})] = jid
        bar.set_postfix_str(f"running {', '.join(sorted(running.values()))}"[:120], refresh=True)
        if not running:
            raise SpeclmError(f"grid: jobs {', '.join(pending)} wait on jobs that cannot run")
        died = []
        for h in pool.wait_any(list(running)):
            jid = running.pop(h)
            try:
                row = pool.result(h)
            except WorkerDied:
                died.append(jid)
                continue
            except BaseException:
                pool.close()
                raise
            if row == BUSY and jid not in busy:  # another process holds it: do other jobs first
                busy.add(jid)
                pending.append(jid)
                continue
            done.add(jid)
            bar.update(1)
            if row and row != BUSY:
                on_row(row)
        for jid in reversed(died):
            tries[jid] = tries.get(jid, 0) + 1
            if tries[jid] > retries:
                raise SpeclmError(f"grid: job {jid}: its worker died {tries[jid]} times; see the log above")
            log(f"grid: job {jid}: its worker died; retry {tries[jid]} of {retries} (resumes from its checkpoint)")
            pending.insert(0, jid)


class WorkerDied(Exception):
    """The process running a job died (killed, out of memory): the job is run again."""


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class _InlinePool:
    """One worker: this process, in order (``workers=1``); nothing to retry."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def submit(self, fn, job):
        from concurrent.futures import Future

        f = Future()
        f.set_result(fn(job, ctx=self.ctx))  # an exception propagates at once, as before
        return f

    def wait_any(self, handles):
        return handles

    def result(self, h):
        return h.result()

    def close(self) -> None:
        pass


def _worker_main(conn, threads: int) -> None:
    """A local worker: run the jobs its pipe sends, one at a time, and send back the row
    (or the exception); ``None`` ends it. When the grid process dies, the worker stops within
    seconds (at its job's next training step, else after a grace period): its job's locks are
    released and the job resumes from its checkpoint at the next ``speclm grid``; no traceback."""
    from ..core import ranks

    _init_worker(threads)
    ranks.watch_parent()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the grid process is gone (or closed the pipe)
            ranks.quiet_exit(0)
        if msg is None:
            return
        fn, job = msg
        try:
            out = ("ok", fn(job))
        except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
            if ranks.parent_gone():
                ranks.quiet_exit(ranks.PARENT_GONE_EXIT)
            out = ("err", e)
        try:
            conn.send(out)
        except (BrokenPipeError, ConnectionError, EOFError):  # nobody to send it to
            ranks.quiet_exit(ranks.PARENT_GONE_EXIT)
        except Exception:  # noqa: BLE001 - an exception that does not cross processes: its text does
            try:
                conn.send(("err", RuntimeError(f"{type(out[1]).__name__}: {out[1]}")))
            except (BrokenPipeError, ConnectionError, EOFError):
                ranks.quiet_exit(ranks.PARENT_GONE_EXIT)


class _LocalPool:
    """``workers`` fresh processes (multiprocessing 'spawn'), each with its share of the
    CPU threads and its own pipe. A worker that dies loses only its own job; a new worker
    takes its place."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.mp = multiprocessing.get_context("spawn")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = max(1, cores // workers)
        self.slots = [self._start() for _ in range(workers)]
        self.busy: dict[int, int] = {}  # handle -> slot
        self.next = 0

    def _start(self):
        parent, child = self.mp.Pipe()
        proc = self.mp.Process(target=_worker_main, args=(child, self.threads), daemon=False)
        proc.start()
        child.close()
        return proc, parent

    def submit(self, fn, job):
        slot = next(i for i in range(len(self.slots)) if i not in self.busy.values())
        self.next += 1
        self.busy[self.next] = slot
        try:
            self.slots[slot][1].send((fn, job))
        except (BrokenPipeError, OSError):
            pass  # the worker is dead already: wait_any reports it
        return self.next

    def wait_any(self, handles):
        from multiprocessing.connection import wait

        by = {}
        for h in handles:
            proc, conn = self.slots[self.busy[h]]
            by[conn] = by[proc.sentinel] = h
        return list(dict.fromkeys(by[x] for x in wait(list(by))))

    def result(self, h):
        slot = self.busy.pop(h)
        proc, conn = self.slots[slot]
        try:
            if conn.poll():
                status, out = conn.recv()
                if status == "err":
                    raise out
                return out
        except (EOFError, OSError):
            pass
        proc.join(5)
        conn.close()
        self.slots[slot] = self._start()
        raise WorkerDied()

    def close(self) -> None:
        """Let the running jobs finish (their results stay on disk), then stop the workers."""
        for proc, conn in self.slots:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc, conn in self.slots:
            proc.join()
            conn.close()
        self.slots = []


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

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
