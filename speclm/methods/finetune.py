"""The shared fine-tuning helper: a model + a domain + a size -> a specialized checkpoint.

Every method specializes through :func:`finetune` (SLM-pn too). It follows the paper's
protocol (docs/paper.md §5): next-token training on the size's slice of the domain train
split, validation on the domain valid split before the first step (the starting weights are
a candidate) and then about every half epoch of the slice (``methods.finetune_eval_every``
overrides), early stopping after ``methods.finetune_patience`` validations without
improvement, the best weights kept. The step cap is ``methods.finetune_max_epochs`` passes
over the slice (bounded by ``methods.finetune_max_steps[i]`` for ``methods.sizes[i]`` when
that list is given), so the best step usually falls inside it. A set of at most
``methods.finetune_small_tokens`` tokens trains at the base rate times
``methods.finetune_small_lr_factor`` (the paper: lr / 3 for its smallest set), a larger one
(or "all") at the base rate: one absolute rule, the same whichever other sizes are
configured (:func:`small_set`; issue 19). Every result says how it stopped (``stop``): ``early``
(patience ran out), ``cap`` (the step cap came first) or ``pretrained`` (no step beat the
starting weights, which are the result), with ``best_step`` and the ``epochs`` seen.

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
    eval_every: int = 1  # steps between validations (about half an epoch by default)
    max_epochs: float = 0.0  # the cap in passes over the slice (before finetune_max_steps bounds it)


STOPS = ("early", "cap", "pretrained")


def stop_of(best_step: Optional[int], stop_reason: str) -> str:
    """How a fine-tune ended: ``pretrained`` (the starting weights stayed best), ``early``
    (patience ran out) or ``cap`` (a budget: the step cap)."""
    if best_step == 0:
        return "pretrained"
    return "early" if stop_reason == "early_stopping" else "cap"


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
    epochs: float = 0.0  # passes over the slice seen
    best_epoch: float = 0.0

    @property
    def stop(self) -> str:
        return stop_of(self.best_step, self.stop_reason)

    def to_json(self) -> dict:
        return {
            "path": str(self.path),
            "final": str(self.final),
            "best_valid_loss": self.best_valid_loss,
            "steps": self.steps,
            "best_step": self.best_step,
            "stop_reason": self.stop_reason,
            "stop": self.stop,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "plan": dataclasses.asdict(self.plan),
        }


def plan(ctx: Context, domain: str, size: str, steps_factor: float = 1.0,
         max_epochs: Optional[float] = None) -> FinetunePlan:
    """Learning rate, step cap, validation interval and training-set size of one fine-tune.

    The cap is ``max_epochs`` (default ``methods.finetune_max_epochs``) passes over the
    size's windows, times ``steps_factor``; when ``methods.finetune_max_steps`` is given,
    its entry ``i`` bounds ``methods.sizes[i]`` (a size not configured takes the bound of
    the smallest configured size at least as large; 0 = none). Validation every
    ``methods.finetune_eval_every`` steps, 0 = about half an epoch (at least 1 step).
    A set of at most ``methods.finetune_small_tokens`` tokens trains at ``base rate *
    methods.finetune_small_lr_factor``, a larger one at the base rate (:func:`small_set`),
    whichever other sizes are configured."""
    from .inputs import shards

    m, t = ctx.config.methods, ctx.config.train
    if not m.sizes:
        raise SpeclmError("methods.sizes must be non-empty")
    if steps_factor <= 0:
        raise SpeclmError(f"fine-tuning steps factor must be positive, got {steps_factor}")
    epochs = m.finetune_max_epochs if max_epochs is None else max_epochs
    if not (epochs > 0 and math.isfinite(epochs)):
        raise SpeclmError(f"the fine-tuning cap must be a positive number of epochs, got {epochs!r}")
    if m.finetune_eval_every < 0 or any(c < 0 for c in m.finetune_max_steps):
        raise SpeclmError("methods.finetune_eval_every and methods.finetune_max_steps must be >= 0 (0 = derived / none)")
    tokens = parse_size(size) or math.inf
    lr = (m.finetune_lr or t.lr) * (m.finetune_small_lr_factor if small_set(ctx, size) else 1.0)
    s = shards(ctx)
    idx_w = slice_indices(size, len(s.windows(domain, "train")), s.window, seed=ctx.config.seed, domain=domain)
    steps_per_epoch = len(idx_w) / ((m.finetune_batch_size or t.batch_size) * t.grad_accum)
    cap = math.ceil(epochs * steps_per_epoch)
    caps = list(m.finetune_max_steps)
    if caps:
        pairs = sorted((parse_size(sz) or math.inf, caps[min(i, len(caps) - 1)]) for i, sz in enumerate(m.sizes))
        bound = next((c for tk, c in pairs if tk >= tokens), pairs[-1][1])
        cap = min(cap, bound) if bound > 0 else cap
    cap = max(1, int(round(cap * steps_factor)))
    every = m.finetune_eval_every or max(1, int(round(steps_per_epoch / 2)))
    return FinetunePlan(
        size=size_label(size),
        lr=lr,
        max_steps=cap,
        train_windows=len(idx_w),
        train_tokens=len(idx_w) * s.window,
        eval_every=min(every, cap),
        max_epochs=epochs,
    )


def small_set(ctx: Context, size: str) -> bool:
    """Whether a set of ``size`` trains at the small-set rate: at most
    ``methods.finetune_small_tokens`` tokens ("all" never does)."""
    tokens = parse_size(size)
    return tokens is not None and tokens <= ctx.config.methods.finetune_small_tokens


def rate_key(ctx: Context, size: str) -> dict:
    """The rate rule's part of a specialization's job key. The key's config part
    (:func:`speclm.methods.jobs.config_part`) carries ``methods.sizes`` and the factor but
    not ``finetune_small_tokens``: a key made before the absolute rule implied the old one
    (the small rate up to the smallest configured size), so the key names the rule's
    decision only where the two differ. A job whose rate is unchanged keeps its key and
    folder; one whose rate changed (e.g. cpu-full's 16k sets) reruns."""
    tokens = parse_size(size) or math.inf
    legacy = tokens <= min(parse_size(sz) or math.inf for sz in ctx.config.methods.sizes)
    small = small_set(ctx, size)
    return {} if small == legacy else {"finetune_small_rate": small}


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
        eval_every=p.eval_every,
        patience=m.finetune_patience,
        checkpoint_every=max(t.checkpoint_every, p.eval_every),
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
        p.lr, p.max_steps, p.eval_every = cfg.lr, cfg.max_steps, cfg.eval_every
    sampler = WindowSampler(windows, cfg.batch_size, seed=cfg.seed, indices=idx)
    if prior_cost is None:
        prior_cost = prior_cost_of(init)
    model = load_model(init, ctx)
    if prepare is not None:
        model = prepare(model)
    out_dir = Path(out_dir)
    ctx.log(f"fine-tune {out_dir}: {p.train_tokens} tokens ({p.train_windows} windows), lr {p.lr:.3g}, <= {p.max_steps} steps, validation every {p.eval_every}")
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
        epochs=res.tokens / max(1, p.train_tokens),
        best_epoch=(res.best_step or 0) * (res.tokens / max(1, res.steps)) / max(1, p.train_tokens),
    )
