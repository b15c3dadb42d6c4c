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

    def save_config(self) -> None:
        """Write the resolved config to ``config.toml`` (only when it changed)."""
        saved = self.path / "config.toml"
        text = to_toml(self.config)
        if not saved.exists() or saved.read_text(encoding="utf-8") != text:
            atomic.write_text(saved, text)


def open_run(
    run: str | Path | None = None, preset: str | None = None, overrides: list[str] | None = None, save: bool = True
) -> Run:
    """Open (or create) a run folder.

    The config is the run's saved ``config.toml`` (if any), then ``preset``, then
    ``overrides``. With neither a saved config nor a preset, the ``tiny`` preset is used.
    The resolved config is written back to ``config.toml``; with ``save=False`` nothing is
    written (call ``Run.save_config()`` once the command succeeded, so a command that
    fails on bad input leaves the run folder as it was).
    """
    if run is None:
        run = Path("runs") / (Path(preset).stem if preset else "tiny")
    path = Path(run)
    saved = path / "config.toml"
    base = read_toml(saved) if saved.exists() else None
    if base is None and preset is None:
        preset = "tiny"
    r = Run(path=path, config=load(preset, overrides, base))
    if save:
        r.save_config()
    return r
