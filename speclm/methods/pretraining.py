"""Pretraining through the one loop: the grid's shared budget (FLOPs, tokens or device-hours), the
validation function, and :func:`pretrain_model`, which every method's pretraining calls."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..core.errors import SpeclmError
from ..corpus.store import GENERIC
from .base import Context
from .inputs import BUDGETS, shape, shards, tokenizer_files

if TYPE_CHECKING:
    import torch


def pretrain_steps(ctx: Context) -> int:
    steps = ctx.config.methods.pretrain_steps or ctx.config.train.max_steps
    if steps <= 0:
        raise SpeclmError("the pretraining budget is zero: set methods.pretrain_steps or train.max_steps")
    return steps


def pretrain_config(ctx: Context, share: float = 1.0, shape_kind: str = "small"):
    """The loop config of a pretraining that gets ``share`` of the grid's budget.

    ``methods.budget = "flops"`` (default): every method gets the FLOPs the small model
    spends in ``pretrain_steps`` steps of ``train.batch_size`` windows, so the large model
    (and the projected network, whose step costs more) trains fewer steps: the paper
    compares at equal GPU-hours. ``"tokens"``: every method trains the same number of
    tokens (the large model then costs more FLOPs). ``"device_hours"``: every method gets
    ``train.max_device_hours`` of measured training time (wall seconds x devices), with
    ``pretrain_steps`` (when set) as a step bound. A FLOP budget is at least one step of
    the ``shape_kind`` model (a tiny budget that cannot pay one step of the large model)."""
    import dataclasses

    from ..model.transformer import flops_per_token

    cfg = ctx.config
    budget = getattr(cfg.methods, "budget", "flops")
    if budget not in BUDGETS:
        raise SpeclmError(f"methods.budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    t = dataclasses.replace(cfg.train, max_steps=0, max_tokens=0, max_flops=0.0, max_device_hours=0.0)
    if budget == "device_hours":
        hours = cfg.train.max_device_hours
        if not (hours > 0 and hours < float("inf")):
            raise SpeclmError(f'methods.budget = "device_hours" needs train.max_device_hours > 0, got {hours!r}')
        steps = cfg.methods.pretrain_steps or cfg.train.max_steps
        bound = max(1, int(round(steps * share))) if steps > 0 else 0
        return dataclasses.replace(t, max_device_hours=hours * share, max_steps=bound)
    steps = pretrain_steps(ctx)
    if budget == "tokens":
        return dataclasses.replace(t, max_steps=max(1, int(round(steps * share))))
    s = shards(ctx)
    per_step = t.batch_size * t.grad_accum * s.window * flops_per_token(shape(ctx, "small"), s.window)
    own_step = t.batch_size * t.grad_accum * s.window * flops_per_token(shape(ctx, shape_kind), s.window)
    return dataclasses.replace(t, max_flops=max(per_step, own_step, steps * share * per_step))


def valid_fn(ctx: Context, set_name: str, extras: dict | None = None) -> Callable[[torch.nn.Module], float]:
    """Mean per-token NLL on (an evenly spread part of) a set's valid split.

    ``extras``: per-window arrays the model takes (a projected network's ``expert`` ids)."""
    from ..train.validate import make_valid_fn

    t = ctx.config.train
    w = shards(ctx).windows(set_name, "valid")
    if len(w) == 0:
        raise SpeclmError(f"{set_name}: the valid split has no windows; early stopping needs one")
    return make_valid_fn(w, max_windows=t.eval_batches * t.batch_size, batch_size=t.batch_size, dtype=t.dtype,
                         extras=extras)


def pretrain_model(
    ctx: Context,
    model,
    sampler,
    out_dir: Path,
    cfg,
    *,
    valid_set: str | None = GENERIC,
    valid_extras: dict | None = None,
    meta: dict | None = None,
    loss_fn=None,
    flops_per_token: float | None = None,
    prior_cost: dict | None = None,
    ddp: bool = True,
    snapshots=None,
):
    """Pretrain ``model`` on ``sampler`` into ``out_dir`` (the loop's folder; the model is
    ``out_dir/final``), validating on ``valid_set``'s valid split for the log (with
    ``valid_extras``, e.g. the valid windows' expert ids, when the model takes them);
    ``snapshots`` (speclm.methods.curves.snapshots_for): also ``out_dir/snapshots/f-<f>/``."""
    from ..train.loop import train
    return train(
        model,
        sampler,
        cfg,
        out_dir,
        valid_fn=valid_fn(ctx, valid_set, valid_extras) if valid_set else None,
        phase="pretrain",
        loss_fn=loss_fn,
        prior_cost=prior_cost,
        meta=meta,
        files=tokenizer_files(ctx),
        flops_per_token=flops_per_token,
        ddp=ddp,
        snapshots=snapshots,
    )


def budget_windows(ctx: Context, cfg, shape_kind: str = "small") -> int:
    """How many windows a pretraining with loop config ``cfg`` reads (its stream's length)."""
    from ..model.transformer import flops_per_token

    s = shards(ctx)
    per_step = cfg.batch_size * cfg.grad_accum
    if cfg.max_steps:
        return cfg.max_steps * per_step
    if not cfg.max_flops:
        raise SpeclmError("a device-hours budget cannot size a resampled stream: set methods.pretrain_steps as its step bound")
    fpt = flops_per_token(shape(ctx, shape_kind), s.window)
    steps = -(-int(cfg.max_flops) // int(fpt * s.window * per_step))
    return max(1, steps) * per_step
