"""``speclm tokens``: the tokenizer and the packed token shards."""

from __future__ import annotations

import typer

from ..core.options import PresetOpt, RunOpt, SetOpt
from ..core.run import open_run


def tokens_cmd(
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: bool = typer.Option(False, "--force", help="Retrain and re-encode even if the saved tokens match."),
) -> None:
    """Train the byte-level BPE on the generic train split and encode every set into token shards.

    \b
    Example:
      speclm tokens --run runs/tiny --set tokens.vocab_size=4096"""
    from .stage import build_tokens, format_tokens_summary

    r = open_run(run, preset, set_, save=False)
    summary = build_tokens(r, force=force)
    r.save_config()
    typer.echo(format_tokens_summary(summary))
    typer.echo(f"tokens: {r.tokens_dir}")
