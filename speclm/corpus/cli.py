"""CLI of the corpus stage."""

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the root app (none yet)."""
