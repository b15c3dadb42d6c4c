"""LLM-lora: the LLM's pretraining, specialized with LoRA (docs/paper.md Appendix F) instead of
full fine-tuning; the adapters are merged before export, so the result is a plain (large)
transformer. Adapters: speclm.model.lora, on ``methods.lora_targets`` (default the query
and value projections, each its own adapter, as the paper; also k, o, mlp) at rank
``methods.lora_rank`` (the paper: 64, about 5M parameters on paper-llm)."""

from __future__ import annotations

import torch

from . import inputs
from .base import Context, register
from .recipe import PretrainThenFinetune


def add_adapters(model: torch.nn.Module, rank: int, alpha: float, targets=("q", "v"), seed: int = 0) -> torch.nn.Module:
    """Freeze the model and add adapters on ``targets`` (speclm.model.lora). The adapters'
    random init is seeded here, so it does not depend on what the process ran before (a
    grid worker, a resumed grid and one uninterrupted grid agree)."""
    from ..model.lora import apply_lora

    torch.manual_seed(seed)
    apply_lora(model, rank=rank, alpha=alpha, targets=targets)
    return model


def merge_adapters(model: torch.nn.Module) -> torch.nn.Module:
    from ..model.lora import merge_lora

    return merge_lora(model)


@register
class LLMLora(PretrainThenFinetune):
    """LLM pretraining, LoRA fine-tuning, adapters merged (breaks the inference budget)."""

    name = "llm-lora"
    shape_kind = "large"
    pretrain_from = "llm"
    small_at_inference = False
    finetune_fields = ("finetune_", "sizes", "lora_")

    def check(self, ctx: Context) -> None:
        from ..model.lora import check_targets

        inputs.require_positive(ctx, "lora_rank", "lora_steps_factor", "lora_lr_factor")
        check_targets(ctx.config.methods.lora_targets)

    def finetune_kwargs(self, ctx: Context, domain: str, size: str) -> dict:
        m = ctx.config.methods
        shape = inputs.shape(ctx, "large")
        from ..model.transformer import flops_per_token

        return {
            "prepare": lambda model: add_adapters(model, m.lora_rank, m.lora_alpha, m.lora_targets, seed=ctx.config.seed),
            "finish": merge_adapters,
            "steps_factor": m.lora_steps_factor,
            "lr_factor": m.lora_lr_factor,
            # frozen weights get no weight gradients: forward + activation gradients, ~2/3 of full training
            "flops_per_token": flops_per_token(shape, inputs.shards(ctx).window) * 2 / 3,
        }
