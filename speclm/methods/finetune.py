"""The shared fine-tuning helper: a model + a domain + a size -> a specialized checkpoint.

Every method specializes through :func:`finetune` (SLM-pn too). It follows the paper's
protocol (PAPER.md §5): next-token training on the size's slice of the domain train
split, validation on the domain valid split every ``methods.finetune_eval_every`` steps,
early stopping after ``methods.finetune_patience`` validations without improvement, the
best weights kept. The smallest configured size trains at the base rate times
``methods.finetune_small_lr_factor`` (the paper: lr / 3), larger ones at the base rate;
the step cap of each size is ``methods.finetune_max_steps`` (one per size in
``methods.sizes``, scaled to the preset).

Output (the training loop's folder, see speclm.train.loop)::

    OUT/final/        the specialized model (a plain checkpoint folder)
    OUT/cost.json     the prior (pretraining) costs carried over + this fine-tune's
    OUT/train.json    the loop's summary ("done": true); calling again returns at once
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch

from ..core.errors import SpeclmError
from .base import Context
from .inputs import tokenizer_files
from .pretraining import valid_fn
from .sizes import parse_size, size_label, slice_indices


@dataclass
class FinetunePlan:
    size: str
    lr: float
    max_steps: int
    train_windows: int
    train_tokens: int


@dataclass
class FinetuneResult:
    path: Path  # the fine-tuning folder (cost.json, metrics.jsonl, train.json)
    final: Path  # the specialized checkpoint folder
    best_valid_loss: float
    steps: int
    best_step: Optional[int]
    stop_reason: str
    plan: FinetunePlan
    cost: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "final": str(self.final),
            "best_valid_loss": self.best_valid_loss,
            "steps": self.steps,
            "best_step": self.best_step,
            "stop_reason": self.stop_reason,
            "plan": dataclasses.asdict(self.plan),
        }


def plan(ctx: Context, domain: str, size: str, steps_factor: float = 1.0) -> FinetunePlan:
    """Learning rate, step cap and training-set size of one fine-tune (paper protocol).

    ``methods.finetune_max_steps[i]`` is the cap of ``methods.sizes[i]``; a size that is
    not configured takes the cap of the smallest configured size at least as large (the
    largest one's beyond them all). Sizes up to the smallest configured one train at
    ``base rate * methods.finetune_small_lr_factor``."""
    from .inputs import shards

    m, t = ctx.config.methods, ctx.config.train
    if not m.finetune_max_steps or not m.sizes:
        raise SpeclmError("methods.sizes and methods.finetune_max_steps must be non-empty (one step cap per size)")
    if steps_factor <= 0:
        raise SpeclmError(f"fine-tuning steps factor must be positive, got {steps_factor}")
    caps = list(m.finetune_max_steps)
    pairs = sorted((parse_size(sz) or math.inf, caps[min(i, len(caps) - 1)]) for i, sz in enumerate(m.sizes))
    tokens = parse_size(size) or math.inf
    cap = next((c for tk, c in pairs if tk >= tokens), pairs[-1][1])
    smallest = tokens <= pairs[0][0]
    lr = (m.finetune_lr or t.lr) * (m.finetune_small_lr_factor if smallest else 1.0)
    s = shards(ctx)
    idx_w = slice_indices(size, len(s.windows(domain, "train")), s.window, seed=ctx.config.seed, domain=domain)
    return FinetunePlan(
        size=size_label(size),
        lr=lr,
        max_steps=max(1, int(round(cap * steps_factor))),
        train_windows=len(idx_w),
        train_tokens=len(idx_w) * s.window,
    )


def finetune_config(ctx: Context, p: FinetunePlan):
    """The training-loop config of a fine-tune: the run's train section, with the
    fine-tuning rate, cap, schedule, validation cadence and patience."""
    m, t = ctx.config.methods, ctx.config.train
    return dataclasses.replace(
        t,
        lr=p.lr,
        warmup_steps=m.finetune_warmup_steps,
        schedule=m.finetune_schedule,
        max_steps=p.max_steps,
        max_tokens=0,
        max_flops=0.0,
        max_device_hours=0.0,
        batch_size=m.finetune_batch_size or t.batch_size,
        eval_every=max(1, min(m.finetune_eval_every, p.max_steps)),
        patience=m.finetune_patience,
        checkpoint_every=max(t.checkpoint_every, m.finetune_eval_every),
    )


def load_model(init: Path | torch.nn.Module, ctx: Optional[Context] = None) -> torch.nn.Module:
    """The model to fine-tune; a checkpoint folder must have been trained with the run's tokenizer."""
    from ..train.checkpoint import check_tokenizer, load_transformer, read_meta

    if isinstance(init, torch.nn.Module):
        return init
    if ctx is not None:
        from .inputs import shards

        check_tokenizer(read_meta(Path(init)), shards(ctx), init)
    return load_transformer(Path(init))


def prior_cost_of(init: Path | torch.nn.Module) -> Optional[dict]:
    from ..train.cost import read_cost

    if isinstance(init, torch.nn.Module):
        return None
    try:
        return read_cost(Path(init))
    except SpeclmError:
        return None


def finetune(
    ctx: Context,
    init: Path | torch.nn.Module,
    domain: str,
    size: str,
    out_dir: Path,
    *,
    prior_cost: Optional[Mapping] = None,
    loss_fn: Optional[Callable] = None,
    steps_factor: float = 1.0,
    prepare: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None,
    finish: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None,
    flops_per_token: Optional[float] = None,
    lr_factor: float = 1.0,
    train_config=None,
    meta: Optional[Mapping] = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``init`` (a checkpoint folder or a model) on ``size`` tokens of ``domain``.

    prior_cost: the cost.json the model was built from (default: the one next to ``init``).
    loss_fn: the loop's ``loss_fn(model, batch)`` (distillation); default cross-entropy.
    steps_factor, lr_factor: multiply the step cap and the learning rate (LoRA).
    train_config: the whole loop config instead of the paper's fine-tuning one (SLM-nopt).
    prepare / finish: transform the model before training (e.g. add LoRA adapters) and
        the trained model before it is saved as the result (e.g. merge them); with
        ``finish``, the result is ``OUT/merged`` (``OUT/final`` keeps the trained form).
    """
    from ..train.checkpoint import save_checkpoint
    from ..train.data import WindowSampler
    from ..train.loop import train
    from .inputs import shards

    p = plan(ctx, domain, size, steps_factor)
    if lr_factor <= 0:
        raise SpeclmError(f"fine-tuning lr factor must be positive, got {lr_factor}")
    p.lr *= lr_factor
    s = shards(ctx)
    windows = s.windows(domain, "train")
    idx = slice_indices(size, len(windows), s.window, seed=ctx.config.seed, domain=domain)
    cfg = train_config if train_config is not None else finetune_config(ctx, p)
    if train_config is not None:
        p.lr, p.max_steps = cfg.lr, cfg.max_steps
    sampler = WindowSampler(windows, cfg.batch_size, seed=cfg.seed, indices=idx)
    if prior_cost is None:
        prior_cost = prior_cost_of(init)
    model = load_model(init, ctx)
    if prepare is not None:
        model = prepare(model)
    out_dir = Path(out_dir)
    ctx.log(f"fine-tune {out_dir}: {p.train_tokens} tokens ({p.train_windows} windows), lr {p.lr:.3g}, <= {p.max_steps} steps")
    res = train(
        model,
        sampler,
        cfg,
        out_dir,
        valid_fn=valid_fn(ctx, domain),
        phase="specialize",
        loss_fn=loss_fn,
        early_stopping=True,
        prior_cost=prior_cost,
        meta={**(meta or {}), "domain": domain, "size": p.size},
        files=tokenizer_files(ctx),
        flops_per_token=flops_per_token,
        progress=progress,
    )
    final = out_dir / "final"
    if finish is not None:
        final = out_dir / "merged"
        if not (final / "model.json").exists():  # written whole or not at all
            save_checkpoint(
                final,
                finish(model),
                meta={**(meta or {}), "domain": domain, "size": p.size, "phase": "specialize", "step": res.best_step},
                files=tokenizer_files(ctx),
            )
    return FinetuneResult(
        path=out_dir,
        final=final,
        best_valid_loss=float(res.best_valid if res.best_valid is not None else math.inf),
        steps=res.steps,
        best_step=res.best_step,
        stop_reason=res.stop_reason,
        plan=p,
        cost=res.cost,
    )
