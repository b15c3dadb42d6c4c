"""The common recipe: pretrain one model on a stream of windows, then fine-tune it.

SLM, LLM, LLM-lora, SLM-is and SLM-dsir are this recipe with another model size or
another pretraining stream; SLM-mix, SLM-d and SLM-nopt override a verb. A method file
says only what is particular to it.

Folders: the pretraining job is ``pretrain/<name>[/<domain>]/`` (the loop's folder; the
model is its ``final/``), the specialization job ``specialize/<name>/<domain>/<size>/``
(its ``final/`` is the specialized model). Each job folder holds a ``manifest.json``
(what it was computed from and, once finished, its summary); see
:func:`speclm.core.manifest.open_job`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from . import curves, inputs, jobs, pretraining
from .base import Context, Method
from .finetune import FinetuneResult, finetune, rate_key
from .specset import Target
from ..core import manifest


class PretrainThenFinetune(Method):
    shape_kind: ClassVar[str] = "small"  # which model shape pretrains (small | large)
    pretrain_fields: ClassVar[tuple[str, ...]] = ("pretrain_steps", "budget")  # methods.* the pretraining depends on
    finetune_fields: ClassVar[tuple[str, ...]] = ("finetune_", "sizes")
    pretrain_from: ClassVar[Optional[str]] = None  # reuse another method's pretraining (llm-lora -> llm)

    # -- what a subclass may change ---------------------------------------------------------

    def pretrain_key(self, ctx: Context, domain: Optional[str]) -> dict:
        key = {
            "method": self.pretrain_from or self.name,
            "domain": domain,
            "tokens": inputs.tokens_fingerprint(ctx),
            "shape": self.shape_kind,
            "config": jobs.config_part(ctx, self.pretrain_fields),
        }
        if self.cluster_ks(ctx):
            key["clusters"] = inputs.clusters_fingerprint(ctx)
        return {**key, **curves.key_part(ctx, self.pretrain_from or self.name)}

    def pretrain_indices(self, ctx: Context, domain: Optional[str]) -> tuple[Optional[np.ndarray], dict]:
        """The generic train windows to sample (None: all, uniformly) and what to report.
        A method with a :meth:`pretrain_target` takes it as a third argument."""
        return None, {}

    def pretrain_target(self, ctx: Context, domain: str, size: Optional[str]) -> Optional[Target]:
        """Per-domain pretraining computed from the specialization set (SLM-is, SLM-dsir):
        the slice's histogram; its hash keys the job. None: not computed from the set."""
        return None

    def budget_share(self, ctx: Context) -> float:
        """The share of the grid's pretraining budget this method's pretraining gets: a
        per-domain pretraining gets ``methods.per_domain_budget``."""
        return ctx.config.methods.per_domain_budget if self.needs_domain_for_pretrain else 1.0

    def finetune_kwargs(self, ctx: Context, domain: str, size: str) -> dict:
        return {}

    # -- the two verbs ----------------------------------------------------------------------

    def pretrain_folder(self, ctx: Context, domain: Optional[str], target: Optional[Target] = None) -> Path:
        """``pretrain/<name>[/<domain>[/h-<histogram hash>]]``."""
        folder = ctx.pretrain_dir(self.pretrain_from or self.name, domain if self.needs_domain_for_pretrain else None)
        return folder / f"h-{target.hash}" if target is not None else folder

    def pretrain(self, ctx: Context, domain: Optional[str] = None, size: Optional[str] = None) -> Path:
        """The pretrained checkpoint; per-domain methods with a target pretrain for the
        ``size``'s specialization set (default: the whole train split)."""
        return self._pretrain(ctx, domain, size)[0]

    def _pretrain(self, ctx: Context, domain: Optional[str], size: Optional[str]) -> tuple[Path, Optional[Target]]:
        from ..model.transformer import Transformer
        from ..train.data import WindowSampler

        if not self.needs_domain_for_pretrain:
            domain = None
        target = self.pretrain_target(ctx, domain, size) if domain is not None else None
        folder = self.pretrain_folder(ctx, domain, target)
        key = self.pretrain_key(ctx, domain)
        if target is not None:
            key["histogram"] = target.hash
        if manifest.open_job(folder, key, ctx.force and not self.pretrain_from):
            return curves.start(ctx, folder), target
        cfg = pretraining.pretrain_config(ctx, self.budget_share(ctx), self.shape_kind)
        indices, report = self.pretrain_indices(ctx, domain, target) if target is not None else self.pretrain_indices(ctx, domain)
        if target is not None:
            report = {**report, "specialization_set": target.report()}
        generic = inputs.shards(ctx).windows(inputs.GENERIC, "train")
        sampler = WindowSampler(generic, cfg.batch_size, seed=cfg.seed, indices=indices)
        torch_seed(cfg.seed)
        model = Transformer(inputs.shape(ctx, self.shape_kind))
        ctx.log(f"pretrain {self.pretrain_from or self.name}{' / ' + domain if domain else ''} -> {folder}")
        unit = self.pretrain_from or self.name
        res = pretraining.pretrain_model(ctx, model, sampler, folder, cfg, meta={"method": self.name, "domain": domain},
                                         snapshots=curves.snapshots_for(ctx, unit) if domain is None else None)
        manifest.finish_job(folder, {"method": unit, "domain": domain, **report, "train": _train_summary(res)})
        return curves.start(ctx, folder), target

    def _start(self, ctx: Context, domain: str, size: str) -> tuple[Optional[Path], Optional[Target]]:
        """The pretrained checkpoint a specialization starts from (through a subclass's own
        ``pretrain`` when it has one: SLM-d, SLM-nopt), and the set's target if any."""
        if self.needs_domain_for_pretrain:
            return self._pretrain(ctx, domain, size)
        return self.pretrain(ctx, domain), None

    def start_checkpoint(self, ctx: Context, domain: str, size: str, folder: Path) -> Optional[Path]:
        return self._start(ctx, domain, size)[0]

    def specialize(self, ctx: Context, domain: str, size: str) -> Path:
        pre, target = self._start(ctx, domain, size)
        folder = ctx.specialize_dir(self.name, domain, size)
        key = {
            "method": self.name,
            "domain": domain,
            "size": size,
            "pretrain": jobs.upstream_hash(curves.loop_folder(pre)),
            "config": jobs.config_part(ctx, self.finetune_fields),
            **rate_key(ctx, size),
            **curves.spec_key(ctx),
        }
        if manifest.open_job(folder, key, ctx.force):
            return folder / manifest.job_summary(folder)["checkpoint"]
        res = finetune(ctx, pre, domain, size, folder, **self.finetune_kwargs(ctx, domain, size))
        report = manifest.job_summary(curves.loop_folder(pre))
        extra = {k: v for k, v in report.items() if k not in ("train", "method", "domain", "specialization_set")}
        out = {"pretraining": extra} if extra else {}
        if target is not None:  # this size's set (the job may have been made for another size's equal histogram)
            out["specialization_set"] = target.report()
        return self.finish_specialize(ctx, folder, res, out)

    def finish_specialize(self, ctx: Context, folder: Path, res: FinetuneResult, extra: dict) -> Path:
        rel = res.final.relative_to(folder)
        manifest.finish_job(
            folder,
            {"method": self.name, "checkpoint": str(rel), **res.to_json(),
             "path": str(folder), "final": str(res.final), **extra},
        )
        return res.final


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _train_summary(res) -> dict:
    """A pretraining's summary. Measured time per token, to set the projected network's
    beside the SLM's: ``seconds_per_token`` (the whole run's device time / tokens, validation
    included) and ``step_seconds_per_token`` (the median over the loop's logged intervals of
    training steps alone; None when no interval was logged)."""
    from ..core import atomic

    own = (res.cost or {}).get("pretrain") or {}
    spt = own.get("device_hours", 0.0) * 3600 / res.tokens if res.tokens else None
    rates = sorted(1.0 / r["tok_s"] for r in atomic.read_jsonl(Path(res.out_dir) / "metrics.jsonl") if r.get("tok_s"))
    return {"steps": res.steps, "tokens": res.tokens, "flops": res.flops, "stop_reason": res.stop_reason,
            "best_valid": res.best_valid, "last_valid": res.last_valid, "seconds_per_token": spt,
            "step_seconds_per_token": rates[len(rates) // 2] if rates else None,
            "flops_per_token": res.flops / res.tokens if res.tokens else None}
