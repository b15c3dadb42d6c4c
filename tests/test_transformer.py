import pytest
import torch
from torch import nn

from speclm.core.errors import SpeclmError
from speclm.model.transformer import (
    ModelShape,
    Transformer,
    flops_per_token,
    named_shape,
    param_breakdown,
)


def tiny(**kw):
    return named_shape("tiny", 97, max_seq_len=32, **kw)


@pytest.mark.parametrize("mlp", ["swiglu", "plain"])
@pytest.mark.parametrize("tie", [False, True])
def test_param_count_matches_breakdown(mlp, tie):
    shape = tiny(mlp=mlp, tie_embeddings=tie)
    model = Transformer(shape)
    assert model.param_count() == param_breakdown(shape)["total"]
    if tie:
        assert model.lm_head.weight.data_ptr() == model.embed.weight.data_ptr()


def test_paper_shapes_match_the_paper_counts():
    slm = param_breakdown(named_shape("paper-slm", 32768))
    llm = param_breakdown(named_shape("paper-llm", 32768))
    assert slm["mlp"] == 7 * 2 * 1024 * 4096  # 58.7M, docs/paper.md
    assert abs(slm["total"] - 126e6) / 126e6 < 0.05
    assert abs(llm["total"] - 771e6) / 771e6 < 0.03


def test_forward_is_causal_and_loss_is_cross_entropy():
    torch.manual_seed(0)
    model = Transformer(tiny())
    x = torch.randint(0, 97, (2, 12))
    logits, loss = model(x, x)
    assert logits.shape == (2, 12, 97)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), x.reshape(-1))
    assert torch.allclose(loss, ref)
    x2 = x.clone()
    x2[:, 8:] = (x2[:, 8:] + 1) % 97
    logits2, _ = model(x2)
    assert torch.allclose(logits[:, :8], logits2[:, :8], atol=1e-6)
    assert not torch.allclose(logits[:, 8:], logits2[:, 8:])


def test_rotary_makes_attention_order_aware():
    torch.manual_seed(0)
    model = Transformer(tiny())
    # without positions, attention is a permutation-invariant sum over earlier tokens
    a, _ = model(torch.tensor([[1, 2, 3, 4]]))
    b, _ = model(torch.tensor([[2, 1, 3, 4]]))
    assert not torch.allclose(a[0, 3], b[0, 3], atol=1e-5)


