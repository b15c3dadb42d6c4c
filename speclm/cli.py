"""The ``speclm`` command: one table maps each command to the function beside its code.

Each entry is ``(name, "module:attribute")``. The attribute is a typer app (a command
group such as ``speclm corpus ...``) or a plain function whose typer-annotated signature
is the command's options. Modules keep their heavy imports (torch, faiss, pyarrow) inside
the functions, so ``speclm --help`` stays fast.

Every mistake on the command line, typer's own (an unknown or missing option, a value of
the wrong type) as well as speclm's, is one line on stderr, ``speclm: error: ...``, and
exit code 2. Help is plain text (no boxes, no ``<bool>`` after a flag).
"""

from __future__ import annotations

import errno
import importlib
import sys

import typer

from .core.errors import SpeclmError

_ENVIRONMENT = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}

# In pipeline order; `speclm --help` lists them in this order.
COMMANDS: list[tuple[str, str]] = [
    ("corpus", "speclm.corpus.cli:app"),
    ("tokens", "speclm.tokens.cli:tokens_cmd"),
    ("clusters", "speclm.clusters.cli:app"),
    ("shapes", "speclm.model.cli:shapes_cmd"),
    ("train", "speclm.train.cli:train_cmd"),
    ("eval", "speclm.inference.cli:eval_cmd"),
    ("export", "speclm.inference.cli:export_cmd"),
    ("generate", "speclm.inference.cli:generate_cmd"),
    ("methods", "speclm.methods.cli:methods_cmd"),
    ("pretrain", "speclm.methods.cli:pretrain_cmd"),
    ("specialize", "speclm.methods.cli:specialize_cmd"),
    ("grid", "speclm.grid.cli:grid_cmd"),
    ("run", "speclm.grid.cli:run_cmd"),
    ("plan", "speclm.grid.cli:plan_cmd"),
    ("report", "speclm.grid.cli:report_cmd"),
    ("build", "speclm.build.cli:build_cmd"),
]

app = typer.Typer(
    name="speclm",  # its help is _root's docstring
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("speclm")
        except PackageNotFoundError:  # a source tree that was never installed
            v = "unknown (not installed)"
        typer.echo(f"speclm {v}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print speclm's version and exit."),
) -> None:
    """Build small specialized language models from a large generic corpus plus a little
    domain text, and learn which recipe fits your budgets (Grangier et al., 'Plan Early!').

    \b
    Examples:
      speclm run --preset tiny                   the whole pipeline on the shipped tiny corpus
      speclm plan --run runs/tiny --n-domains 4  which recipe fits 4 domains
      speclm COMMAND --help                      each command's options and an example
    """


def _resolve(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


for _name, _target in COMMANDS:
    _obj = _resolve(_target)
    if isinstance(_obj, typer.Typer):
        app.add_typer(_obj, name=_name)
    else:
        app.command(_name)(_obj)


def _close_bars() -> None:
    """End the progress bars an error interrupted, so the error is a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close: the error line matters more
            pass


def _usage_errors() -> tuple[type, ...]:
    """The exception classes of typer's command-line parsing (its own copy of click's, and
    click's where typer uses that)."""
    out = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            out.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(out)


def _error(message: str) -> None:
    print(f"speclm: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    usage = _usage_errors()
    try:
        code = app(args=argv, prog_name="speclm", standalone_mode=False)
    except SpeclmError as e:
        _close_bars()
        _error(str(e))
    except OSError as e:  # the machine's doing, not a bug: a read-only folder, a full disk
        if e.errno not in _ENVIRONMENT:
            raise
        _close_bars()
        where = f" ({e.filename})" if e.filename else ""
        _error(f"{e.strerror}{where}; check the folder's permissions and free space (or choose another "
               "run folder), then rerun the same command: it resumes")
    except usage as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `speclm corpus` alone: its help, as before
            e.show()
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _error(e.format_message() + hint)
    except typer.Abort:
        print("speclm: aborted", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
