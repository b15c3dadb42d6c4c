"""CLI of the methods: ``speclm methods``, ``speclm pretrain``, ``speclm specialize``, ``speclm grid``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..cli_options import PresetOpt, RunOpt, SetOpt, open_run

ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the work even if a finished result exists.")]
MethodArg = Annotated[str, typer.Argument(help="Method name (see `speclm methods`).")]


def _split(values: Optional[list[str]]) -> Optional[list[str]]:
    """Accept repeated options and comma-separated lists alike."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _open(method: str, run, preset, set_, force: bool):
    """The method, the run (config not saved yet: bad input must leave nothing) and its context."""
    from . import base

    m = base.get(method)
    r = open_run(run, preset, set_, save=False)
    return m, r, base.Context(run=r, log=typer.echo, force=force)


def register(app: typer.Typer) -> None:
    @app.command("methods")
    def methods_cmd() -> None:
        """List the methods that `speclm pretrain` and `speclm specialize` know."""
        from . import base

        for name in base.known():
            cls = base.REGISTRY[name]
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            if cls.needs_domain_for_pretrain:
                when = "pretrains per domain"
            elif cls.shared_pretraining:
                when = "pretrains once, shared"
            else:
                when = "no generic pretraining"
            typer.echo(f"{name:10s} {when:24s} {doc}")

    @app.command("pretrain")
    def pretrain_cmd(
        method: MethodArg,
        domain: Annotated[Optional[str], typer.Option("--domain", "-d", help="Domain (methods that pretrain per domain).")] = None,
        run: RunOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
    ) -> None:
        """Pretrain a method (once, or per domain for slm-is / slm-dsir); a finished run is skipped."""
        from . import common

        m, r, ctx = _open(method, run, preset, set_, force)
        domain = common.check_domain(ctx, m, domain, for_pretrain=True)
        m.check(ctx)
        r.save_config()
        out = m.pretrain(ctx, domain)
        typer.echo(f"pretrained {method}: {out}")

    @app.command("specialize")
    def specialize_cmd(
        method: MethodArg,
        domain: Annotated[str, typer.Option("--domain", "-d", help="Domain to specialize on.")],
        size: Annotated[str, typer.Option("--size", help="Tokens of the domain train split: e.g. 250k, 1M, all.")],
        run: RunOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
        force: ForceOpt = False,
    ) -> None:
        """Specialize a method on a domain (pretraining first if needed); writes a plain small transformer."""
        from . import common

        m, r, ctx = _open(method, run, preset, set_, force)
        domain = common.check_domain(ctx, m, domain)
        label = common.check_size(ctx, domain, size)
        m.check(ctx)
        r.save_config()
        out = m.specialize(ctx, domain, label)
        typer.echo(f"specialized {method} on {domain} ({size}): {out}")

    @app.command("grid")
    def grid_cmd(
        methods: Annotated[Optional[list[str]], typer.Option("--methods", "-m", help="Methods (default: all known).")] = None,
        domains: Annotated[Optional[list[str]], typer.Option("--domains", help="Domains (default: all).")] = None,
        sizes: Annotated[Optional[list[str]], typer.Option("--sizes", help="Sizes (default: methods.sizes).")] = None,
        name: Annotated[str, typer.Option("--name", help="Results file name under eval/.")] = "results",
        run: RunOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """The experiment grid: pretrain, specialize and evaluate every method x domain x size.

        One row per (method, domain, size) goes to eval/results.jsonl (rows already there are
        skipped, so a killed grid resumes); the table is eval/results.md."""
        from ..experiment import run_grid

        r = open_run(run, preset, set_, save=False)
        out = run_grid(r, methods=_split(methods), domains=_split(domains), sizes=_split(sizes), name=name, log=typer.echo)
        typer.echo(f"results: {out}")
