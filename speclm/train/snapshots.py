"""Snapshots during a training: weights-only checkpoints at fixed fractions of its steps.

An operating curve over pretraining cost (docs/paper.md Table 8, Figs. 3-4) specializes the
pretrained model as it was at a fraction f of its pretraining. The training loop takes a
:class:`Snapshots` and, right after step ``round(f * horizon)`` for each f (``horizon``: the
steps its budget allows), saves::

    OUT/snapshots/f-<f>/   an ordinary checkpoint folder (model.safetensors, model.json,
                           tokenizer.json), as ``OUT/final/`` is, so evaluation and
                           fine-tuning load it unchanged; model.json records ``step``,
                           ``tokens``, ``flops``, ``pretrain_fraction`` and ``max_steps``
                           (the horizon); cost.json holds the training's cost at that step

A snapshot is written atomically, before the resumable checkpoint of the same step, so a
run killed after a snapshot keeps it, and a run resumed from an earlier checkpoint writes
it again (with the same weights: resume is exact) when it passes the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from ..core import atomic
from ..core.errors import SpeclmError
from ..core.run import fraction_label
from .cost import COST_FILE

SNAPSHOTS = "snapshots"


def snapshot_dir(out_dir: str | Path, fraction: float) -> Path:
    """``OUT/snapshots/f-<fraction>/`` of the training folder ``out_dir``."""
    return Path(out_dir) / SNAPSHOTS / fraction_label(fraction)


def snapshot_step(fraction: float, horizon: int) -> int:
    """The step of the snapshot at ``fraction`` of ``horizon`` steps: round half up, at least 1."""
    return min(horizon, max(1, int(fraction * horizon + 0.5)))


@dataclass(frozen=True)
class Snapshots:
    """The fractions of a training's steps at which to save a snapshot."""

    fractions: tuple[float, ...]

    def due(self, horizon: int) -> dict[int, list[float]]:
        """Step -> the fractions whose snapshot is saved right after it."""
        if not self.fractions:
            return {}
        if horizon <= 0:
            raise SpeclmError("snapshots at fractions of the pretraining need a step count: a budget in steps, tokens "
                              "or FLOPs (with methods.budget = \"device_hours\", set methods.pretrain_steps)")
        out: dict[int, list[float]] = {}
        for f in self.fractions:
            out.setdefault(snapshot_step(f, horizon), []).append(f)
        return out

    def save(self, out_dir: Path, model, fractions: list[float], meta: Mapping, horizon: int,
             files: Optional[Mapping] = None, cost: Optional[Mapping] = None) -> list[Path]:
        """Write the snapshots of ``fractions`` (the weights of ``model`` now); ``meta``
        carries the step, tokens and FLOPs seen; ``cost`` is the cost.json at this step."""
        from .checkpoint import save_checkpoint

        paths = []
        for f in fractions:
            path = snapshot_dir(out_dir, f)
            atomic.remove_stale_temps(path)  # a kill while writing it before (the loop holds the folder's lock)
            save_checkpoint(path, model, meta={**meta, "snapshot": True, "pretrain_fraction": f, "max_steps": horizon},
                            files=files, documents={COST_FILE: cost} if cost else None)
            paths.append(path)
        return paths
