"""The projected network (SLM-pn) of docs/paper.md §2.4: k small experts projected out of one
large shared tensor.

For layer l and expert i, every MLP weight matrix is

    W(l, i) = sum_q E[i, q] sum_r M(l)[q, r] T(l)[r]          (T(l)[r] is the paper's T(l)[:, :, r])

that is, expert i's mixing coefficients at layer l are ``alpha = E[i] @ M(l)`` (length h)
and its weight is the alpha-combination of h basis matrices. T(l) (one per MLP matrix,
``[h, *weight.shape]``) holds most of the parameters; M(l) (``[m, h]``) is one per layer;
E (``[k, m]``) is shared by every layer. Attention, embeddings and norms are the plain
small model's and are shared by all experts.

Any expert vector ``e`` (length m) gives an expert: a row of E (``expert_vector``), or a
histogram-weighted mix of rows (``histogram_vector``; weights are linear in e, so this is
the same histogram-weighted mix of the experts' weights). ``materialize(e)`` writes the
expert into a plain :class:`~speclm.model.transformer.Transformer` whose logits equal
the projected network's for that expert.

Routing: each example goes to one expert. A :class:`Route` sorts the micro-batch by
expert once; every layer computes the weights of its groups with one matrix product
(``alpha @ T.view(h, -1)``) and runs the plain MLP of transformer.py (through
``functional_call``) with a grouped matrix product (:func:`grouped_linear`), so a
materialized expert computes exactly what the projected network computed.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call

from ..core.errors import SpeclmError
from .routing import Route, grouped_linear, grouped_mm_usable  # noqa: F401 (grouped_mm_usable: re-exported)
from .transformer import ModelShape, Transformer, default_mlp, flops_per_token, param_breakdown

INITS = ("random", "mixture")
KERNELS = ("grouped", "loop")  # the projected MLP's product: see grouped_linear and ProjectedMLP._loop


def check_pn_sizes(k: int, h: int, m: int) -> None:
    """Refuse a projected network with a non-positive size."""
    for name, v in (("k (experts)", k), ("h (capacity)", h), ("m (expert-vector size)", m)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise SpeclmError(f"projected network: {name} must be a positive integer, got {v!r}")


def _param_key(name: str) -> str:
    return name.replace(".", "__")


class ProjectedMLP(nn.Module):
    """One layer's projected MLP: a basis tensor T per weight matrix of the plain MLP and
    the layer's mixing matrix M. ``forward(x, route=...)`` runs each example with its
    expert's weights."""

    def __init__(self, shape: ModelShape, layer: int, h: int, m: int):
        super().__init__()
        self.h, self.m = h, m
        with torch.device("meta"):
            template = default_mlp(shape, layer)
        # The plain MLP (on the meta device: no storage) whose forward we reuse; hidden in a
        # tuple so that it is not a submodule and its parameters are not ours.
        self._template = (template,)
        self.names = [n for n, _ in template.named_parameters()]
        for n, p in template.named_parameters():
            if p.dim() < 2:
                raise SpeclmError(f"projected network: MLP parameter {n} is not a matrix")
        self.T = nn.ParameterDict(
            {_param_key(n): nn.Parameter(torch.empty(h, *p.shape)) for n, p in template.named_parameters()}
        )
        self.M = nn.Parameter(torch.empty(m, h))
        self._out_std = 0.02 / math.sqrt(2 * shape.n_layer)
        self.reset_parameters()

    def reset_parameters(self, init: str = "random") -> None:
        """Each materialized expert starts like a plain MLP of transformer.py (Normal with
        std 0.02; the residual output ``down`` with 0.02/sqrt(2 n_layer)) when its alpha
        has unit norm, which the E/M initialization of :class:`ProjectedNetwork` gives.
        ``init="mixture"`` sets M to the identity (needs m == h)."""
        if self.M.is_meta:
            return
        with torch.no_grad():
            for n in self.names:
                std = self._out_std if n.startswith("down") else 0.02
                nn.init.normal_(self.T[_param_key(n)], std=std)
            if init == "mixture":
                if self.m != self.h:
                    raise SpeclmError(f"projected network: the mixture init needs m == h, got m={self.m}, h={self.h}")
                self.M.copy_(torch.eye(self.m))
            else:
                # orthonormal rows (m <= h) keep |alpha| = |e|; otherwise rescale to keep it ~|e|
                nn.init.orthogonal_(self.M)
                if self.m > self.h:
                    self.M.mul_(math.sqrt(self.m / self.h))

    def weights(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """The MLP weights of the experts ``vectors`` [g, m]: name -> [g, *weight.shape]."""
        alpha = vectors.to(self.M.dtype) @ self.M  # [g, h]
        out = {}
        for n in self.names:
            T = self.T[_param_key(n)]
            out[n] = (alpha @ T.view(self.h, -1)).view(alpha.shape[0], *T.shape[1:])
        return out

    def plain_forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """The plain MLP of transformer.py run with ``weights`` (one expert)."""
        return functional_call(self._template[0], weights, (x,))

    def forward(self, x: torch.Tensor, route: Optional[Route] = None, **_: object) -> torch.Tensor:
        if route is None:
            raise SpeclmError("projected network: no expert given (call the ProjectedNetwork with expert=... or vector=...)")
        if route.kernel == "loop":
            return self._loop(x, route)
        W = self.weights(route.vectors)
        if route.vectors.shape[0] == 1:
            return self.plain_forward(x, {n: w[0] for n, w in W.items()})
        # the plain MLP's maths with a grouped matrix product: static shapes, so it stays
        # inside a compiled graph (route.counts, a list, is never read here: no guards on it)
        return functional_call(self._template[0], W, (x,), {"linear": lambda a, w: grouped_linear(a, w, route)})

    # kernel="loop": one plain MLP per group, outside torch.compile (the grouping changes
    # with every micro-batch and dynamo would recompile for each new one)
    @torch.compiler.disable
    def _loop(self, x: torch.Tensor, route: Route) -> torch.Tensor:
        if x.shape[0] != sum(route.counts):
            raise SpeclmError(f"projected network: a route for {sum(route.counts)} examples got a batch of {x.shape[0]}")
        live = [j for j, c in enumerate(route.counts) if c]  # the experts present only
        W = self.weights(route.vectors if len(live) == len(route.counts) else route.vectors[live])
        # unbind, not w[j]: indexing's backward would allocate a zero [g, ...] tensor per group
        per_group = {n: w.unbind(0) for n, w in W.items()}
        outs = [self.plain_forward(xg, {n: ws[j] for n, ws in per_group.items()})
                for j, xg in enumerate(x.split([route.counts[j] for j in live], dim=0))]
        return torch.cat(outs, dim=0)


class ProjectedNetwork(nn.Module):
    """k experts of the small ``shape`` sharing attention, embeddings and norms, with
    projected MLPs. ``forward(idx, targets=None, expert=ids)`` returns ``(logits, loss)``
    like :class:`Transformer`; ``vector=e`` instead of ``expert`` runs one expert vector
    (e.g. a histogram mix) for the whole batch."""

    def __init__(self, shape: ModelShape, k: int, h: int, m: int, init: str = "random", kernel: str = "grouped"):
        super().__init__()
        check_pn_sizes(k, h, m)
        if kernel not in KERNELS:
            raise SpeclmError(f"projected network: kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.kernel = kernel
        if init not in INITS:
            raise SpeclmError(f"projected network: init must be one of {', '.join(INITS)}, got {init!r}")
        self.shape, self.k, self.h, self.m = shape, k, h, m
        self.transformer = Transformer(shape, make_mlp=lambda s, layer: ProjectedMLP(s, layer, h, m))
        self.E = nn.Parameter(torch.empty(k, m))
        self.reset_projection(init)

    def meta(self) -> dict:
        """What a checkpoint's model.json records to rebuild this network (:meth:`from_meta`)."""
        return {"kind": "projected-network",
                "projected": {"shape": self.shape.to_dict(), "k": self.k, "h": self.h, "m": self.m}}

    @classmethod
    def from_meta(cls, meta: dict, where: str = "the checkpoint") -> "ProjectedNetwork":
        """An untrained network of the shape a checkpoint's model.json describes."""
        p = meta.get("projected") if isinstance(meta, dict) else None
        if not isinstance(p, dict):
            raise SpeclmError(f"{where} does not hold a projected network (model.json has no 'projected' entry)")
        return cls(ModelShape.from_dict(p["shape"]), p["k"], p["h"], p["m"])

    def reset_projection(self, init: str = "random") -> None:
        """Initialize E (and every layer's T and M). ``random``: unit-norm random expert
        vectors, orthonormal M, so each expert starts as a plain model's MLP draw.
        ``mixture``: E = I, M = I (needs h == k == m): the hard mixture SLM-mix, where
        expert i owns the basis T[i] alone."""
        if self.E.is_meta:
            return
        with torch.no_grad():
            if init == "mixture":
                if not (self.h == self.k == self.m):
                    raise SpeclmError(
                        f"projected network: the mixture init needs h == k == m, got k={self.k}, h={self.h}, m={self.m}"
                    )
                self.E.copy_(torch.eye(self.k))
            else:
                nn.init.normal_(self.E)
                self.E.div_(self.E.norm(dim=1, keepdim=True).clamp_min(1e-12))
        for mlp in self.projected_mlps():
            mlp.reset_parameters(init)

    def projected_mlps(self) -> list[ProjectedMLP]:
        return [b.mlp for b in self.transformer.blocks]

    # -- expert vectors ------------------------------------------------------------------

    def check_expert(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= int(i) < self.k:
            raise SpeclmError(
                f"projected network: expert index {i!r} is out of range; this network has k={self.k} experts (0..{self.k - 1})"
            )
        return int(i)

    def expert_vector(self, i: int) -> torch.Tensor:
        """E[i]: the paper's instantiation of expert i."""
        return self.E[self.check_expert(i)]

    def histogram_vector(self, histogram) -> torch.Tensor:
        """sum_c p(c) E[c] for a cluster histogram p (normalized here; length k)."""
        p = torch.as_tensor(histogram, dtype=self.E.dtype, device=self.E.device).reshape(-1)
        if p.numel() != self.k:
            raise SpeclmError(f"projected network: the histogram has {p.numel()} clusters but the network has k={self.k} experts")
        if not torch.isfinite(p).all() or (p < 0).any() or float(p.sum()) <= 0:
            raise SpeclmError("projected network: a histogram must be non-negative with a positive sum")
        return (p / p.sum()) @ self.E

    # -- forward -------------------------------------------------------------------------

    @torch.compiler.disable  # data-dependent (unique, min/max checks); its tensors have static shapes
    def route(self, batch: int, expert: Optional[torch.Tensor] = None, vector: Optional[torch.Tensor] = None,
              static: bool = True) -> Route:
        if (expert is None) == (vector is None):
            raise SpeclmError("projected network: give exactly one of expert=ids or vector=e")
        if vector is not None:
            if vector.numel() != self.m:
                raise SpeclmError(f"projected network: an expert vector has m={self.m} entries, got {vector.numel()}")
            return Route.single(vector.to(self.E.dtype), batch)
        expert = torch.as_tensor(expert)
        if expert.dim() == 0:
            expert = expert.expand(batch)
        if expert.shape != (batch,):
            raise SpeclmError(f"projected network: expected {batch} expert ids (one per example), got shape {tuple(expert.shape)}")
        return Route.from_experts(expert, self.E, self.kernel, static)

    def forward(
        self,
        idx: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
        expert: Optional[torch.Tensor] = None,
        vector: Optional[torch.Tensor] = None,
        return_logits: bool = True,
    ):
        # traced by torch.compile: a fixed number of groups; eager: the experts present
        route = self.route(idx.shape[0], expert, vector, static=torch.compiler.is_compiling())
        if route.order is None:
            return self.transformer(idx, targets, return_logits, route=route)
        # group the batch by expert once; the mean loss does not depend on the row order
        idx = idx.index_select(0, route.order)
        targets = None if targets is None else targets.index_select(0, route.order)
        logits, loss = self.transformer(idx, targets, return_logits, route=route)
        return (None if logits is None else logits.index_select(0, route.inverse)), loss

    # -- materialization -----------------------------------------------------------------

    @torch.no_grad()
    def materialize_state(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state dict of a plain :class:`Transformer` of ``shape`` for expert ``vector``."""
        if vector.numel() != self.m:
            raise SpeclmError(f"projected network: an expert vector has m={self.m} entries, got {vector.numel()}")
        state = {}
        mlp_prefixes = [f"blocks.{i}.mlp." for i in range(self.shape.n_layer)]
        for key, value in self.transformer.state_dict().items():
            if not any(key.startswith(p) for p in mlp_prefixes):
                state[key] = value.detach().clone()
        for i, mlp in enumerate(self.projected_mlps()):
            for n, w in mlp.weights(vector.reshape(1, -1).to(self.E.dtype)).items():
                state[f"blocks.{i}.mlp.{n}"] = w[0].detach().clone()
        return state

    def materialize(self, vector: torch.Tensor) -> Transformer:
        """A plain small Transformer computing expert ``vector`` (a row of E or a mix)."""
        plain = Transformer(self.shape).to(device=self.E.device, dtype=self.E.dtype)
        plain.load_state_dict(self.materialize_state(vector), strict=True)
        return plain

    # -- sizes ---------------------------------------------------------------------------

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: Optional[int] = None, tokens_per_expert: Optional[int] = None) -> float:
        """Training FLOPs per token: the plain model's (each token runs one SLM-sized
        expert), plus what each expert present in a micro-batch costs once, amortized over
        ``tokens_per_expert`` tokens: the routing (``alpha = e M`` in every layer, forward and
        its two backward products: 6 m h per layer) and the weight materialization (forward
        ``alpha @ T`` and the projection's two backward products, into T and into alpha:
        6 h x MLP weights). Default: one window per expert (see
        :func:`tokens_per_expert_mixed` for uniform batches)."""
        T = self.shape.max_seq_len if seq_len is None else seq_len
        per_expert = tokens_per_expert or T
        once = 6.0 * self.h * param_breakdown(self.shape)["mlp"] + 6.0 * self.shape.n_layer * self.m * self.h
        return flops_per_token(self.shape, T) + once / per_expert

    def param_counts(self) -> dict[str, int]:
        return pn_param_counts(self.shape, self.k, self.h, self.m)


def tokens_per_expert_mixed(cluster_sizes, windows_per_batch: int, seq_len: int) -> float:
    """Expected tokens per expert present in a uniformly drawn micro-batch of
    ``windows_per_batch`` windows, when cluster c holds ``cluster_sizes[c]`` of the windows:
    ``B T / E[distinct experts]``, with ``E[distinct] = sum_c 1 - (1 - p_c)^B``."""
    total = float(sum(cluster_sizes))
    if total <= 0 or windows_per_batch <= 0:
        raise SpeclmError("projected network: no windows to route")
    distinct = sum(1.0 - (1.0 - n / total) ** windows_per_batch for n in cluster_sizes if n > 0)
    return windows_per_batch * seq_len / distinct


def pn_param_counts(shape: ModelShape, k: int, h: int, m: int) -> dict[str, int]:
    """Parameter counts of a projected network, from the shape (no model is built):
    ``total`` (pretraining), ``inference`` (one materialized expert = the plain model),
    ``bases`` (all T), ``mixing`` (E and every M), ``shared`` (attention, embeddings, norms)."""
    check_pn_sizes(k, h, m)
    b = param_breakdown(shape)
    shared = b["total"] - b["mlp"]
    bases = h * b["mlp"]
    mixing = k * m + shape.n_layer * m * h
    return {
        "total": shared + bases + mixing,
        "inference": b["total"],
        "bases": bases,
        "mixing": mixing,
        "shared": shared,
    }
