"""``speclm grid``, ``speclm plan`` and ``speclm run``: the experiment grid, the planner, the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.errors import SpeclmError
from ..core.options import PresetOpt, ReadRunOpt, RunOpt, SetOpt
from ..core.run import open_run


def _split(values: Optional[list[str]]) -> Optional[list[str]]:
    """Accept repeated options and comma-separated lists alike."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def grid_cmd(
    methods: Annotated[Optional[list[str]], typer.Option("--methods", "-m", help="Methods (default: methods.grid_methods, else every known one but the ablations).")] = None,
    domains: Annotated[Optional[list[str]], typer.Option("--domains", help="Domains (default: all).")] = None,
    sizes: Annotated[Optional[list[str]], typer.Option("--sizes", help="Sizes (default: methods.sizes).")] = None,
    name: Annotated[str, typer.Option("--name", help="Results file name under eval/.")] = "results",
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Seeds per row (train.seed + i: data order and initialization; default: methods.seeds).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", help="Jobs at once: worker processes (local) or Ray tasks (default: methods.grid_workers).")] = 0,
    executor: Annotated[str, typer.Option("--executor", help="local (this machine's processes) or ray (the cluster extra: Ray; default: methods.grid_executor).")] = "",
    budget: Annotated[Optional[str], typer.Option("--budget", help="Size the pretraining to a budget before training: FLOPs (3e15) or device-hours on a named device (2h@h100, 0.5h@cpu); sets methods.pretrain_steps.")] = None,
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """The experiment grid: pretrain, specialize and evaluate every method x domain x size.

    One row per (method, domain, size) goes to eval/results.jsonl (rows already there are
    skipped, so a killed grid resumes); the table is eval/results.md.

    \b
    Example:
      speclm grid --run runs/tiny --methods slm,slm-is --domains kjv --sizes 16k -j 2"""
    from ..core.outputs import check_name
    from .experiment import run_grid

    check_name(name)
    r = open_run(run, preset, set_, save=False)
    if budget:
        from .budgeting import budget_override
        from .dryrun import grid_methods

        names = grid_methods(r, _split(methods))
        override, _ = budget_override(r, budget, names, _split(domains), echo=typer.echo)
        r = open_run(run, preset, [*(set_ or []), override], save=False)
    out = run_grid(r, methods=_split(methods), domains=_split(domains), sizes=_split(sizes), name=name, log=typer.echo,
                   seeds=seeds, workers=workers, executor=executor)
    typer.echo(f"results: {out}")


