"""The output layer and its cross-entropy in one pass over row chunks, without the logits.

With a small model and a comparatively large vocabulary (the demo: d=96, 2,048 tokens) the
[tokens x vocab] logits are the largest tensor of a training step: the plain path writes
them, reads them for the log-softmax, writes that, and reads both again in the backward
pass, all from main memory. Here each chunk of rows computes its logits, their softmax
in place (one kernel; the log-sum-exp comes from its largest value), the loss and, when
gradients are wanted, d(loss)/d(logits) = softmax - onehot, then both products of the
backward pass (into the hidden states and into the output matrix) while the chunk is still
in cache; the backward pass only scales the stored gradients by the incoming one. Same
FLOPs as the plain path, far less memory traffic (measured in docs/LOG.md, "Spending the
CPU well, continued" and "Per-step work at the regime's shapes").

Used by :class:`speclm.model.transformer.Transformer` when the caller asks for the loss
only (``return_logits=False``: the training loop) in fp32, eager or compiled on a CPU (then
outside the graph); compiled on a GPU, or under autocast, the plain path runs (the
compiler fuses it; low precision wants fp32 logits).
"""

from __future__ import annotations

import torch

IGNORE = -100
CHUNK_ROWS = 256  # 256 x 2,048 fp32 logits = 2 MiB: stays in cache (best of 256-2,048 at d=96; 128-1,024 equal at d=64)


class _ChunkedOutputCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        valid = targets != IGNORE
        n_valid = valid.sum()
        scale = 1.0 / n_valid.clamp_min(1).to(hidden.dtype)
        total = hidden.new_zeros((), dtype=torch.float64)
        grad_h = torch.empty_like(hidden) if want_h else None
        # the output matrix's gradient is summed transposed, [d, V]: (h^T) @ probs runs at the
        # full matrix-product rate where probs^T @ h (a transposed [rows x V] operand) does not
        grad_wt = weight.new_zeros(weight.shape[1], weight.shape[0]) if want_w else None
        buf = hidden.new_empty(min(chunk, hidden.shape[0]), weight.shape[0])  # one chunk's logits, reused
        for s in range(0, hidden.shape[0], chunk):
            h, y, ok = hidden[s : s + chunk], targets[s : s + chunk], valid[s : s + chunk]
            y = y.clamp_min(0)[:, None]
            logits = torch.mm(h, weight.t(), out=buf[: len(h)])
            picked = logits.gather(1, y).squeeze(1)
            top = logits.amax(dim=-1)
            # softmax in place: one kernel that keeps each row in cache (max, exp and sum, scale);
            # log-sum-exp = top - log(the largest probability, 1 / the sum: never underflows)
            probs = torch.softmax(logits, dim=-1, out=logits)
            lse = top - probs.amax(dim=-1).log()
            total += ((lse - picked) * ok).sum(dtype=torch.float64)
            if want_h or want_w:
                probs.scatter_add_(1, y, probs.new_full((len(h), 1), -1.0))  # softmax - onehot
                weights = (ok.to(probs.dtype) * scale)[:, None]  # each row's share of the mean, applied to
                if want_h:  # the chunk's small products instead of the [rows x vocab] gradient
                    torch.mm(probs, weight, out=grad_h[s : s + chunk]).mul_(weights)
                if want_w:
                    grad_wt.addmm_((h * weights).t(), probs)
        grad_w = grad_wt.t().contiguous() if want_w else None
        ctx.save_for_backward(grad_h, grad_w)
        # like F.cross_entropy: NaN when every target is ignored
        return (total / n_valid.to(torch.float64)).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_out if grad_h is not None else None,
                grad_w * grad_out if grad_w is not None else None, None, None)


@torch.compiler.disable  # a compiled CPU model calls it eagerly (see usable)
def chunked_output_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (``-100`` ignored), as
    ``F.cross_entropy(F.linear(hidden, weight), targets)`` but without holding the logits.
    hidden: [N, d]; weight: [V, d]; targets: int64 [N]."""
    return _ChunkedOutputCE.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), chunk)


def usable(hidden: torch.Tensor, head: torch.nn.Module) -> bool:
    """Whether the chunked path applies: a plain linear head, fp32, no autocast; eager, or
    compiled on a CPU (the rest of the model compiled, this eagerly: at the tiny shape, 2k
    vocabulary, 1 thread, 1.08x the eager loop's tokens/s, where compiling the plain
    path was 0.68x; docs/LOG.md, "Per-step work at the regime's shapes")."""
    return (type(head) is torch.nn.Linear and head.bias is None and hidden.dtype == torch.float32
            and head.weight.dtype == torch.float32
            and (hidden.device.type == "cpu" or not torch.compiler.is_compiling())
            and not torch.is_autocast_enabled(hidden.device.type))
