"""LoRA (Hu et al., 2021) for the Linear layers of a transformer, with merge().

``apply_lora(model, rank, targets=("q", "v"))`` freezes every parameter and adds low-rank
adapters ``y = W x + (alpha / rank) * B A x``, with A random and B zero (the model's output
is unchanged at the start). Targets: ``q``, ``k``, ``v`` (each its own adapter on its slice
of the fused ``attn.qkv`` output, so ``q`` and ``v`` are two adapters, as the paper's
separate query and value projections), ``o`` (``attn.proj``), ``mlp`` (every MLP matrix).
The paper (Appendix F): query and value, rank 64 (about 5M parameters on paper-llm). Train
it with the one loop (it trains only parameters with ``requires_grad``), then
``merge_lora(model)`` folds each ``B A`` into its rows of ``W`` and gives back a plain
:class:`~speclm.model.transformer.Transformer` with the original tensor names.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import nn

from ..core.errors import SpeclmError

TARGETS = ("q", "k", "v", "o", "mlp")
DEFAULT_TARGETS = ("q", "v")  # the paper's query and value projections
QKV = {"q": 0, "k": 1, "v": 2}  # the slice of attn.qkv's output (q, k, v stacked)


def check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    targets = tuple(dict.fromkeys(targets))
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise SpeclmError(f"LoRA targets must be some of {', '.join(TARGETS)}, got {list(targets)!r}")
    return targets


class LoRALinear(nn.Module):
    """A frozen Linear plus one low-rank adapter per part of its output: ``parts`` maps a
    name to the output rows ``(start, stop)`` it adapts (default: one part, every row)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: Optional[float] = None,
                 parts: Optional[dict[str, tuple[int, int]]] = None):
        super().__init__()
        if rank <= 0:
            raise SpeclmError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.parts = dict(sorted((parts or {"all": (0, base.out_features)}).items(), key=lambda kv: kv[1]))
        dev = base.weight.device
        self.lora_a = nn.ParameterDict({n: nn.Parameter(torch.empty(rank, base.in_features, device=dev)) for n in self.parts})
        self.lora_b = nn.ParameterDict({n: nn.Parameter(torch.zeros(e - s, rank, device=dev)) for n, (s, e) in self.parts.items()})
        for a in self.lora_a.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        out, pos = [], 0
        for n, (s, e) in self.parts.items():
            if s > pos:
                out.append(y[..., pos:s])
            a, b = self.lora_a[n].to(x.dtype), self.lora_b[n].to(x.dtype)
            out.append(y[..., s:e] + (x @ a.t()) @ b.t() * self.scale)
            pos = e
        if pos < y.shape[-1]:
            out.append(y[..., pos:])
        return out[0] if len(out) == 1 else torch.cat(out, dim=-1)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain Linear whose rows of each part are ``W + scale * B A``."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        merged.weight.copy_(self.base.weight)
        for n, (s, e) in self.parts.items():
            merged.weight[s:e] += self.scale * (self.lora_b[n] @ self.lora_a[n]).to(self.base.weight.dtype)
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _plan(model: nn.Module, targets: tuple[str, ...]) -> dict[str, Optional[dict[str, tuple[int, int]]]]:
    """Linear name -> the parts to adapt (None: the whole matrix)."""
    plan: dict[str, Optional[dict[str, tuple[int, int]]]] = {}
    for n, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        if n.endswith("attn.qkv"):
            third = m.out_features // 3
            parts = {t: (QKV[t] * third, (QKV[t] + 1) * third) for t in targets if t in QKV}
            if parts:
                plan[n] = parts
        elif (n.endswith("attn.proj") and "o" in targets) or (".mlp." in f".{n}" and "mlp" in targets):
            plan[n] = None
    return plan


def apply_lora(model: nn.Module, rank: int = 64, alpha: Optional[float] = None,
               targets: Iterable[str] = DEFAULT_TARGETS) -> list[str]:
    """Freeze ``model`` and add adapters on ``targets`` (see the module's doc). Returns the
    wrapped Linear names."""
    targets = check_targets(targets)
    plan = _plan(model, targets)
    if not plan:
        raise SpeclmError(f"LoRA found no Linear layer for targets {', '.join(targets)}")
    for p in model.parameters():
        p.requires_grad_(False)
    for n, parts in plan.items():
        _set(model, n, LoRALinear(model.get_submodule(n), rank, alpha, parts))
    return list(plan)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its Linear (in place); all parameters trainable again."""
    for n, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            _set(model, n, m.merge())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_param_count(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, LoRALinear)
               for p in (*m.lora_a.values(), *m.lora_b.values()))


def lora_params(shape, rank: int, targets: Iterable[str] = DEFAULT_TARGETS) -> int:
    """Adapter parameters of ``targets`` at ``rank`` on a transformer of ``shape``, from the
    shape alone: ``rank x (in + out)`` per adapted matrix (or slice of qkv), per layer."""
    targets = check_targets(targets)
    d, f = shape.d_model, shape.d_mlp
    per_layer = sum(rank * (d + d) for t in targets if t in ("q", "k", "v", "o"))
    if "mlp" in targets:
        up = 2 * f if shape.mlp == "swiglu" else f
        per_layer += rank * (d + up) + rank * (f + d)
    return shape.n_layer * per_layer
