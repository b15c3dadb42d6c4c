"""LLM-lora: the LLM's pretraining, specialized with LoRA (PAPER.md Appendix F) instead of
full fine-tuning; the adapters are merged before export, so the result is a plain (large)
transformer. Adapters come from the peft library (LoRA on every attention and MLP matrix)."""

from __future__ import annotations

from pathlib import Path

import torch

from . import common
from .base import Context, register
from .finetune import finetune
from .recipe import PretrainThenFinetune

TARGETS = ["qkv", "proj", "gate_up", "up", "down"]  # attention and MLP matrices of speclm's Transformer


def add_adapters(model: torch.nn.Module, rank: int, alpha: float) -> torch.nn.Module:
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=[t for t in TARGETS if t in names])
    return LoraModel(model, cfg, "default")  # freezes the base weights; only the adapters train


def merge_adapters(model: torch.nn.Module) -> torch.nn.Module:
    return model.merge_and_unload()


@register
class LLMLora(PretrainThenFinetune):
    """LLM pretraining, LoRA fine-tuning, adapters merged (breaks the inference budget)."""

    name = "llm-lora"
    shape_kind = "large"
    pretrain_from = "llm"
    small_at_inference = False
    finetune_fields = ("finetune_", "sizes", "lora_")

    def check(self, ctx: Context) -> None:
        m = ctx.config.methods
        from ..errors import require

        require(m.lora_rank > 0, f"methods.lora_rank must be positive, got {m.lora_rank}")
        require(m.lora_steps_factor > 0, f"methods.lora_steps_factor must be positive, got {m.lora_steps_factor}")

    def finetune_kwargs(self, ctx: Context, domain: str, size: str) -> dict:
        m = ctx.config.methods
        shape = common.shape(ctx, "large")
        from ..model.transformer import flops_per_token

        return {
            "prepare": lambda model: add_adapters(model, m.lora_rank, m.lora_alpha),
            "finish": merge_adapters,
            "steps_factor": m.lora_steps_factor,
            "lr_factor": m.lora_lr_factor,
            # frozen weights get no weight gradients: forward + activation gradients, ~2/3 of full training
            "flops_per_token": flops_per_token(shape, common.shards(ctx).window) * 2 / 3,
        }
