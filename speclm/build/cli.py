"""``speclm build``: your domain text in, a small specialized model (a Hugging Face folder) out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.options import PresetOpt, SetOpt


def build_cmd(
    domain: Annotated[list[str], typer.Option("--domain", "-d", help="A domain as NAME=PATH: a folder of .txt files, "
                                              "or .jsonl/.json/.csv/.parquet (each also .gz), or a saved Hugging Face "
                                              "dataset (repeatable).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The model folder to write (one domain), or one sub-folder "
                                      "per domain: Hugging Face transformers format with a model card.")],
    generic: Annotated[str, typer.Option("--generic", "-g", help="The generic set to pretrain on: tiny (shipped in the "
                                         "package), default (the default corpus's generic sources, built once into "
                                         "the download cache) or a PATH of your own.")] = "tiny",
    n_domains: Annotated[Optional[int], typer.Option("--n-domains", "-n", help="How many domains you will serve in the "
                                                      "end (decides the recipe; default: the domains given).")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", help="Training budget: FLOPs (3e15) or device-hours on a "
                                                  "named device (2h@h100, 0.5h@cpu); sizes the pretraining to it.")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="JSON field / column holding the text.")] = "text",
    run: Annotated[Optional[Path], typer.Option("--run", "-r", help="Run folder of the build (its corpus, tokens, "
                                                "training jobs and report; default: runs/<name of --out>).")] = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """From a folder of domain text to a small specialized model you can ship.

    Imports your domain text beside a generic set, prints the dry-run table (against
    --budget) before training, picks the recipe (the run's own evidence where its report's
    premises hold, else the paper's Figure 1 for --n-domains), trains that recipe and the
    plain-SLM baseline, evaluates both with intervals, and exports the best seed with a
    model card. Resumable: run the same command again after a stop. Preset: tiny with
    --generic tiny, else demo.

    Example: speclm build --domain cooking=recipes/ --generic tiny --out my-model"""
    from ..corpus.cli import _parse_domains
    from .build import Request, build

    req = Request(domains=_parse_domains(domain), out=Path(out), generic=generic, n_domains=n_domains, budget=budget,
                  preset=preset, overrides=list(set_ or []), run=run, text_field=text_field)
    result = build(req, echo=typer.echo)
    typer.echo(f"run folder: {result['run']}")
    for f in result["folders"]:
        typer.echo(f"model folder: {f}")
