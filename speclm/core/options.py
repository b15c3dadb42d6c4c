"""Options shared by every subcommand (run folder, preset, overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RunOpt = Annotated[
    Optional[Path],
    typer.Option("--run", "-r", help="Run folder (default: runs/PRESET; PRESET is tiny when no --preset is given). "
                 "Holds config.toml and every stage's output."),
]
ReadRunOpt = Annotated[
    Optional[Path],
    typer.Option("--run", "-r", help="Run folder to read (default: runs/tiny). Holds config.toml and every stage's output."),
]
CheckpointRunOpt = Annotated[
    Optional[Path],
    typer.Option("--run", "-r", help="Run folder the checkpoint was trained in (default: the run folder that holds "
                 "--checkpoint, found from its path)."),
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


def run_of_checkpoint(checkpoint: Path | str, run: Optional[Path] = None) -> Optional[Path]:
    """``run`` when given, else the run folder that holds ``checkpoint`` (the nearest parent
    with a config.toml: RUN/specialize/..., RUN/seed-1/pretrain/..., RUN/train/...); None
    when the checkpoint lives outside every run folder."""
    if run is not None:
        return Path(run)
    for parent in Path(checkpoint).resolve().parents:
        if (parent / "config.toml").is_file():
            return parent
    return None
