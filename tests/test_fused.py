"""The hand-written backward passes of speclm.model.fused equal autograd's of the plain code."""

import pytest
import torch
import torch.nn.functional as F

from speclm.model import fused
from speclm.model.transformer import Transformer, apply_rotary, named_shape, rotary_tables


def _plain_swiglu(h):
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


def _plain_rotary_qkv(qkv, cos, sin, n_head):
    B, T, _ = qkv.shape
    parts = qkv.view(B, T, 3, n_head, -1).permute(2, 0, 3, 1, 4)
    q, k = apply_rotary(parts[:2], cos, sin).unbind(0)
    return q, k, parts[2]


def test_swiglu_equals_plain_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 2 * 24, generator=g, requires_grad=True)
    dy = torch.randn(3, 5, 24, generator=g)
    got = fused.swiglu(h)
    ref = _plain_swiglu(h)
    assert torch.equal(got, ref)  # same kernels in the same order: equal to the last bit
    (g_got,) = torch.autograd.grad(got, h, dy)
    (g_ref,) = torch.autograd.grad(ref, h, dy)
    assert torch.equal(g_got, g_ref)
    assert torch.autograd.gradcheck(fused.swiglu, (h.detach().double().requires_grad_(),))


@pytest.mark.parametrize("n_head,head_dim", [(2, 8), (4, 16)])
def test_rotary_qkv_equals_plain_in_value_and_gradient(n_head, head_dim):
    g = torch.Generator().manual_seed(n_head)
    B, T = 2, 7
    cos, sin = rotary_tables(head_dim, 16, 10000.0)
    cos, sin = cos[:T], sin[:T]
    half = head_dim // 2
    qkv = torch.randn(B, T, 3 * n_head * head_dim, generator=g, requires_grad=True)
    grads = [torch.randn(B, n_head, T, head_dim, generator=g) for _ in range(3)]
    got = fused.rotary_qkv(qkv, cos[:, :half], sin[:, half:], n_head)
    ref = _plain_rotary_qkv(qkv, cos, sin, n_head)
    for a, b in zip(got, ref):
        assert a.shape == b.shape and torch.equal(a, b)
    (g_got,) = torch.autograd.grad(got, qkv, grads)
    (g_ref,) = torch.autograd.grad(ref, qkv, grads)
    assert torch.allclose(g_got, g_ref, rtol=0, atol=1e-6) and not torch.equal(g_got, torch.zeros_like(g_got))
    c64, s64 = cos[:, :half].double(), sin[:, half:].double()
    assert torch.autograd.gradcheck(lambda x: fused.rotary_qkv(x, c64, s64, n_head),
                                    (qkv.detach().double().requires_grad_(),))


def test_model_gradients_equal_the_plain_graph(monkeypatch):
    """The whole model's loss and gradients with the fused parts equal the plain graph's."""
    shape = named_shape("tiny", 96, max_seq_len=32)
    torch.manual_seed(0)
    model = Transformer(shape)
    x, y = torch.randint(0, 96, (4, 32)), torch.randint(0, 96, (4, 32))

    def grads():
        loss = model(x, y, return_logits=False)[1]
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    loss, got = grads()
    monkeypatch.setattr(fused, "swiglu", _plain_swiglu)
    monkeypatch.setattr(fused, "rotary_qkv", lambda qkv, c, s, n: _plain_rotary_qkv(
        qkv, torch.cat((c, c), -1), torch.cat((-s, s), -1), n))
    ref_loss, ref = grads()
    assert torch.equal(loss, ref_loss)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
