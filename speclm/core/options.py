"""Options shared by every subcommand (run folder, preset, overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RunOpt = Annotated[
    Optional[Path],
    typer.Option("--run", "-r", help="Run folder (default: runs/PRESET). Holds config.toml and every stage's output."),
]
PresetOpt = Annotated[
    Optional[str],
    typer.Option("--preset", "-p", help="Preset name (tiny, demo, paper) or a path to a .toml config."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override one config value, e.g. --set tokens.vocab_size=4096 (repeatable)."),
]
CheckpointOpt = Annotated[
    Path, typer.Option("--checkpoint", "-c", help="A checkpoint folder (model.safetensors + model.json), e.g. OUT/final.")
]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu).")
]