def _is_plan_picture(path: Path) -> bool:
    """A picture ``speclm plan`` wrote before: a PNG drawn by matplotlib (its tEXt chunk says so)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Matplotlib" in head


def plan_cmd(
    domains: Annotated[int, typer.Option("--n-domains", "-n", help="How many domains you will serve (N >= 1).")] = 1,
    size: Annotated[Optional[str], typer.Option("--size", help="Specialization-set size of the grid, e.g. 64k (default: the largest size every method has).")] = None,
    inference: Annotated[str, typer.Option("--inference", help="small: the served model must be small; any: a large one is fine.")] = "small",
    budget: Annotated[Optional[float], typer.Option("--budget", help="Total training budget C_total(N), in --cost units (e.g. 1e14).")] = None,
    cost: Annotated[str, typer.Option("--cost", help="Cost unit: flops or device_hours.")] = "flops",
    out: Annotated[Optional[Path], typer.Option("--out", help="The plan's picture to write, a PNG (default: RUN/eval/plan.png).")] = None,
    name: Annotated[str, typer.Option("--name", help="Results file name under eval/ (as for `speclm grid`).")] = "results",
    paper: Annotated[bool, typer.Option("--paper", help="The paper's Figure-1 advice for --n-domains / --inference (no run needed).")] = False,
    run: ReadRunOpt = None,
    old_domains: Annotated[Optional[int], typer.Option("--domains", hidden=True, help="Deprecated: --n-domains.")] = None,
) -> None:
    """Which recipe fits your budgets (the paper's Figure 1, from your own grid).

    C_total(N) = C_generic + N x C_spec (docs/paper.md Eq. 1) per method at one size of the grid: prints the table and the recommendation, and draws RUN/eval/plan.png, each (N, budget) cell colored by the best admissible method. With eval/curves.jsonl, partly pretrained snapshots (method@share) are candidates too. With --paper: the paper's own advice (docs/paper.md §8).

    \b
    Examples:
      speclm plan --run runs/demo --n-domains 4 --budget 1e15
      speclm plan --paper --n-domains 100"""  # noqa: E501
    from ..report.plan import COST_UNIT, check_inputs, default_size, format_cost, format_table, load_rows, paper_advice, recommend, resolve_size
    from ..report.curve_reading import load_curves
    from ..report.plan_picture import plan_picture
    from ..report.plots import run_title

    if old_domains is not None:  # the old name of --n-domains (a count, unlike grid's --domains list)
        domains = old_domains
    if paper:
        for line in paper_advice(domains, inference):
            typer.echo(line)
        return
    from ..core.outputs import check_name, check_out_file

    check_inputs(domains, inference, budget, cost)
    check_name(name)
    r = open_run(run, None, [], save=False)
    if not (r.path / "config.toml").exists():
        raise SpeclmError(f"no run folder at {r.path} (no config.toml); give --run RUN")
    png_out = check_out_file(out or r.eval_dir / "plan.png", ".png", _is_plan_picture, "a plan picture (a PNG)")
    rows, results = load_rows(r, name)
    curves = load_curves(r)
    if size is None:
        size = default_size(rows)
    rec = recommend(rows, size, domains, inference, budget, cost, curves)
    label = resolve_size(rows, size)
    typer.echo(f"{results}: size {label}, N={domains} domains, inference {inference}, "
               f"budget {format_cost(budget, cost) + ' ' + COST_UNIT[cost] if budget else 'none'}")
    for line in format_table(rec.rows, domains, cost):
        typer.echo(line)
    if curves:
        typer.echo(f"curves: {results.parent / 'curves.jsonl'} ({len(curves)} rows): its partly pretrained snapshots "
                   "are candidates too (method@share: the method stopped at that share of its pretraining)")
    share = f", pretraining share {rec.share:g}" if rec.share < 1 else ""
    typer.echo(f"recommended: {rec.method} (macro ppl {rec.ppl:.2f}{share}): {rec.reason}")
    if rec.crossover:
        typer.echo(f"crossover: {rec.crossover}")
    if rec.switch:
        typer.echo(f"switch: {rec.switch}")
    from ..report.regime import regime_lines, run_premises

    for line in regime_lines(run_premises(r, name), domains, inference):
        typer.echo(line)
    from .recommended import recommendation_lines, write_recommended

    picked = rows if rec.share >= 1 else [c for c in curves if float(c["pretrain_fraction"]) == rec.share]
    try:
        doc = write_recommended(r, picked, rec.method.split("@")[0], label, "this run's grid (speclm plan)", label=rec.method)
        for line in recommendation_lines(doc, r.path):
            typer.echo(line)
    except SpeclmError as e:  # rows without checkpoints (written by hand, or by an older speclm)
        typer.echo(f"recommended checkpoint: none ({e})")
    png = plan_picture(rows, label, png_out, inference, cost, (domains, budget),
                       title=run_title(results), curves=curves)
    typer.echo(f"picture: {png}")


def run_cmd(
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: bool = typer.Option(False, "--force", help="Recompute every stage even if its manifest matches."),
    until: str = typer.Option("grid", "--until", help="Stop after this stage: corpus, tokens, clusters or grid."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config against the corpus and print every job with its estimated FLOPs and GPU-hours; write nothing."),  # noqa: E501
    workers: Annotated[int, typer.Option("--workers", "-j", help="Jobs at once: worker processes (local) or Ray tasks (default: methods.grid_workers).")] = 0,
    executor: Annotated[str, typer.Option("--executor", help="local (this machine's processes) or ray (the cluster extra: Ray; default: methods.grid_executor).")] = "",
    budget: Annotated[Optional[str], typer.Option("--budget", help="Size the pretraining to a budget before training: FLOPs (3e15) or device-hours on a named device (2h@h100, 0.5h@cpu); sets methods.pretrain_steps.")] = None,
) -> None:
    """Run the whole pipeline on one run folder: corpus, tokens, clusters, then the method
    grid (every method x domain x size, evaluated) and the report; finished stages and rows
    are skipped.

    \b
    Examples:
      speclm run --preset tiny --dry-run     every job with its estimated cost; writes nothing
      speclm run --preset tiny               runs/tiny: every method on the shipped tiny corpus
      speclm run --preset demo --set train.logger=tensorboard"""
    from .pipeline import STAGES, run_pipeline

    if until not in STAGES:  # before the run folder is touched: a refused command writes nothing
        raise SpeclmError(f"unknown stage {until!r} for --until; known: {', '.join(STAGES)}")
    from ..train.budget import check_run_config

    r = open_run(run, preset, set_, save=False)
    check_run_config(r.config)
    if dry_run:
        from .budgeting import plan_with_budget

        plan_with_budget(r, echo=typer.echo, budget=budget)
        return
    # the config is saved when the command succeeds, or by the grid after its checks (a
    # refused value, checked by a later stage, never reaches config.toml)
    if budget:  # the data stages first (they do not depend on the budget), then size the pretraining to it
        from .budgeting import budget_override, plan_with_budget
        from .dryrun import grid_methods

        run_pipeline(r, force=force, echo=typer.echo, until="tokens")
        override, _ = budget_override(r, budget, grid_methods(r), echo=typer.echo, warn=False)
        r = open_run(run, preset, [*(set_ or []), override], save=False)
        check_run_config(r.config)
        plan_with_budget(r, echo=typer.echo)
        force = False  # the data stages were just (re)built
    summary = run_pipeline(r, force=force, echo=typer.echo, until=until, workers=workers, executor=executor)
    r.save_config()
    typer.echo(f"run folder: {r.path}")
    if "report" in summary:  # the last line: the report, to open with a click
        typer.echo(f"report: {Path(summary['report']).with_suffix('.html').resolve().as_uri()}")


def report_cmd(
    name: Annotated[str, typer.Option("--name", help="Results file name under eval/ (as for `speclm grid`).")] = "results",
    run: ReadRunOpt = None,
    compare: Annotated[bool, typer.Option("--compare", help="Compare the run folders given as arguments (the scale ladder): compare.md/.html/.json and compare-ladder.png.")] = False,
    runs: Annotated[Optional[list[Path]], typer.Argument(help="With --compare: two run folders or more.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="With --compare: the folder to write the page to (default: FIRST_RUN/eval/compare).")] = None,
) -> None:
    """The run's report: the paper's tables and figures from your grid, with intervals, and
    the paper's findings checked (eval/report.md, report.html, report.json). With --compare
    RUN RUN ...: one page putting runs of different scale side by side.

    \b
    Example:
      speclm report --run runs/demo
      speclm report --compare runs/demo runs/cpu-full --out ladder"""
    from ..core.outputs import check_name
    from ..report.page import write_report

    check_name(name)
    if compare or runs or out is not None:
        if not compare:
            raise SpeclmError("run folders as arguments and --out go with --compare: speclm report --compare RUN RUN ...")
        from ..report.compare import write_compare

        path = write_compare([*([run] if run else []), *(runs or [])], out, name)
        typer.echo(path.read_text(encoding="utf-8"))
        typer.echo(f"compare: {path}, {path.with_suffix('.html')}, {path.with_suffix('.json')}")
        return
    r = open_run(run, None, [], save=False)
    if not (r.path / "config.toml").exists():
        raise SpeclmError(f"no run folder at {r.path} (no config.toml); give --run RUN")
    path = write_report(r, name)
    typer.echo(path.read_text(encoding="utf-8"))
    typer.echo(f"report: {path.with_suffix('.html').resolve().as_uri()} (also {path.name} and report.json)")
