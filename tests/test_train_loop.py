import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speclm.core.atomic import read_jsonl
from speclm.core.errors import SpeclmError
from speclm.model.transformer import Transformer, named_shape
from speclm.train import checkpoint as ckpt
from speclm.train.budget import Budget
from speclm.core.sections import TrainConfig
from speclm.train.data import ArrayWindows, WindowSampler
from speclm.train.loop import train
from speclm.train.schedule import Schedule

torch.set_num_threads(1)
V, T = 53, 16


def model(seed=0, **kw):
    torch.manual_seed(seed)
    return Transformer(named_shape("tiny", V, max_seq_len=T, **kw))


def sampler(batch=4, n=3000, periodic=False, **kw):
    if periodic:  # a learnable stream: a fixed pattern repeated
        tokens = np.tile(np.random.default_rng(0).integers(0, V, 23), n // 23 + 1)[:n]
    else:
        tokens = np.random.default_rng(0).integers(0, V, n)
    return WindowSampler(ArrayWindows(tokens, T), batch_size=batch, seed=0, **kw)


def cfg(**kw):
    base = dict(lr=3e-3, warmup_steps=2, batch_size=4, max_steps=6, eval_every=0, checkpoint_every=0, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_a_pattern(tmp_path):
    m = model()
    res = train(m, sampler(periodic=True), cfg(max_steps=40, lr=1e-2, warmup_steps=5), tmp_path, progress=False)
    losses = [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 40 and res.stop_reason == "steps"
    assert losses[0] > 0.9 * math.log(V)
    assert losses[-1] < 0.3 * losses[0]
    # the final folder holds these weights
    w = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert torch.equal(w["embed.weight"], m.embed.weight.detach())


def test_schedule_warmup_cosine_and_constant():
    s = Schedule(lr=1.0, warmup_steps=4, kind="cosine", total_steps=14, min_ratio=0.1)
    assert [s(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(4) == pytest.approx(1.0) and s(9) == pytest.approx(0.55) and s(14) == pytest.approx(0.1)
    assert s(100) == pytest.approx(0.1)
    c = Schedule(lr=2.0, warmup_steps=0, kind="constant")
    assert c(0) == c(1000) == 2.0
    with pytest.raises(SpeclmError):
        Schedule(lr=1.0, warmup_steps=1, kind="linear")


@pytest.mark.parametrize(
    "budget,steps,reason",
    [({"max_tokens": 4 * T * 5 - 1}, 5, "tokens"), ({"max_flops": 1.0}, None, None), ({"max_steps": 3}, 3, "steps")],
)
def test_budgets_stop_the_run(tmp_path, budget, steps, reason):
    m = model()
    c = cfg(**{"max_steps": 0, **budget})
    if steps is None:  # less than one step
        with pytest.raises(SpeclmError, match="less than one step"):
            train(m, sampler(), c, tmp_path, progress=False)
        return
    res = train(m, sampler(), c, tmp_path, progress=False)
    assert (res.steps, res.stop_reason) == (steps, reason)
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert cost["pretrain"]["tokens"] == steps * 4 * T
    assert cost["pretrain"]["flops"] == pytest.approx(steps * 4 * T * m.flops_per_token(T))


def test_flops_budget_counts_model_flops(tmp_path):
    m = model()
    per_step = m.flops_per_token(T) * 4 * T
    res = train(m, sampler(), cfg(max_steps=0, max_flops=2.5 * per_step), tmp_path, progress=False)
    assert (res.steps, res.stop_reason) == (3, "flops")


@pytest.mark.parametrize("bad", [{"max_steps": 0}, {"max_steps": -1}, {"batch_size": 0}, {"schedule": "step"}])
def test_zero_or_bad_budget_is_a_clear_error(tmp_path, bad):
    with pytest.raises(SpeclmError):
        train(model(), sampler(), cfg(**bad), tmp_path, progress=False)
    assert not (tmp_path / "final").exists()


def test_budget_horizon():
    b = Budget(steps=100, tokens=1000)
    assert b.horizon_steps(tokens_per_step=64, flops_per_step=1.0) == 16
    assert Budget(device_hours=1.0).horizon_steps(64, 1.0) == 0
    assert b.reached(15, 960, 0, 0) is None and b.reached(16, 1024, 0, 0) == "tokens"


def test_early_stopping_keeps_the_best_weights(tmp_path):
    m = model()
    calls = []

    def valid(mod):  # step 0, then improves once, then gets worse
        calls.append(1)
        return [3.0, 2.0, 2.5, 2.6, 2.7, 2.8][len(calls) - 1]

    c = cfg(max_steps=50, eval_every=2, patience=3)
    res = train(m, sampler(), c, tmp_path, valid_fn=valid, early_stopping=True, phase="specialize", progress=False)
    assert res.stop_reason == "early_stopping"
    assert (res.steps, res.best_step, res.best_valid) == (8, 2, 2.0)
    best = load_file(str(tmp_path / "best" / "model.safetensors"))
    assert all(torch.equal(best[k], v) for k, v in m.state_dict().items() if k in best)
    assert ckpt.read_meta(tmp_path / "final")["step"] == 2
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert cost["phase"] == "specialize" and "pretrain" not in cost and cost["specialize"]["steps"] == 8


def test_early_stopping_validates_before_the_first_step(tmp_path):
    """A run whose every step only hurts returns its starting weights (best_step 0)."""
    m = model()
    start = {k: v.clone() for k, v in m.state_dict().items()}
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    c = cfg(max_steps=50, eval_every=2, patience=2)
    res = train(m, sampler(), c, tmp_path, valid_fn=lambda mod: next(losses), early_stopping=True,
                phase="specialize", progress=False)
    assert (res.stop_reason, res.steps, res.best_step, res.best_valid) == ("early_stopping", 4, 0, 1.0)
    assert all(torch.equal(start[k], v) for k, v in m.state_dict().items())
    final = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert all(torch.equal(final[k], start[k]) for k in final)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    m = model()
    step = [0]

    def loss_fn(mod, batch):
        step[0] += 1
        loss = mod(batch[0], batch[1])[1]
        return loss * float("nan") if step[0] == 5 else loss

    with pytest.raises(SpeclmError, match="not finite at step 5.*step 4"):
        train(m, sampler(), cfg(checkpoint_every=2, max_steps=8), tmp_path, loss_fn=loss_fn, progress=False)
    good = ckpt.load_transformer(tmp_path / "checkpoint")
    assert ckpt.read_meta(tmp_path / "checkpoint")["step"] == 4
    assert all(torch.isfinite(p).all() for p in good.parameters())
    assert not (tmp_path / "final").exists() and not (tmp_path / "train.json").exists()


def test_checkpoint_of_another_shape_is_a_clear_error(tmp_path):
    ckpt.save_checkpoint(tmp_path / "c", model())
    other = Transformer(named_shape("tiny", V + 1, max_seq_len=T))
    with pytest.raises(SpeclmError, match="another model shape.*vocab_size"):
        ckpt.load_weights(other, tmp_path / "c")
    with pytest.raises(SpeclmError, match="not a checkpoint folder"):
        ckpt.load_weights(other, tmp_path)
    tied = ckpt.load_transformer(tmp_path / "c")
    assert torch.equal(tied.embed.weight, model().embed.weight)


def test_tied_embeddings_round_trip(tmp_path):
    m = model(tie_embeddings=True)
    ckpt.save_checkpoint(tmp_path / "c", m)
    back = ckpt.load_transformer(tmp_path / "c")
    assert back.lm_head.weight is back.embed.weight
    assert torch.equal(back.embed.weight, m.embed.weight)


def test_finished_run_returns_at_once_and_refuses_other_settings(tmp_path):
    m = model()
    first = train(m, sampler(), cfg(), tmp_path, progress=False, ddp=False)
    again = model(seed=3)
    second = train(again, sampler(), cfg(), tmp_path, progress=False)
    assert second.steps == first.steps and torch.equal(again.embed.weight, m.embed.weight)
    with pytest.raises(SpeclmError, match="other settings"):
        train(model(), sampler(), cfg(lr=1e-3), tmp_path, progress=False)


def test_only_trainable_parameters_change_and_prior_cost_is_kept(tmp_path):
    m = model()
    for name, p in m.named_parameters():
        p.requires_grad = name.startswith("blocks.0.")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    prior = {"phase": "pretrain", "pretrain": {"tokens": 7, "flops": 1.0, "wall_seconds": 2.0, "device_hours": 0.5,
                                               "steps": 1, "device_kind": "gpu", "n_devices": 8}}
    train(m, sampler(), cfg(), tmp_path, phase="specialize", prior_cost=prior, progress=False)
    after = m.state_dict()
    assert not torch.equal(before["blocks.0.attn.qkv.weight"], after["blocks.0.attn.qkv.weight"])
    assert torch.equal(before["blocks.1.attn.qkv.weight"], after["blocks.1.attn.qkv.weight"])
    assert torch.equal(before["embed.weight"], after["embed.weight"])
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert cost["pretrain"] == prior["pretrain"]
    assert cost["specialize"]["tokens"] == 6 * 4 * T


def test_extras_reach_the_model(tmp_path):
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, shape, layer):
            super().__init__()
            self.lin = torch.nn.Linear(shape.d_model, shape.d_model, bias=False)

        def forward(self, x, cluster=None):
            seen.append(cluster)
            return self.lin(x)

    torch.manual_seed(0)
    m = Transformer(named_shape("tiny", V, max_seq_len=T), make_mlp=Recorder)
    s = sampler(extras={"cluster": np.arange(len(ArrayWindows(np.zeros(3000), T))) % 4})
    train(m, s, cfg(max_steps=1), tmp_path, progress=False)
    assert seen and all(c is not None and c.shape == (4,) for c in seen)


def test_sampler_is_deterministic_and_covers_an_epoch():
    s = sampler(batch=7)
    n = len(s.indices)
    ids = np.concatenate([s.window_ids(p) for p in range(n // 7)])
    assert len(set(ids.tolist())) == len(ids)  # no repeats inside an epoch
    assert np.array_equal(s.window_ids(3), sampler(batch=7).window_ids(3))
    x, y = s.batch(0)
    assert torch.equal(x[:, 1:], y[:, :-1])


def _ddp_worker(rank, port, out_dir):
    import os

    os.environ.update({"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    try:
        train(model(), sampler(batch=2), cfg(batch_size=2, max_steps=4), out_dir, progress=False)
    finally:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_equal_one_rank_with_accumulation(tmp_path):
    """2 gloo ranks x 1 micro-batch see the same batches as 1 rank x 2 accumulated ones."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path / "ddp")), nprocs=2, join=True)
    single = model()
    train(single, sampler(batch=2), cfg(batch_size=2, grad_accum=2, max_steps=4), tmp_path / "one", progress=False)
    ddp = ckpt.load_transformer(tmp_path / "ddp" / "final")
    for (k, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k
    assert not torch.allclose(single.embed.weight, model().embed.weight)
    cost = json.loads((tmp_path / "ddp" / "cost.json").read_text())
    assert cost["pretrain"]["n_devices"] == 2 and cost["pretrain"]["tokens"] == 4 * 2 * 2 * T
