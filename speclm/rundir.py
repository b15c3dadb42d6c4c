"""A run folder: its resolved config and one sub-folder per stage (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import atomic
from .config import Config, load, read_toml, to_toml


@dataclass
class Run:
    path: Path
    config: Config

    def stage_dir(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    @property
    def corpus_dir(self) -> Path:
        return self.path / "corpus"

    @property
    def tokens_dir(self) -> Path:
        return self.path / "tokens"

    @property
    def clusters_dir(self) -> Path:
        return self.path / "clusters"


def open_run(run: str | Path | None = None, preset: str | None = None, overrides: list[str] | None = None) -> Run:
    """Open (or create) a run folder.

    The config is the run's saved ``config.toml`` (if any), then ``preset``, then
    ``overrides``. With neither a saved config nor a preset, the ``tiny`` preset is used.
    The resolved config is written back to ``config.toml``.
    """
    if run is None:
        run = Path("runs") / (Path(preset).stem if preset else "tiny")
    path = Path(run)
    saved = path / "config.toml"
    base = read_toml(saved) if saved.exists() else None
    if base is None and preset is None:
        preset = "tiny"
    cfg = load(preset, overrides, base)
    text = to_toml(cfg)
    if not saved.exists() or saved.read_text(encoding="utf-8") != text:
        atomic.write_text(saved, text)
    return Run(path=path, config=cfg)
