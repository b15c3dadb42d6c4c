"""Grouped routing of a projected network's micro-batch: which expert vector each example
uses (:class:`Route`), and the MLP product with one weight per group
(:func:`grouped_linear`: ``torch._grouped_mm`` where it runs, else a gathered batched product),
with shapes that stay static under torch.compile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..core.errors import SpeclmError


def grouped_mm_usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` runs here: the build has it, the dims keep its 16-byte
    stride alignment, and on CUDA the inputs are bf16 on a Hopper-class GPU (sm90+; older
    GPUs are not claimed). On CPU (torch 2.13) it runs fp32 and bf16 eagerly, forward and
    backward, but its compile-time check (meta registration) takes bf16 only."""
    if not hasattr(torch, "_grouped_mm") or any(n % 8 for n in w.shape[1:]):
        return False
    if torch.compiler.is_compiling() and x.dtype != torch.bfloat16:
        return False
    if x.device.type == "cuda":  # group offsets (multiples of the window) aligned to 16 rows
        return (x.dtype == torch.bfloat16 and x.shape[1] % 16 == 0
                and torch.cuda.get_device_capability(x.device) >= (9, 0))
    return x.device.type == "cpu"


def grouped_linear(x: torch.Tensor, w: torch.Tensor, route: "Route") -> torch.Tensor:
    """``F.linear`` with one weight per group: x [B, T, in] with its examples grouped in the
    route's order, w [G, out, in]. Static shapes whatever the grouping (G is fixed, the
    group sizes are tensor values): ``torch._grouped_mm`` over the flattened tokens where
    it runs, else a batched product with each example's weight gathered ([B, out, in])."""
    if torch.is_autocast_enabled(x.device.type):
        dt = torch.get_autocast_dtype(x.device.type)
        x, w = x.to(dt), w.to(dt)
    B, T, d_in = x.shape
    if grouped_mm_usable(x, w):
        offs = (route.ends * T).to(torch.int32)
        out = torch._grouped_mm(x.reshape(B * T, d_in), w.transpose(1, 2), offs=offs)
        return out.view(B, T, w.shape[1])
    return torch.bmm(x, w.index_select(0, route.group).transpose(1, 2))


@dataclass
class Route:
    """Which expert vector each example of a micro-batch uses, grouped.

    ``vectors[j]``: the j-th group's expert vector, ``counts[j]`` its examples, ``ends``
    their running sum, ``group`` each example's group. The MLPs see the batch grouped:
    :class:`ProjectedNetwork` permutes it by ``order`` at the input and the logits back by
    ``inverse`` (examples only meet in the MLP routing). One group: nothing is permuted.

    Several groups, under torch.compile: the number of groups is fixed, G = min(k, B) (every
    expert when k <= B, else the experts present padded with empty groups), so a compiled
    graph sees the same shapes for every mix of experts; eagerly, G is the experts present (``kernel="grouped"``, :func:`grouped_linear`).
    ``kernel="loop"`` runs one plain MLP per non-empty group, outside the compiled graph.
    """

    vectors: torch.Tensor  # [G, m]
    counts: list[int]
    order: Optional[torch.Tensor] = None  # [B] or None when G == 1
    inverse: Optional[torch.Tensor] = None
    ends: Optional[torch.Tensor] = None  # [G] cumulative counts
    group: Optional[torch.Tensor] = None  # [B] group index of each grouped example
    kernel: str = "grouped"

    @classmethod
    def from_experts(cls, experts: torch.Tensor, E: torch.Tensor, kernel: str = "grouped", static: bool = True) -> "Route":
        """Group a micro-batch by expert index (``experts``: int [B], values in [0, k)).
        ``static=False`` (eager): one group per expert present, however many."""
        k = E.shape[0]
        if experts.dim() != 1:
            raise SpeclmError(f"projected network: expert ids must be one per example, got shape {tuple(experts.shape)}")
        if experts.dtype.is_floating_point or experts.dtype == torch.bool:
            raise SpeclmError(f"projected network: expert ids must be integers, got {experts.dtype}")
        lo, hi = int(experts.min()), int(experts.max())
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise SpeclmError(f"projected network: expert index {bad} is out of range; this network has k={k} experts (0..{k - 1})")
        experts = experts.to(device=E.device, dtype=torch.long)
        present, slot = torch.unique(experts, sorted=True, return_inverse=True)
        if present.numel() == 1:
            return cls(vectors=E.index_select(0, present), counts=[experts.numel()], kernel=kernel)
        B = experts.numel()
        if not static:  # eager: the experts present only (no weights made for empty groups)
            ids = present
        elif k <= B:  # every expert is a group, empty or not
            ids, slot = torch.arange(k, device=E.device), experts
        else:  # the experts present, padded to B groups with empty ones (expert 0)
            ids = torch.cat([present, present.new_zeros(B - present.numel())])
        counts = torch.bincount(slot, minlength=ids.numel())
        order = torch.argsort(experts, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(B, device=order.device)
        return cls(vectors=E.index_select(0, ids), counts=counts.tolist(), order=order, inverse=inverse,
                   ends=counts.cumsum(0), group=slot.index_select(0, order), kernel=kernel)

    @classmethod
    def single(cls, vector: torch.Tensor, batch: int) -> "Route":
        """Every example uses the same expert vector (e.g. a histogram mix)."""
        return cls(vectors=vector.reshape(1, -1), counts=[batch])
