"""SLM-d: distillation (docs/paper.md §2.1). The LLM teacher is fine-tuned on the domain (the
``llm`` method's specialization, reused); the generic-pretrained SLM student is then
fine-tuned on a mix of the domain targets and the teacher's next-token distribution:

    loss = (1 - alpha) * CE(student, targets) + alpha * T^2 * KL(teacher_T || student_T)

(``methods.distill_alpha``, ``methods.distill_temperature``; Hinton et al. 2015).

Costs (cost.json): generic = the teacher's and the student's pretraining; specialization
= the teacher's fine-tuning, the student's fine-tuning and the teacher's forward passes
during it (counted in the student's FLOPs per token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from . import inputs, jobs
from .base import Context, get, register
from .finetune import finetune, rate_key
from .recipe import PretrainThenFinetune
from ..core import manifest


def distillation_loss(teacher: torch.nn.Module, alpha: float, temperature: float):
    """The loop's ``loss_fn(model, batch)`` mixing targets and the teacher's distribution."""

    def loss_fn(model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits, ce = model(x, y)
        if alpha == 0:
            return ce
        if next(teacher.parameters()).device != x.device:
            teacher.to(x.device)
        with torch.no_grad():
            t_logits, _ = teacher(x)
        s = F.log_softmax(logits.float() / temperature, dim=-1)
        t = F.log_softmax(t_logits.float() / temperature, dim=-1)
        kl = F.kl_div(s.view(-1, s.shape[-1]), t.view(-1, t.shape[-1]), log_target=True, reduction="batchmean")
        return (1 - alpha) * ce + alpha * temperature**2 * kl

    return loss_fn


def add_costs(*docs: Optional[dict], phase: str) -> dict:
    from dataclasses import asdict

    from ..train.cost import PhaseCost

    total = PhaseCost()
    for d in docs:
        if d and phase in d:
            total = total.plus(PhaseCost(**d[phase]))
    return asdict(total)


@register
class SLMDistill(PretrainThenFinetune):
    """Fine-tuned LLM teacher distilled into the generic-pretrained SLM."""

    name = "slm-d"
    finetune_fields = ("finetune_", "sizes", "distill_")
    pretrains = ("llm", "slm")
    specialize_uses = ("llm",)

    def check(self, ctx: Context) -> None:
        from ..core.errors import require

        m = ctx.config.methods
        require(0.0 <= m.distill_alpha <= 1.0, f"methods.distill_alpha must be in [0, 1], got {m.distill_alpha}")
        require(m.distill_temperature > 0, f"methods.distill_temperature must be positive, got {m.distill_temperature}")

    def pretrain(self, ctx: Context, domain: Optional[str] = None) -> Path:
        """Both pretrainings: the student's (``slm``) and the teacher's (``llm``)."""
        get("llm").pretrain(ctx)
        return get("slm").pretrain(ctx)

    def specialize(self, ctx: Context, domain: str, size: str) -> Path:
        from ..train.checkpoint import load_transformer
        from ..train.cost import read_cost
        from ..model.transformer import flops_per_token

        student = self.pretrain(ctx)
        teacher_ckpt = get("llm").specialize(ctx, domain, size)
        folder = ctx.specialize_dir(self.name, domain, size)
        key = {
            "method": self.name, "domain": domain, "size": size,
            "student": jobs.upstream_hash(student.parent),
            "teacher": jobs.upstream_hash(teacher_ckpt.parent),
            "config": jobs.config_part(ctx, self.finetune_fields),
            **rate_key(ctx, size),
        }
        if manifest.open_job(folder, key, ctx.force):
            return folder / manifest.job_summary(folder)["checkpoint"]
        m = ctx.config.methods
        t_cost, s_cost = read_cost(teacher_ckpt), read_cost(student)
        prior = {"pretrain": add_costs(t_cost, s_cost, phase="pretrain"), "specialize": add_costs(t_cost, phase="specialize")}
        teacher = load_transformer(teacher_ckpt).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        window = inputs.shards(ctx).window
        fpt = flops_per_token(inputs.shape(ctx, "small"), window) + flops_per_token(inputs.shape(ctx, "large"), window) / 3
        res = finetune(
            ctx, student, domain, size, folder, prior_cost=prior,
            loss_fn=distillation_loss(teacher, m.distill_alpha, m.distill_temperature), flops_per_token=fpt,
        )
        return self.finish_specialize(ctx, folder, res, {"teacher": str(teacher_ckpt)})
