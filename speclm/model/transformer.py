"""The one decoder-only transformer of speclm.

RMSNorm, rotary positions, causal attention through ``F.scaled_dot_product_attention``,
a SwiGLU MLP (or the paper's plain 2-matrix MLP), optional tied embeddings. The maths is
Llama's (same rotary convention, same norm), so ``speclm export`` writes a
``LlamaForCausalLM`` folder whose logits equal ours.

Sizes come from :class:`ModelShape`: a named shape (:func:`named_shape`) or the one size
dial ``"dial:N"`` (N layers, width 64*N, head width 64, MLP 4x).

Plug-in point for other parameterizations (the projected network): every :class:`Block`
holds its MLP as ``block.mlp``, any module mapping ``[B, T, d] -> [B, T, d]``. Pass
``make_mlp(shape, layer_index) -> nn.Module`` to :class:`Transformer` to build your own,
and extra keyword arguments of ``Transformer.forward`` (e.g. ``cluster=ids``) reach
every ``mlp(x, **kwargs)`` call. This file knows nothing of DDP or training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import SpeclmError
from . import fused, output_loss

MLP_KINDS = ("swiglu", "plain")


@dataclass(frozen=True)
class ModelShape:
    """Everything that fixes the tensors of a model (saved as ``model.json``)."""

    vocab_size: int
    n_layer: int
    d_model: int
    n_head: int
    d_mlp: int
    mlp: str = "swiglu"  # swiglu (3 matrices) | plain (2 matrices, GELU; the paper's counts)
    tie_embeddings: bool = False
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "d_mlp", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise SpeclmError(f"model shape: {name} must be a positive integer, got {v!r}")
        if self.mlp not in MLP_KINDS:
            raise SpeclmError(f"model shape: mlp must be one of {', '.join(MLP_KINDS)}, got {self.mlp!r}")
        if self.d_model % self.n_head:
            raise SpeclmError(f"model shape: d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if (self.d_model // self.n_head) % 2:
            raise SpeclmError(f"model shape: head width {self.d_model // self.n_head} must be even (rotary)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelShape":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpeclmError(f"model shape: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


# name -> (n_layer, d_model, n_head, d_mlp, defaults that differ from ModelShape's)
NAMED_SHAPES: dict[str, tuple[int, int, int, int, dict]] = {
    "tiny": (2, 64, 4, 256, {}),
    "tiny-large": (3, 128, 4, 512, {}),
    # The demo's pair, sized by measurement for a 2-core CPU (docs/LOG.md): ~15k tokens/s on
    # one thread at batch 32 x 128 with a 2k vocabulary; the large one costs 3.9x its FLOPs
    # per token (the paper's LLM/SLM: 3.5x, Table 2).
    "demo-small": (2, 96, 4, 384, {}),
    "demo-large": (4, 160, 4, 640, {}),
    # cpu-regime's pair (docs/LOG.md "Sizing cpu-regime"): a small model that runs out of
    # capacity within a 2-core CPU's hours (0.12M parameters with tied embeddings at a 1k
    # vocabulary) and one of 3.17x its parameters (the paper's LLM/SLM: 6.1x) that beats it at
    # equal FLOPs after a third of a 24.6M-token budget (-0.18 nats at the end).
    "regime-small": (2, 48, 3, 192, {"tie_embeddings": True}),
    "regime-large": (3, 80, 5, 320, {"tie_embeddings": True}),
    "cpu-small": (4, 256, 4, 1024, {}),
    "cpu-large": (6, 512, 8, 2048, {}),
    # The paper's Table 6 (126M SLM, 771M LLM): 7 layers, plain MLP, tied embeddings.
    "paper-slm": (7, 1024, 8, 4096, {"mlp": "plain", "tie_embeddings": True}),
    "paper-llm": (7, 2816, 22, 11264, {"mlp": "plain", "tie_embeddings": True}),
}


def shape_names() -> list[str]:
    return list(NAMED_SHAPES) + ["dial:N"]


def named_shape(
    name: str,
    vocab_size: int,
    *,
    max_seq_len: Optional[int] = None,
    mlp: Optional[str] = None,
    tie_embeddings: Optional[bool] = None,
) -> ModelShape:
    """A shape by name (``tiny``, ``cpu-small``, ``paper-slm``, ... or ``dial:N``).

    ``mlp``, ``tie_embeddings`` and ``max_seq_len`` override the shape's own defaults.
    """
    if name.startswith("dial:"):
        try:
            depth = int(name.split(":", 1)[1])
        except ValueError:
            depth = 0
        if depth <= 0:
            raise SpeclmError(f"model shape {name!r}: the dial takes a positive integer, e.g. dial:4")
        d = 64 * depth
        n_layer, d_model, n_head, d_mlp, extra = depth, d, depth, 4 * d, {}
    elif name in NAMED_SHAPES:
        n_layer, d_model, n_head, d_mlp, extra = NAMED_SHAPES[name]
    else:
        raise SpeclmError(f"unknown model shape {name!r}; known: {', '.join(shape_names())}")
    kw = dict(extra)
    if mlp is not None:
        kw["mlp"] = mlp
    if tie_embeddings is not None:
        kw["tie_embeddings"] = tie_embeddings
    if max_seq_len is not None:
        kw["max_seq_len"] = max_seq_len
    return ModelShape(vocab_size=vocab_size, n_layer=n_layer, d_model=d_model, n_head=n_head, d_mlp=d_mlp, **kw)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables [max_seq_len, head_dim] (Llama's half-split convention, fp32).

    The sin table carries the sign of the rotation (``-sin`` on the first half), so
    :func:`apply_rotary` needs no negation: ``x * cos + swap_halves(x) * sin``.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    sin = emb.sin()
    sin[:, : head_dim // 2] *= -1
    return emb.cos(), sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [..., T, hd]; cos/sin: [T, hd] from :func:`rotary_tables`. Equals Llama's
    ``x * cos + rotate_half(x) * sin`` with three ops (mul, flip, addcmul)."""
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)
    return torch.addcmul(x * cos, swapped, sin)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.n_head, self.head_dim = shape.n_head, shape.head_dim
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model, bias=False)  # q, k, v stacked
        self.proj = nn.Linear(shape.d_model, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x)
        cos, sin = cos.to(qkv.dtype), sin.to(qkv.dtype)
        if qkv.requires_grad and not torch.compiler.is_compiling():
            # one pass per gradient, written straight into qkv's layout (speclm.model.fused)
            half = self.head_dim // 2
            q, k, v = fused.rotary_qkv(qkv, cos[:, :half], sin[:, half:], self.n_head)
        else:
            qkv = qkv.view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
            qk, v = qkv.split((2, 1))
            q, k = apply_rotary(qk, cos, sin).unbind(0)  # q and k rotated in one go
            v = v.squeeze(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def _apply(linear: Optional[Callable], layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``, or ``linear(x, layer.weight)`` when a product is given: the projected
    network passes a grouped one (one weight per group of examples) and so reuses these
    MLPs' maths unchanged; LoRA's wrapped layers keep their own forward."""
    return layer(x) if linear is None else linear(x, layer.weight)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up are one stacked matrix."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_up = nn.Linear(shape.d_model, 2 * shape.d_mlp, bias=False)
        self.down = nn.Linear(shape.d_mlp, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, linear: Optional[Callable] = None, **_: object) -> torch.Tensor:
        return _apply(linear, self.down, fused.swiglu(_apply(linear, self.gate_up, x)))


class PlainMLP(nn.Module):
    """down(gelu(up(x))): the 2-matrix MLP the paper's parameter counts assume."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.up = nn.Linear(shape.d_model, shape.d_mlp, bias=False)
        self.down = nn.Linear(shape.d_mlp, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, linear: Optional[Callable] = None, **_: object) -> torch.Tensor:
        return _apply(linear, self.down, F.gelu(_apply(linear, self.up, x)))


def default_mlp(shape: ModelShape, layer: int) -> nn.Module:
    return SwiGLU(shape) if shape.mlp == "swiglu" else PlainMLP(shape)


class Block(nn.Module):
    def __init__(self, shape: ModelShape, mlp: nn.Module):
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.attn = Attention(shape)
        self.mlp_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, **mlp_kwargs) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x), **mlp_kwargs)


