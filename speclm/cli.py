"""The ``speclm`` command: one table maps each command to the function beside its code.

Each entry is ``(name, "module:attribute")``. The attribute is a typer app (a command
group such as ``speclm corpus ...``) or a plain function whose typer-annotated signature
is the command's options. Modules keep their heavy imports (torch, faiss, pyarrow) inside
the functions, so ``speclm --help`` stays fast.
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
    name="speclm",
    help=(
        "Build small specialized language models from a large generic corpus plus a little "
        "domain text, and learn which recipe fits your budgets (Grangier et al., 'Plan Early!')."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """speclm: small specialized language models (see `speclm COMMAND --help`)."""


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


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=True)
    except SpeclmError as e:
        _close_bars()
        print(f"speclm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # the machine's doing, not a bug: a read-only folder, a full disk
        if e.errno not in _ENVIRONMENT:
            raise
        _close_bars()
        where = f" ({e.filename})" if e.filename else ""
        print(f"speclm: error: {e.strerror}{where}; check the folder's permissions and free space (or choose another "
              "run folder), then rerun the same command: it resumes", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
