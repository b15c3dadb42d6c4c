"""``speclm clusters [embed | fit | describe]``: Sentence-BERT embeddings, k-means, domain histograms."""

from __future__ import annotations

from typing import Optional

import typer

from ..core.options import PresetOpt, RunOpt, SetOpt
from ..core.run import open_run


app = typer.Typer(
    name="clusters",
    help="Sentence-BERT embeddings of windows, k-means for every k, domain histograms "
    "(without a subcommand: all three steps, skipped when finished)."
    "\n\n\b\nExamples:\n  speclm clusters --run runs/tiny\n  speclm clusters describe --run runs/tiny",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)

@app.callback()
def clusters_cmd(
    ctx: typer.Context,
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: bool = typer.Option(False, "--force", help="Refit and redescribe even if the manifest matches (valid cached embeddings are reused)."),
) -> None:
    """Embed, fit and describe (the whole stage).

    \b
    Examples:
      speclm clusters --run runs/tiny
      speclm clusters describe --run runs/tiny"""
    if ctx.invoked_subcommand is not None:
        return
    from .stage import build_clusters, format_summary

    r = open_run(run, preset, set_, save=False)  # saved once the command succeeded
    summary = build_clusters(r, force=force)
    r.save_config()
    typer.echo(format_summary(summary))
    typer.echo(f"clusters: {r.clusters_dir}")

@app.command("embed")
def embed_cmd(run: RunOpt = None, preset: PresetOpt = None, set_: SetOpt = None) -> None:
    """Embed the windows with Sentence-BERT into the cache (resumable; shards over torchrun ranks).

    \b
    Example:
      speclm clusters embed --run runs/demo"""
    from .stage import embed_windows

    r = open_run(run, preset, set_, save=False)  # saved once the command succeeded
    emb = embed_windows(r)
    r.save_config()
    n = sum(len(rows) for rows, _ in emb.values())
    typer.echo(f"embedded windows: {n:,} in {r.clusters_dir / 'embeddings'}")

@app.command("fit")
def fit_cmd(run: RunOpt = None, preset: PresetOpt = None, set_: SetOpt = None) -> None:
    """k-means for every k on the generic embeddings; assign every window of every set and split.

    \b
    Example:
      speclm clusters fit --run runs/demo --set 'clusters.ks=[4,16]'"""
    from .stage import GENERIC, embed_windows, fit_and_assign

    r = open_run(run, preset, set_, save=False)  # saved once the command succeeded
    out = fit_and_assign(r, embed_windows(r))
    r.save_config()
    typer.echo(f"k = {', '.join(map(str, out['ks']))}: fitted on {out['fit_windows']:,} {GENERIC} windows "
               f"in {out['fit_seconds']} s; empty clusters: "
               + ", ".join(f"k={k} {v['empty_clusters']}" for k, v in out["per_k"].items()))

@app.command("describe")
def describe_cmd(
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    budget_tokens: Optional[int] = typer.Option(
        None, "--budget-tokens", help="Token budget of the importance resample for the ESS table (default: clusters.describe_budget_tokens)."
    ),
) -> None:
    """Per domain and k: histogram, top-cluster share (Table 9), entropy (Table 10), weights, resample ESS; PNGs and cluster cards.

    \b
    Example:
      speclm clusters describe --run runs/demo --budget-tokens 1000000"""
    from .describe import format_tables
    from .stage import build_clusters, describe_clusters

    r = open_run(run, preset, set_, save=False)  # saved once the command succeeded
    build_clusters(r)
    out = describe_clusters(r, None, budget_tokens, write=False) if budget_tokens is not None else build_clusters(r)["describe"]
    r.save_config()
    typer.echo(format_tables(out["tables"], out["ks"]))
    typer.echo(f"report, plots and cluster cards: {r.clusters_dir / 'describe'}")