class Transformer(nn.Module):
    def __init__(self, shape: ModelShape, make_mlp: Optional[Callable[[ModelShape, int], nn.Module]] = None):
        super().__init__()
        self.shape = shape
        make_mlp = make_mlp or default_mlp
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape, make_mlp(shape, i)) for i in range(shape.n_layer))
        self.norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rotary_tables(shape.head_dim, shape.max_seq_len, shape.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights; residual output projections scaled by 1/sqrt(2 * n_layer).
        A custom MLP (``make_mlp``) keeps its own initialization."""
        out_std = 0.02 / math.sqrt(2 * self.shape.n_layer)
        for m in self.modules():
            if isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
            elif isinstance(m, Attention):
                nn.init.normal_(m.qkv.weight, std=0.02)
                nn.init.normal_(m.proj.weight, std=out_std)
            elif isinstance(m, (SwiGLU, PlainMLP)):
                nn.init.normal_(m.gate_up.weight if isinstance(m, SwiGLU) else m.up.weight, std=0.02)
                nn.init.normal_(m.down.weight, std=out_std)
        nn.init.normal_(self.embed.weight, std=0.02)
        if not self.shape.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, return_logits: bool = True,
                **mlp_kwargs):
        """idx: int64 [B, T]. Returns (logits [B, T, V], loss or None).

        The loss is the mean next-token cross-entropy over ``targets`` (int64 [B, T];
        -100 is ignored), computed in fp32. ``return_logits=False`` (with targets): the
        logits are not wanted (None is returned in their place), so eager fp32 computes the
        loss chunk by chunk without them (:mod:`speclm.model.output_loss`). Extra keyword
        arguments go to every MLP.
        """
        T = idx.shape[1]
        if T > self.shape.max_seq_len:
            raise SpeclmError(f"sequence of {T} tokens is longer than the model's max_seq_len {self.shape.max_seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin, **mlp_kwargs)
        h = self.norm(x)
        if targets is not None and not return_logits and output_loss.usable(h, self.lm_head):
            return None, output_loss.chunked_output_loss(h, self.lm_head.weight, targets)
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    # -- sizes ---------------------------------------------------------------------------

    def param_count(self, non_embedding: bool = False) -> int:
        """Unique parameters (a tied matrix counts once); ``non_embedding`` drops the
        embedding and output matrices."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel()
            if not self.shape.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: Optional[int] = None) -> float:
        return flops_per_token(self.shape, seq_len)


