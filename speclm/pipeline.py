"""``speclm run``: every stage in order on one run folder; finished stages are skipped."""

from __future__ import annotations

import typer

from .cli_options import PresetOpt, RunOpt, SetOpt, open_run


def run_pipeline(run, force: bool = False, echo=None) -> dict:
    from .corpus.stage import build_corpus
    from .corpus.store import format_summary
    from .tokens.stage import build_tokens, format_tokens_summary

    echo = echo or (lambda text: None)
    summary = {"corpus": build_corpus(run, force=force)}
    echo(format_summary(summary["corpus"]))
    summary["tokens"] = build_tokens(run, force=force)
    echo(format_tokens_summary(summary["tokens"]))
    from .clusters.stage import build_clusters, format_summary as format_clusters_summary
    summary["clusters"] = build_clusters(run, force=force)
    echo(format_clusters_summary(summary["clusters"]))
    return summary


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        run: RunOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
        force: bool = typer.Option(False, "--force", help="Recompute every stage even if its manifest matches."),
    ) -> None:
        """Run the whole pipeline (corpus, tokens, ...) on one run folder; finished stages are skipped."""
        r = open_run(run, preset, set_)
        run_pipeline(r, force=force, echo=typer.echo)
        typer.echo(f"run folder: {r.path}")
