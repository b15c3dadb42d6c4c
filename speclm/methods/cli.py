"""``speclm methods``, ``speclm pretrain``, ``speclm specialize``: one method at a time."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..core.options import PresetOpt, RunOpt, SetOpt
from ..core.run import open_run

ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the work even if a finished result exists.")]
RestartOpt = Annotated[bool, typer.Option("--restart", help="Unfinished training jobs drop their resume state and "
                                          "start over (the way out of a damaged checkpoint).")]
MethodArg = Annotated[str, typer.Argument(help="Method name (see `speclm methods`).")]


def _open(method: str, run, preset, set_, force: bool):
    """The method, the run (config not saved yet: bad input must leave nothing) and its context."""
    from . import base

    m = base.get(method)
    r = open_run(run, preset, set_, save=False)
    from ..train.budget import check_run_config

    check_run_config(r.config)
    return m, r, base.Context(run=r, log=typer.echo, force=force)


def methods_cmd() -> None:
    """List the methods that `speclm pretrain` and `speclm specialize` know.

    \b
    Example:
      speclm methods"""
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
        typer.echo(f"{name:12s} {when:24s} {doc}")


def pretrain_cmd(
    method: MethodArg,
    domain: Annotated[Optional[str], typer.Option("--domain", "-d", help="Domain (methods that pretrain per domain).")] = None,
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    restart: RestartOpt = False,
) -> None:
    """Pretrain a method (once, or per domain for slm-is / slm-dsir); a finished run is skipped.

    \b
    Example:
      speclm pretrain slm-is --domain kjv --run runs/tiny"""
    from . import inputs

    m, r, ctx = _open(method, run, preset, set_, force)
    domain = inputs.check_domain(ctx, m, domain, for_pretrain=True)
    m.check(ctx)
    r.save_config()
    from ..train.loop import restarting

    with restarting(restart):
        out = m.pretrain(ctx, domain)
    typer.echo(f"pretrained {method}: {out}")


def specialize_cmd(
    method: MethodArg,
    domain: Annotated[str, typer.Option("--domain", "-d", help="Domain to specialize on.")],
    size: Annotated[str, typer.Option("--size", help="Tokens of the domain train split: e.g. 250k, 1M, all.")],
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    restart: RestartOpt = False,
) -> None:
    """Specialize a method on a domain (pretraining first if needed); writes a plain small transformer.

    \b
    Example:
      speclm specialize slm-is --domain kjv --size 16k --run runs/tiny"""
    from . import inputs

    m, r, ctx = _open(method, run, preset, set_, force)
    domain = inputs.check_domain(ctx, m, domain)
    label = inputs.check_size(ctx, domain, size)
    m.check(ctx)
    r.save_config()
    from ..train.loop import restarting

    with restarting(restart):
        out = m.specialize(ctx, domain, label)
    typer.echo(f"specialized {method} on {domain} ({size}): {out}")
