"""The ``speclm`` command. Each stage package adds its subcommands through ``register``."""

from __future__ import annotations

import importlib
import sys

import typer

from .errors import SpeclmError

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


# Stage modules, in pipeline order. Each defines register(app: typer.Typer).
STAGE_CLIS = [
    "speclm.corpus.cli",
    "speclm.tokens.cli",
    "speclm.clusters.cli",
    "speclm.train.cli",
    "speclm.methods.cli",
    "speclm.pipeline",
    "speclm.plan",
]

for _name in STAGE_CLIS:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=True)
    except SpeclmError as e:
        print(f"speclm: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
