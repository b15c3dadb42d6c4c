"""SLM-nopt: the small model trained from scratch on the domain's specialization set only
(no generic pretraining), with early stopping on the domain valid split."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from . import inputs, jobs, pretraining
from .base import Context, register
from .finetune import finetune
from .recipe import PretrainThenFinetune, torch_seed


@register
class SLMNoPretrain(PretrainThenFinetune):
    """Small model trained on the domain set alone (no pretraining), early stopping."""

    name = "slm-nopt"
    shared_pretraining = False
    pretrains = ()

    def pretrain(self, ctx: Context, domain: Optional[str] = None) -> Optional[Path]:
        ctx.log("slm-nopt has no generic pretraining: nothing to do")
        return None

    def specialize(self, ctx: Context, domain: str, size: str) -> Path:
        from ..model.transformer import Transformer

        folder = ctx.specialize_dir(self.name, domain, size)
        key = {
            "method": self.name, "domain": domain, "size": size, "tokens": inputs.tokens_fingerprint(ctx),
            "config": jobs.config_part(ctx, ("pretrain_steps", "budget", "finetune_", "sizes", "nopt_")),
        }
        if jobs.open_job(folder, key, ctx.force):
            return folder / jobs.job_summary(folder)["checkpoint"]
        m = ctx.config.methods
        # Pretraining rate and warmup; capped by the pretraining budget, or by the size's
        # fine-tuning cap x methods.nopt_steps_factor; early stopping on the domain valid split.
        cfg = dataclasses.replace(
            pretraining.pretrain_config(ctx), eval_every=m.finetune_eval_every, patience=m.finetune_patience,
            batch_size=m.finetune_batch_size or ctx.config.train.batch_size,
        )
        if m.nopt_steps_factor > 0:
            from .finetune import plan

            cap = plan(ctx, domain, size, m.nopt_steps_factor).max_steps
            cfg = dataclasses.replace(cfg, max_steps=cap, max_flops=0.0)
        torch_seed(cfg.seed)
        model = Transformer(inputs.shape(ctx, "small"))
        res = finetune(ctx, model, domain, size, folder, train_config=cfg, prior_cost={})
        return self.finish_specialize(ctx, folder, res, {})
