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
        check_year(self, tokens_per_step, flops_per_step)

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


YEAR_S = 365.25 * 24 * 3600
CPU_CORE_FLOPS = 2e11  # a generous ceiling per CPU core (AVX-512 FMA, fp32, every cycle)
GPU_FLOPS = 2e15  # a generous ceiling per GPU (above an H100's dense bf16 peak)


def machine_ceiling() -> tuple[float, str]:
    """FLOP/s that this machine cannot beat (a generous ceiling: time estimates from it are
    lower bounds, so a budget refused by it is out of reach for sure), and its description."""
    import os

    try:
        import torch

        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - torch without CUDA support
        n_gpu = 0
    if n_gpu:
        return GPU_FLOPS * n_gpu, f"{n_gpu} GPU(s) at {GPU_FLOPS:.0e} FLOP/s each"
    cores = os.cpu_count() or 1
    return CPU_CORE_FLOPS * cores, f"{cores} CPU core(s) at {CPU_CORE_FLOPS:.0e} FLOP/s each"


def check_year(budget: Budget, tokens_per_step: int, flops_per_step: float) -> None:
    """Refuse a budget this machine could not finish in a year, with the estimate (at its
    FLOP ceiling: the real time is longer). A device-hours budget above a year is refused too."""
    if budget.device_hours and budget.device_hours > YEAR_S / 3600 and not budget.horizon_steps(tokens_per_step, flops_per_step):
        raise SpeclmError(f"train.max_device_hours = {budget.device_hours:g} is more than a year "
                          f"({YEAR_S / 3600:.0f} hours); lower it")
    steps = budget.horizon_steps(tokens_per_step, flops_per_step)
    if not steps:
        return
    rate, what = machine_ceiling()
    seconds = steps * flops_per_step / rate
    if seconds > YEAR_S:
        which = ", ".join(f"train.max_{k} = {getattr(budget, k):g}" for k in ("steps", "tokens", "flops") if getattr(budget, k))
        raise SpeclmError(f"{which}: {steps:.3g} steps of {flops_per_step:.3g} FLOPs take at least "
                          f"{seconds / YEAR_S:.3g} years on this machine ({what}); lower the budget")


def check_run_config(cfg) -> None:
    """The checks of a run's config that need the model shapes but no data, made before a
    command saves the config: both shapes exist, and the pretraining budget of the small
    model finishes within a year on this machine."""
    from ..model.transformer import flops_per_token, named_shape

    m, window = cfg.model, cfg.tokens.window
    shapes = [named_shape(name, cfg.tokens.vocab_size, max_seq_len=window, mlp=m.mlp, tie_embeddings=m.tie_embeddings)
              for name in (m.small, m.large)]
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * window
    check_year(Budget.from_config(cfg.train), tokens_per_step, flops_per_token(shapes[0], window) * tokens_per_step)
