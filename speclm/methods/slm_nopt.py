"""SLM-nopt: the small model trained from scratch on the domain's specialization set only
(no generic pretraining), under the fine-tuning protocol of every other method
(speclm.methods.finetune): validation at step 0 and about every half epoch, the same
patience, the best weights kept. Its cap is ``methods.nopt_max_epochs`` passes over the
size's windows (0 = ``finetune_max_epochs``; larger by default, since it starts from random
weights); its rate is ``methods.nopt_lr`` (0 = ``train.lr``, the pretraining rate) with
``train.schedule`` over the cap and ``train.warmup_steps`` of warmup, at most a tenth of the cap."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from . import inputs, jobs
from .base import Context, register
from .finetune import finetune, finetune_config, plan
from .recipe import PretrainThenFinetune, torch_seed
from ..core import manifest


@register
class SLMNoPretrain(PretrainThenFinetune):
    """Small model trained on the domain set alone (no pretraining), early stopping."""

    name = "slm-nopt"
    shared_pretraining = False
    pretrains = ()

    def pretrain(self, ctx: Context, domain: Optional[str] = None) -> Optional[Path]:
        ctx.log("slm-nopt has no generic pretraining: nothing to do")
        return None

    def train_config(self, ctx: Context, domain: str, size: str):
        """The fine-tuning loop config (validation schedule, patience), with nopt's cap,
        rate, schedule and warmup."""
        m, t = ctx.config.methods, ctx.config.train
        p = plan(ctx, domain, size, max_epochs=m.nopt_max_epochs or m.finetune_max_epochs)
        return dataclasses.replace(
            finetune_config(ctx, p), lr=m.nopt_lr or t.lr, schedule=t.schedule,
            warmup_steps=min(t.warmup_steps, p.max_steps // 10),
        )

    def specialize(self, ctx: Context, domain: str, size: str) -> Path:
        from ..model.transformer import Transformer

        folder = ctx.specialize_dir(self.name, domain, size)
        key = {
            "method": self.name, "domain": domain, "size": size, "tokens": inputs.tokens_fingerprint(ctx),
            "config": jobs.config_part(ctx, ("finetune_", "sizes", "nopt_")),
        }
        if manifest.open_job(folder, key, ctx.force):
            return folder / manifest.job_summary(folder)["checkpoint"]
        cfg = self.train_config(ctx, domain, size)
        torch_seed(cfg.seed)
        model = Transformer(inputs.shape(ctx, "small"))
        res = finetune(ctx, model, domain, size, folder, train_config=cfg, prior_cost={})
        return self.finish_specialize(ctx, folder, res, {})
