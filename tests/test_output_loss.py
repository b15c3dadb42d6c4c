"""The chunked output-layer cross-entropy equals the plain one, in value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from speclm.model.output_loss import chunked_output_loss, usable
from speclm.model.transformer import Transformer, named_shape


def _plain(h, w, y):
    return F.cross_entropy(F.linear(h, w), y, ignore_index=-100)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_value_and_gradients_equal_plain_cross_entropy(chunk):
    g = torch.Generator().manual_seed(chunk)
    h = torch.randn(50, 12, generator=g, requires_grad=True)
    w = torch.randn(33, 12, generator=g, requires_grad=True)
    y = torch.randint(0, 33, (50,), generator=g)
    y[[3, 17, 40]] = -100  # ignored positions take no part in the mean or the gradients
    ref = _plain(h, w, y)
    gh, gw = torch.autograd.grad(ref * 2.5, (h, w))
    got = chunked_output_loss(h, w, y, chunk)
    ch, cw = torch.autograd.grad(got * 2.5, (h, w))
    assert torch.allclose(got, ref, atol=1e-5)
    assert torch.allclose(ch, gh, atol=1e-6) and torch.allclose(cw, gw, atol=1e-6)
    assert ch[3].abs().max() == 0  # an ignored row gets no gradient


def test_all_ignored_is_nan_like_cross_entropy():
    h, w = torch.randn(4, 3), torch.randn(5, 3)
    y = torch.full((4,), -100)
    assert torch.isnan(chunked_output_loss(h, w, y)) and torch.isnan(_plain(h, w, y))


def test_model_loss_only_path_matches_logits_path_with_tied_embeddings():
    shape = named_shape("tiny", 64, max_seq_len=16, tie_embeddings=True)
    torch.manual_seed(0)
    model = Transformer(shape)
    x, y = torch.randint(0, 64, (3, 16)), torch.randint(0, 64, (3, 16))
    logits, ref = model(x, y)
    (g_ref,) = torch.autograd.grad(ref, model.embed.weight)
    none, got = model(x, y, return_logits=False)
    (g_got,) = torch.autograd.grad(got, model.embed.weight)
    assert none is None and logits.shape == (3, 16, 64)
    assert torch.allclose(got, ref, atol=1e-5) and torch.allclose(g_got, g_ref, atol=1e-6)


def test_not_used_under_autocast_or_low_precision():
    head = torch.nn.Linear(4, 8, bias=False)
    assert usable(torch.randn(2, 4), head)
    assert not usable(torch.randn(2, 4, dtype=torch.bfloat16), head)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not usable(torch.randn(2, 4), head)


def test_compiled_cpu_model_keeps_the_chunked_loss_outside_the_graph():
    """train.compile on a CPU: the body is compiled, the chunked loss runs eagerly after it
    (dynamo's eager backend here: what is traced is dynamo's decision, not inductor's)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", 64, max_seq_len=16))
    x, y = torch.randint(0, 64, (3, 16)), torch.randint(0, 64, (3, 16))
    _, ref = model(x, y, return_logits=False)
    g_ref = torch.autograd.grad(ref, list(model.parameters()))
    _, got = torch.compile(model, backend="eager")(x, y, return_logits=False)
    assert type(got.grad_fn).__name__ == "_ChunkedOutputCEBackward"
    g_got = torch.autograd.grad(got, list(model.parameters()))
    assert torch.allclose(got, ref, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_got, g_ref))
    torch._dynamo.reset()
