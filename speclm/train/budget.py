"""Training budgets: tokens, steps, FLOPs or device-hours; the first one reached stops a run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..core.errors import SpeclmError


@dataclass(frozen=True)
class Budget:
    """0 means "no limit of this kind"; at least one kind must be positive."""

    steps: int = 0
    tokens: int = 0
    flops: float = 0.0
    device_hours: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> "Budget":
        return cls(steps=cfg.max_steps, tokens=cfg.max_tokens, flops=cfg.max_flops, device_hours=cfg.max_device_hours)

    def check(self, tokens_per_step: int, flops_per_step: float) -> None:
        """Refuse a budget that cannot train at all."""
        for name in ("steps", "tokens", "flops", "device_hours"):
            v = getattr(self, name)
            if v < 0 or (isinstance(v, float) and not math.isfinite(v)):
                raise SpeclmError(f"budget: max_{name} must be >= 0, got {v!r}")
        if not (self.steps or self.tokens or self.flops or self.device_hours):
            raise SpeclmError(
                "budget is zero: set at least one of train.max_steps, train.max_tokens, train.max_flops, "
                "train.max_device_hours to a positive value"
            )
        if self.tokens and self.tokens < tokens_per_step:
            raise SpeclmError(f"budget of {self.tokens} tokens is less than one step ({tokens_per_step} tokens)")
        if self.flops and self.flops < flops_per_step:
            raise SpeclmError(f"budget of {self.flops:.3g} FLOPs is less than one step ({flops_per_step:.3g} FLOPs)")

    def horizon_steps(self, tokens_per_step: int, flops_per_step: float) -> int:
        """Steps until the first step/token/FLOP budget is reached (0 if only device-hours bound the run)."""
        limits = []
        if self.steps:
            limits.append(self.steps)
        if self.tokens:
            limits.append(-(-self.tokens // tokens_per_step))
        if self.flops:
            limits.append(math.ceil(self.flops / flops_per_step))
        return min(limits) if limits else 0

    def reached(self, steps: int, tokens: int, flops: float, device_hours: float) -> Optional[str]:
        """The name of the first budget reached, or None."""
        if self.steps and steps >= self.steps:
            return "steps"
        if self.tokens and tokens >= self.tokens:
            return "tokens"
        if self.flops and flops >= self.flops:
            return "flops"
        if self.device_hours and device_hours >= self.device_hours:
            return "device_hours"
        return None