def matmul_params(shape: ModelShape) -> int:
    """Weights that take part in a matrix multiply per token (the output projection
    included, the embedding lookup not)."""
    d = shape.d_model
    attn = 4 * d * d
    mlp = (3 if shape.mlp == "swiglu" else 2) * d * shape.d_mlp
    return shape.n_layer * (attn + mlp) + d * shape.vocab_size


def flops_per_token(shape: ModelShape, seq_len: Optional[int] = None) -> float:
    """Training FLOPs per token (forward + backward), as in PaLM's MFU accounting:
    6 * matmul weights + 12 * n_layer * d_model * seq_len (attention scores and mix)."""
    T = shape.max_seq_len if seq_len is None else seq_len
    return 6.0 * matmul_params(shape) + 12.0 * shape.n_layer * shape.d_model * T


def param_breakdown(shape: ModelShape) -> dict[str, int]:
    """Parameter counts by part, computed from the shape (no model is built)."""
    d = shape.d_model
    mlp = shape.n_layer * (3 if shape.mlp == "swiglu" else 2) * d * shape.d_mlp
    attn = shape.n_layer * 4 * d * d
    norms = (2 * shape.n_layer + 1) * d
    emb = shape.vocab_size * d * (1 if shape.tie_embeddings else 2)
    return {"mlp": mlp, "attention": attn, "norms": norms, "embeddings": emb, "total": mlp + attn + norms + emb}


def describe(shape: ModelShape, seq_len: Optional[int] = None) -> str:
    b = param_breakdown(shape)
    return (
        f"{b['total'] / 1e6:.2f}M parameters (MLP {b['mlp'] / 1e6:.2f}M, attention {b['attention'] / 1e6:.2f}M, "
        f"embeddings {b['embeddings'] / 1e6:.2f}M), {flops_per_token(shape, seq_len) / 1e6:.1f} MFLOPs per "
        f"training token at seq_len {seq_len or shape.max_seq_len}"
    )
