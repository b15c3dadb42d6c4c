"""The one training loop: every method (SLM, SLM-is, SLM-mix, PN, distillation, LoRA)
trains through :func:`train`.

It brings: AdamW, warmup + cosine/constant schedule, gradient accumulation, bf16
autocast, optional torch.compile, a budget in steps/tokens/FLOPs/device-hours (the first
reached stops), periodic validation, early stopping, resumable checkpoints, metrics as
JSONL (and TensorBoard: speclm.train.logger), cost.json, a progress bar, and DDP under torchrun.

Output folder::

    OUT/checkpoint/     the latest resumable checkpoint (model, optimizer, state)
    OUT/best/           the best-validation weights so far (when validating)
    OUT/final/          the result: best weights with early stopping, else the last
    OUT/metrics.jsonl   one row per logged step / validation
    OUT/tensorboard/    the same rows as TensorBoard events (train.logger = "tensorboard")
    OUT/cost.json       tokens, FLOPs, wall seconds, device-hours, per phase
    OUT/train.json      the summary, written last ("done": true)

Calling :func:`train` again on the same folder resumes from ``OUT/checkpoint`` and ends
with the same weights as an uninterrupted run; on a finished folder it returns at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from tqdm.auto import tqdm

from ..core.progress import progress as progress_bar

from ..core import atomic
from ..core.errors import SpeclmError
from ..core.manifest import hash_obj
from . import checkpoint as ckpt
from ..core import ranks as distributed
from .budget import Budget
from .heap import training_heap
from ..core.sections import TrainConfig
from .cost import check_phase, device_kind
from .logger import CurveLogger, check_logger
from .resume import FINAL, METRICS, Saver, finished_result, new_state, prepare_folder
from .schedule import Schedule
from .snapshots import Snapshots

BETAS = (0.9, 0.95)
_RESTART: contextvars.ContextVar[bool] = contextvars.ContextVar("speclm_restart", default=False)


@contextlib.contextmanager
def restarting(on: bool = True):
    """Inside it, every training job started drops its state and results and starts over
    (``--restart`` of `speclm train`, `pretrain`, `specialize`: the way out of a damaged
    checkpoint)."""
    token = _RESTART.set(on)
    try:
        yield
    finally:
        _RESTART.reset(token)

# Peak dense bf16 FLOP/s, for MFU on GPUs we know.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


@dataclass
class TrainResult:
    out_dir: Path
    final_dir: Path
    steps: int
    tokens: int
    flops: float
    stop_reason: str
    best_valid: Optional[float] = None
    best_step: Optional[int] = None
    last_valid: Optional[float] = None
    cost: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"], d["final_dir"] = str(self.out_dir), str(self.final_dir)
        return d


def default_loss(model: torch.nn.Module, batch) -> torch.Tensor:
    """Mean next-token cross-entropy; a batch's extras go to the model as keywords. The
    logits are not asked for (``return_logits=False``: speclm's models then compute the
    loss without holding them; see speclm.model.output_loss)."""
    extras = batch[2] if len(batch) > 2 else {}
    return model(batch[0], batch[1], return_logits=False, **extras)[1]


def _to_device(batch, device: torch.device):
    nb = device.type == "cuda"
    out = [t.to(device, non_blocking=nb) for t in batch[:2]]
    if len(batch) > 2:
        out.append({k: v.to(device, non_blocking=nb) for k, v in batch[2].items()})
    return tuple(out)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast or nothing (fp32); shared by training and evaluation."""
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if dtype != "fp32":
        raise SpeclmError(f"dtype must be fp32 or bf16, got {dtype!r}")
    return contextlib.nullcontext()


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices decay, vectors (norms, biases) do not."""
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    # fused: one kernel per tensor (torch >= 2.4 has it on CPU too: 0.5 against 1.3 ms a step at the tiny shape)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=BETAS, eps=1e-8, fused=device.type in ("cuda", "cpu"))


def _peak_flops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _check_config(cfg: TrainConfig) -> None:
    for name in ("batch_size", "grad_accum"):
        if getattr(cfg, name) <= 0:
            raise SpeclmError(f"train.{name} must be positive, got {getattr(cfg, name)}")
    for name in ("eval_every", "checkpoint_every", "log_every"):
        if getattr(cfg, name) < 0:
            raise SpeclmError(f"train.{name} must be >= 0, got {getattr(cfg, name)}")
    if not (cfg.grad_clip >= 0):
        raise SpeclmError(f"train.grad_clip must be >= 0 (0 = no clipping), got {cfg.grad_clip}")
    if cfg.patience <= 0:
        raise SpeclmError(f"train.patience must be positive, got {cfg.patience}")
    check_logger(cfg.logger)


def train(model: torch.nn.Module, sampler, cfg: TrainConfig, out_dir: str | Path, **kw) -> TrainResult:
    """Train ``model`` under ``out_dir``'s lock (held by the process that writes it: rank 0,
    or every rank with ``ddp=False``), so a second process on the same folder waits and then
    finds the run finished; see :func:`_train` for the arguments."""
    from ..core.locks import hold

    rank, _ = distributed.env_rank_world()
    curves = CurveLogger(cfg.logger, Path(out_dir))  # live curves; closed (flushed) even when training fails
    try:
        with training_heap():  # freed memory kept for the next step (speclm.train.heap)
            if rank != 0 and kw.get("ddp", True):
                return _train(model, sampler, cfg, out_dir, curves=curves, **kw)
            with hold(out_dir, f"training {out_dir}", log=tqdm.write):
                return _train(model, sampler, cfg, out_dir, curves=curves, **kw)
    finally:
        curves.close()


def _train(
    model: torch.nn.Module,
    sampler,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    valid_fn: Optional[Callable[[torch.nn.Module], float]] = None,
    phase: str = "pretrain",
    loss_fn: Optional[Callable] = None,
    early_stopping: bool = False,
    prior_cost: Optional[Mapping] = None,
    meta: Optional[Mapping] = None,
    files: Optional[Mapping[str, str | Path]] = None,
    flops_per_token: Optional[float] = None,
    device: Optional[str | torch.device] = None,
    progress: bool = True,
    ddp: bool = True,
    snapshots: Optional[Snapshots] = None,
    curves: Optional[CurveLogger] = None,
) -> TrainResult:
    """Train ``model`` on ``sampler`` batches until the budget in ``cfg`` is spent.

    model: any module; with the default loss, ``model(x, y, **extras)`` returns ``(logits, loss)``.
        Only parameters with ``requires_grad`` train (LoRA trains a subset).
    sampler: ``sampler.batch(position)`` -> (x, y[, extras]); ``sampler.seq_len``.
    valid_fn: model -> validation loss (lower is better), called every ``cfg.eval_every``
        steps and at the end. ``early_stopping`` also validates before the first step (the
        starting weights are a candidate: ``best_step`` 0 means training only hurt), stops
        after ``cfg.patience`` validations without improvement and makes the best weights
        the result.
    loss_fn: ``loss_fn(model, batch) -> scalar loss`` (distillation, PN); default
        :func:`default_loss`.
    phase: ``pretrain`` or ``specialize`` (where the run's costs go in cost.json).
    prior_cost: the cost.json of the run this one starts from (carried into ours).
    meta, files: extra model.json fields and files copied into every checkpoint folder
        (e.g. the tokenizer).
    flops_per_token: training FLOPs per token; default ``model.flops_per_token(seq_len)``.
    ddp: False trains this process's model alone even under torchrun (independent jobs
        spread over ranks, e.g. SLM-mix experts): no DDP, every rank writes its own folder.
    snapshots: weights-only checkpoints at fractions of the budget's steps (speclm.train.snapshots).
    curves: where the rows also go as live curves (speclm.train.logger; :func:`train` opens it).
    """
    check_phase(phase)
    _check_config(cfg)
    out = Path(out_dir)
    dist = distributed.setup(device) if ddp else distributed.local(device)
    dev = dist.device
    seq_len = int(sampler.seq_len)
    base = ckpt.unwrap(model)
    if flops_per_token is None:
        if not hasattr(base, "flops_per_token"):
            raise SpeclmError("train(): pass flops_per_token= for a model without a flops_per_token() method")
        flops_per_token = float(base.flops_per_token(seq_len))
    tokens_per_step = cfg.batch_size * seq_len * cfg.grad_accum * dist.world_size
    flops_per_step = flops_per_token * tokens_per_step
    budget = Budget.from_config(cfg)
    budget.check(tokens_per_step, flops_per_step)
    schedule = Schedule(
        lr=cfg.lr, warmup_steps=cfg.warmup_steps, kind=cfg.schedule,
        total_steps=budget.horizon_steps(tokens_per_step, flops_per_step), min_ratio=cfg.min_lr_ratio,
    )
    run_id = hash_obj({"cfg": cfg.result_fields(), "phase": phase, "early_stopping": early_stopping,
                       "world": dist.world_size, "validating": valid_fn is not None,
                       **({"validate_first": True} if early_stopping and valid_fn is not None else {})})
    loss_fn = loss_fn or default_loss
    due = snapshots.due(schedule.total_steps) if snapshots else {}  # step -> fractions to snapshot after it

    prepare_folder(out, dist, restart=_RESTART.get())  # what a killed run left; with --restart, all of its state
    res = finished_result(out, run_id, base)
    if res is not None:
        return TrainResult(**{**res, "out_dir": out, "final_dir": out / FINAL})

    base.to(dev)
    params = [p for p in base.parameters() if p.requires_grad]
    if not params:
        raise SpeclmError("the model has no trainable parameters")
    optimizer = make_optimizer(params, cfg, dev)
    st = new_state()
    saver = Saver(out, dist, base, optimizer, st, run_id, schedule, tokens_per_step, {**(meta or {}), "phase": phase},
                  files, phase, prior_cost, device_kind(dev))
    saver.resume_or_seed(cfg.seed)

    if cfg.dtype == "bf16" and dev.type == "cpu" and not cpu_has_fast_bf16() and dist.is_main:
        tqdm.write("speclm: warning: train.dtype=bf16 on a CPU without native bf16 (AVX512-BF16/AMX) is several "
                   "times slower than fp32 (measured 7-15x on AVX2); consider --set train.dtype=fp32")
    fwd = distributed.wrap(base, dist)
    if cfg.compile:
        fwd = torch.compile(fwd)
    peak = _peak_flops(dev)

    curves = curves or CurveLogger("jsonl", out)
    curves.start(st["step"], enabled=dist.is_main)

    def validate() -> None:
        saver.record_valid(float(valid_fn(base)))
        curves.log({"step": st["step"], "valid_loss": st["last_valid"], "best_valid": st["best_valid"]})

    horizon = schedule.total_steps or None
    bar = progress_bar(horizon, desc=f"train {out.name}", unit="step", initial=st["step"],
                       show=bool(progress and dist.is_main))
    stop = budget.reached(st["step"], st["tokens"], st["flops"], st["wall_seconds"] * dist.world_size / 3600)
    if st["step"] > 0 and valid_fn is not None and early_stopping and st["bad_evals"] >= cfg.patience:
        stop = "early_stopping"
    if valid_fn is not None and early_stopping and st["last_eval_step"] < 0:
        validate()  # step 0: the starting weights are the first candidate
    fwd.train()
    t_last, tok_last = time.perf_counter(), st["tokens"]
    while stop is None:
        distributed.check_parent()  # a grid worker whose grid process died stops here (resumable)
        t0 = time.perf_counter()
        for g in optimizer.param_groups:
            g["lr"] = schedule(st["step"])
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            pos = (st["position"] + micro) * dist.world_size + dist.rank
            batch = _to_device(sampler.batch(pos), dev)
            sync = micro == cfg.grad_accum - 1 or not dist.enabled
            with (contextlib.nullcontext() if sync else fwd.no_sync()):
                with autocast(dev, cfg.dtype):
                    loss = loss_fn(fwd, batch)
                (loss / cfg.grad_accum).backward()
            loss_sum += float(loss.detach())
        loss_val = loss_sum / cfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if not (math.isfinite(loss_val) and math.isfinite(float(grad_norm))):
            bar.close()
            what = "loss" if not math.isfinite(loss_val) else "gradient norm"
            good = saver.last_good()
            if dist.is_main:
                atomic.append_jsonl(out / METRICS, {"step": st["step"] + 1, "event": f"non-finite {what}"})
            raise SpeclmError(
                f"training stopped: the {what} is not finite at step {st['step'] + 1}; the last good checkpoint is "
                f"{good}; lower train.lr or use train.dtype=fp32"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        st["step"] += 1
        st["position"] += cfg.grad_accum
        st["tokens"] += tokens_per_step
        st["flops"] += flops_per_step
        if dev.type == "cuda" and cfg.log_every and st["step"] % cfg.log_every == 0:
            torch.cuda.synchronize(dev)
        st["wall_seconds"] += time.perf_counter() - t0
        bar.update(1)

        if cfg.log_every and st["step"] % cfg.log_every == 0:
            now = time.perf_counter()
            tok_s = (st["tokens"] - tok_last) / max(now - t_last, 1e-9)
            t_last, tok_last = now, st["tokens"]
            row = {"step": st["step"], "loss": distributed.mean(loss_val, dist), "lr": optimizer.param_groups[0]["lr"],
                   "grad_norm": float(grad_norm), "tokens": st["tokens"], "tok_s": tok_s}
            post = {"loss": f"{row['loss']:.3f}", "tok/s": f"{tok_s:,.0f}"}
            if peak:
                row["mfu"] = tok_s * flops_per_token / (peak * dist.world_size)
                post["mfu"] = f"{row['mfu']:.1%}"
            bar.set_postfix(post)
            if dist.is_main:
                atomic.append_jsonl(out / METRICS, row)
            curves.log(row)

        t1 = time.perf_counter()
        if st["step"] in due:  # before this step's checkpoint: a resumed run never skips it
            saver.save_snapshots(snapshots, due[st["step"]])
        if valid_fn is not None and cfg.eval_every and st["step"] % cfg.eval_every == 0:
            validate()
            if early_stopping and st["bad_evals"] >= cfg.patience:
                stop = "early_stopping"
        if stop is None:
            stop = budget.reached(st["step"], st["tokens"], st["flops"], st["wall_seconds"] * dist.world_size / 3600)
        if stop is None and cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0:
            saver.save_resumable()
        spent = time.perf_counter() - t1
        st["wall_seconds"] += spent  # counts in the cost, not in tokens/s
        t_last += spent
    bar.close()

    if valid_fn is not None and st["last_eval_step"] != st["step"]:
        validate()
    saver.save_resumable()
    final_step = saver.restore_best() if early_stopping else st["step"]
    result = TrainResult(
        out_dir=out, final_dir=out / FINAL, steps=st["step"], tokens=st["tokens"], flops=st["flops"],
        stop_reason=stop, best_valid=st["best_valid"], best_step=st["best_step"], last_valid=st["last_valid"],
        cost=saver.cost(),
    )
    saver.save_final(result, final_step)
    return result
