"""Learning-rate schedules: a pure function of the step, so a resumed run needs only the step."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import SpeclmError

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to ``lr`` over ``warmup_steps``, then constant or a cosine decay to
    ``lr * min_ratio`` at ``total_steps`` (held there afterwards)."""

    lr: float
    warmup_steps: int
    kind: str = "cosine"
    total_steps: int = 0  # the cosine horizon; 0 = unknown (then the schedule is constant)
    min_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise SpeclmError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SpeclmError(f"train.lr must be a positive number, got {self.lr!r}")
        if self.warmup_steps < 0:
            raise SpeclmError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant" or self.total_steps <= self.warmup_steps:
            return self.lr
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.lr * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
