"""LoRA (Hu et al., 2021) for the Linear layers of a transformer, with merge().

``apply_lora(model, rank)`` freezes every parameter and wraps the chosen Linear layers so
that ``y = W x + (alpha / rank) * B A x``, with A random and B zero (the model's output
is unchanged at the start). Train it with the one loop (it trains only parameters with
``requires_grad``), then ``merge_lora(model)`` folds ``B A`` into ``W`` and gives back a
plain :class:`~speclm.model.transformer.Transformer` with the original tensor names.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import nn

from ..core.errors import SpeclmError

# Every Linear inside the blocks (attention and MLP); the paper's Appendix F uses rank 64.
DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.gate_up", "mlp.up", "mlp.down")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: Optional[float] = None):
        super().__init__()
        if rank <= 0:
            raise SpeclmError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype) * self.scale

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain Linear whose weight is ``W + scale * B A``."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        merged.weight.copy_(self.base.weight + self.scale * (self.lora_b @ self.lora_a).to(self.base.weight.dtype))
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, rank: int = 64, alpha: Optional[float] = None,
               targets: Iterable[str] = DEFAULT_TARGETS) -> list[str]:
    """Freeze ``model`` and wrap every Linear whose name ends with one of ``targets``.
    Returns the wrapped names."""
    targets = tuple(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(targets)]
    if not names:
        raise SpeclmError(f"LoRA found no Linear layer named *{'|*'.join(targets)}")
    for n in names:
        _set(model, n, LoRALinear(model.get_submodule(n), rank, alpha))
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its Linear (in place); all parameters trainable again."""
    for n, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            _set(model, n, m.merge())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_param_count(model: nn.Module) -> int:
    return sum(m.lora_a.numel() + m.lora_b.numel() for m in model.modules() if isinstance(m, LoRALinear))