def test_custom_mlp_plugs_in_and_receives_kwargs():
    seen = []

    class Scaled(nn.Module):
        def __init__(self, shape, layer):
            super().__init__()
            self.lin = nn.Linear(shape.d_model, shape.d_model, bias=False)

        def forward(self, x, scale=1.0):
            seen.append(scale)
            return scale * self.lin(x)

    model = Transformer(tiny(), make_mlp=Scaled)
    x = torch.randint(0, 97, (1, 5))
    a, _ = model(x, scale=0.0)
    b, _ = model(x, scale=2.0)
    assert seen == [0.0, 0.0, 2.0, 2.0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("mlp", ["swiglu", "plain"])
def test_flops_per_token_equals_counted_training_flops(mlp):
    """Our formula against torch's FLOP counter on one forward+backward (math attention,
    whose matrix products the counter sees)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = Transformer(tiny(mlp=mlp))
    x = torch.randint(0, 97, (2, 32))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, x)[1].backward()
    assert counter.get_total_flops() == model.flops_per_token(32) * x.numel()


def test_flops_grow_with_context_and_dial():
    s = named_shape("dial:2", 100)
    assert (s.n_layer, s.d_model, s.n_head) == (2, 128, 2)
    assert flops_per_token(s, 64) < flops_per_token(s, 128)
    assert flops_per_token(named_shape("dial:3", 100), 64) > flops_per_token(s, 64)


@pytest.mark.parametrize(
    "make",
    [
        lambda: named_shape("huge", 100),
        lambda: named_shape("dial:0", 100),
        lambda: ModelShape(vocab_size=100, n_layer=2, d_model=60, n_head=7, d_mlp=10),
        lambda: ModelShape(vocab_size=100, n_layer=2, d_model=64, n_head=4, d_mlp=10, mlp="moe"),
        lambda: ModelShape(vocab_size=0, n_layer=2, d_model=64, n_head=4, d_mlp=10),
    ],
)
def test_bad_shapes_are_clear_errors(make):
    with pytest.raises(SpeclmError):
        make()


def test_too_long_input_is_a_clear_error():
    model = Transformer(tiny())
    with pytest.raises(SpeclmError, match="max_seq_len"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_lora_starts_neutral_trains_only_adapters_and_merges(tmp_path):
    import numpy as np

    from speclm.model.lora import apply_lora, lora_param_count, merge_lora
    from speclm.train.checkpoint import load_transformer, save_checkpoint
    from speclm.core.sections import TrainConfig
    from speclm.train.data import ArrayWindows, WindowSampler
    from speclm.train.loop import train

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Transformer(tiny())
    x = torch.randint(0, 97, (2, 16))
    before, _ = model(x)
    frozen = model.blocks[0].attn.qkv.weight.detach().clone()
    names = apply_lora(model, rank=4, targets=("q", "k", "v", "o", "mlp"))
    assert len(names) == 2 * 4 and lora_param_count(model) > 0
    assert torch.equal(model(x)[0], before)  # B = 0: no change yet

    windows = ArrayWindows(np.random.default_rng(0).integers(0, 97, 2000), 16)
    cfg = TrainConfig(lr=1e-2, warmup_steps=0, batch_size=4, max_steps=5, eval_every=0, checkpoint_every=0)
    train(model, WindowSampler(windows, 4), cfg, tmp_path / "lora", phase="specialize", progress=False)
    assert torch.equal(model.blocks[0].attn.qkv.base.weight, frozen)
    adapted, _ = model(x)
    assert not torch.allclose(adapted, before)

    merged = merge_lora(model)
    assert type(merged.blocks[0].attn.qkv) is nn.Linear
    assert torch.allclose(merged(x)[0], adapted, atol=1e-5)
    save_checkpoint(tmp_path / "merged", merged)  # a plain transformer again
    assert torch.allclose(load_transformer(tmp_path / "merged")(x)[0], adapted, atol=1e-5)


def test_lora_defaults_to_separate_query_and_value_adapters(tmp_path):
    import numpy as np

    from speclm.model.lora import apply_lora, lora_param_count, lora_params, merge_lora
    from speclm.model.transformer import named_shape
    from speclm.core.errors import SpeclmError
    from speclm.core.sections import MethodsConfig, TrainConfig
    from speclm.train.data import ArrayWindows, WindowSampler
    from speclm.train.loop import train

    assert MethodsConfig().lora_targets == ["q", "v"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Transformer(tiny())
    d = model.shape.d_model
    qkv = model.blocks[0].attn.qkv.weight.detach().clone()
    proj = model.blocks[0].attn.proj.weight.detach().clone()
    names = apply_lora(model, rank=4)
    assert all(n.endswith("attn.qkv") for n in names) and len(names) == model.shape.n_layer
    assert sorted(model.blocks[0].attn.qkv.lora_b) == ["q", "v"]  # two adapters, not one on q,k,v
    assert lora_param_count(model) == lora_params(model.shape, 4) == model.shape.n_layer * 2 * 4 * 2 * d
    windows = ArrayWindows(np.random.default_rng(0).integers(0, 97, 2000), 16)
    cfg = TrainConfig(lr=1e-2, warmup_steps=0, batch_size=4, max_steps=3, eval_every=0, checkpoint_every=0)
    train(model, WindowSampler(windows, 4), cfg, tmp_path / "lora", phase="specialize", progress=False)
    merged = merge_lora(model)
    w = merged.blocks[0].attn.qkv.weight
    assert torch.equal(w[d:2 * d], qkv[d:2 * d]) and torch.equal(merged.blocks[0].attn.proj.weight, proj)  # k, o untouched
    assert not torch.equal(w[:d], qkv[:d]) and not torch.equal(w[2 * d:], qkv[2 * d:])  # q and v adapted
    # other targets on request; the count formula matches the model on every choice
    for targets in (("q", "k", "v"), ("o",), ("mlp",), ("q", "v", "o", "mlp")):
        m = Transformer(tiny())
        apply_lora(m, rank=3, targets=targets)
        assert lora_param_count(m) == lora_params(m.shape, 3, targets)
    # the paper's LLM at rank 64: about 5M adapter parameters
    assert 4.5e6 < lora_params(named_shape("paper-llm", 32000), 64) < 5.5e6
    with pytest.raises(SpeclmError, match="targets"):
        apply_lora(Transformer(tiny()), rank=4, targets=("q", "gate"))
