"""Two elementwise parts of the transformer with hand-written backward passes (eager fp32 CPU).

At the small shapes a CPU trains (2 layers, d=64: the ``tiny`` shape, batch 32 x 128) the
step spends a good part of its time outside the matrix products, and autograd's backward
of the two places where a stacked matrix product's output is cut in pieces does extra
copies (docs/LOG.md, "Per-step work at the regime's shapes"):

- SwiGLU (``silu(gate) * up`` from one stacked ``gate_up`` product): the gradient of the
  two halves is built in two tensors and then concatenated (``cat`` of strided halves).
  :func:`swiglu` writes both halves' gradients straight into one buffer.
- Attention's input (``q, k, v`` from one stacked ``qkv`` product, q and k rotated): the
  backward pass stacks q's and k's gradients, un-rotates them (``flip`` copies), concatenates
  v's, and copies the result back into ``qkv``'s layout. :func:`rotary_qkv` writes each
  gradient once, straight into ``qkv``'s layout, and rotates by halves (no ``flip``).

Both compute exactly what the plain autograd graph computes (same kernels, same
operation order: equal to the last bit in forward, and in the gradients up to the order of
the summed terms; tests/test_fused.py). Under torch.compile the plain code runs (the
compiler fuses it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(h, act)
        return act * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, act = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        out = torch.empty_like(h)
        d_gate, d_up = out.chunk(2, dim=-1)
        torch.mul(grad, act, out=d_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=d_gate)
        return out


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` where ``gate, up = h.chunk(2, -1)`` (h: ``[..., 2m]``)."""
    if torch.compiler.is_compiling() or not h.requires_grad:
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return _SwiGLU.apply(h)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor, sign: float) -> None:
    """out = x rotated by the angles (``sign`` -1) or back (``sign`` +1), by halves: with
    x = (x1, x2), out = (x1 cos + sign x2 sin, x2 cos - sign x1 sin). cos, sin: the halves' tables."""
    h = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :h], x[..., h:], out[..., :h], out[..., h:]
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=sign)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin, value=-sign)


class _RotaryQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_head: int):
        B, T, _ = qkv.shape
        parts = qkv.view(B, T, 3, n_head, -1).permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd], a view
        qk = torch.empty_like(parts[:2], memory_format=torch.contiguous_format)
        _rotate(parts[:2], cos, sin, qk, -1.0)
        ctx.save_for_backward(cos, sin)
        ctx.n_head = n_head
        q, k = qk.unbind(0)
        return q, k, parts[2]

    @staticmethod
    def backward(ctx, gq: torch.Tensor, gk: torch.Tensor, gv: torch.Tensor):
        cos, sin = ctx.saved_tensors
        B, H, T, hd = gv.shape
        out = gv.new_empty(B, T, 3 * H * hd)
        parts = out.view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
        _rotate(gq, cos, sin, parts[0], 1.0)
        _rotate(gk, cos, sin, parts[1], 1.0)
        parts[2].copy_(gv)
        return out, None, None, None


def rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_head: int):
    """q and k rotated, and v, each ``[B, H, T, hd]``, from the stacked ``qkv`` ``[B, T, 3 H hd]``.
    cos, sin: ``[T, hd // 2]``, one half of :func:`speclm.model.transformer.rotary_tables`'
    tables (cos, and sin without its sign)."""
    return _RotaryQKV.apply(qkv, cos, sin, n_head)
