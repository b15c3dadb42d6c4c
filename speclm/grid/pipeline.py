"""``speclm run``: every stage in order on one run folder; finished stages are skipped.

Under ``torchrun`` (WORLD_SIZE > 1) the data stages are safe to start on every rank: rank 0
builds the corpus and the tokens while the others wait, then they read what it wrote; the
clusters stage shares the embedding over the ranks; only rank 0 prints. The method grid
runs in one process, so ``--until grid`` under torchrun is refused before any work.
"""

from __future__ import annotations



STAGES = ("corpus", "tokens", "clusters", "grid")


class StageClock:
    """Wall and CPU time of each stage (CPU: this process's threads plus its finished child
    processes, e.g. the grid's workers), so a stage that leaves a core idle shows it."""

    def __init__(self):
        self.times: dict[str, dict[str, float]] = {}

    @staticmethod
    def _cpu() -> float:
        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def __call__(self, name: str, build):
        import time

        t0, c0 = time.perf_counter(), self._cpu()
        out = build()
        wall, cpu = time.perf_counter() - t0, self._cpu() - c0
        self.times[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
        return out

    def line(self, name: str) -> str:
        import os

        t = self.times[name]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = t["cpu_s"] / t["wall_s"] if t["wall_s"] > 0 else 0.0
        return f"time: {name} {t['wall_s']:.1f} s wall, {t['cpu_s']:.1f} s CPU ({busy:.2f} of {cores} cores busy)"


def run_pipeline(run, force: bool = False, echo=None, until: str = "clusters", workers: int = 0, executor: str = "") -> dict:
    """Run the stages in order up to ``until`` (one of STAGES) and return their summaries.

    ``until="grid"`` also runs the method grid (pretrain, specialize, evaluate every
    method x domain x size; see speclm.experiment), which is what ``speclm run`` does.
    """
    from ..core.errors import SpeclmError

    if until not in STAGES:
        raise SpeclmError(f"unknown stage {until!r}; known: {', '.join(STAGES)}")
    last = STAGES.index(until)
    from .experiment import GRID_UNDER_TORCHRUN
    from ..core.ranks import env_rank_world

    rank, world = env_rank_world()
    if world > 1 and until == "grid":
        raise SpeclmError(GRID_UNDER_TORCHRUN)
    from ..train.logger import check_logger

    check_logger(run.config.train.logger)  # before the first stage, not at the first training job
    from ..corpus.stage import build_corpus
    from ..corpus.store import format_summary
    from ..tokens.stage import build_tokens, format_tokens_summary

    echo = (echo or (lambda text: None)) if rank == 0 else (lambda text: None)
    clock = StageClock()
    summary = {"corpus": clock("corpus", lambda: _rank0_first(lambda: build_corpus(run, force=force), rank, world)),
               "times": clock.times}
    echo(format_summary(summary["corpus"]))
    echo(clock.line("corpus"))
    if last < 1:
        return summary
    from ..corpus.overlap import format_report
    from ..corpus.overlap_stage import apply_overlap

    summary["overlap"] = clock("overlap", lambda: _rank0_first(lambda: apply_overlap(run, force=force), rank, world))
    echo(format_report(summary["overlap"]))
    echo(clock.line("overlap"))
    summary["tokens"] = clock("tokens", lambda: _rank0_first(lambda: build_tokens(run, force=force), rank, world))
    echo(format_tokens_summary(summary["tokens"]))
    echo(clock.line("tokens"))
    if last < 2:
        return summary
    from ..clusters.stage import build_clusters, format_summary as format_clusters_summary

    summary["clusters"] = clock("clusters", lambda: build_clusters(run, force=force))
    echo(format_clusters_summary(summary["clusters"]))
    echo(clock.line("clusters"))
    if last < 3:
        return summary
    from .experiment import run_grid

    warn_data(run)
    table = clock("grid", lambda: run_grid(run, log=echo, workers=workers, executor=executor))
    summary["grid"] = str(table)
    echo(table.read_text(encoding="utf-8"))
    echo(clock.line("grid"))
    echo(f"results: {table} (one row per method, domain and size: {table.with_suffix('.jsonl')})")
    from ..report.page import write_report

    report = write_report(run)
    summary["report"] = str(report)
    echo(f"report: {report.with_suffix('.html').resolve().as_uri()} (the paper's findings, checked; also {report.name})")
    first = report_first_line(report)
    if first:
        echo(f"report: {first}")
    try:
        for line in run_summary(run):
            echo(line)
    except SpeclmError as e:  # e.g. nothing complete yet: the grid's results stand without it
        echo(f"plan: {e}")
    return summary


def warn_data(run) -> None:
    """Before training: the pretraining against the data (speclm.grid.budgeting.data_warnings), on stderr."""
    import sys

    from .budgeting import data_warnings, fresh_shards

    for w in data_warnings(run, fresh_shards(run)):
        print(f"speclm: warning: {w}", file=sys.stderr)


def report_first_line(report) -> str:
    """The report's verdict on the run (its first line of text after the title)."""
    try:
        lines = report.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    return next((x.strip() for x in lines if x.strip() and not x.startswith("#")), "")


def _rank0_first(build, rank: int, world: int):
    """Rank 0 builds while the other ranks wait; then they run ``build`` too, which finds
    the stage fresh (its manifest matches) and only reads the summary. A failure on rank 0
    ends the job (torchrun stops the other ranks)."""
    if world <= 1:
        return build()
    from ..core.ranks import wait_all

    if rank == 0:
        out = build()
        wait_all(world)
        return out
    wait_all(world)
    return build()


def run_summary(run, name: str = "results") -> list[str]:
    """What ``speclm run`` prints after the grid: the recommendation for one domain at the
    largest size every method has, its crossover, and eval/plan.png (N and budget free)."""
    from ..report.plan import default_size, load_rows, recommend
    from ..report.plan_picture import plan_picture
    from ..report.plots import run_title

    from ..core.errors import SpeclmError
    from .recommended import recommendation_lines, write_recommended

    rows, results = load_rows(run, name)
    size = default_size(rows)
    rec = recommend(rows, size, 1)
    png = plan_picture(rows, size, results.parent / "plan.png", title=run_title(results))
    lines = [f"plan (size {size}, small at inference): best perplexity {rec.method} ({rec.ppl:.2f})"]
    if rec.crossover:
        lines.append(f"plan: {rec.crossover}")
    try:
        doc = write_recommended(run, rows, rec.method, size, "this run's grid: best perplexity at its largest common size")
        lines += recommendation_lines(doc, run.path)
    except SpeclmError as e:
        lines.append(f"recommended checkpoint: none ({e})")
    lines.append(f"plan: {png}; for your budgets: speclm plan --run {run.path} --n-domains N --budget B")
    from ..report.regime import regime_lines, run_premises

    return lines + regime_lines(run_premises(run, name), 1)
