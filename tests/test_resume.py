"""A killed run resumes and ends with exactly the weights of an uninterrupted one."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speclm.train.validate import make_valid_fn
from speclm.model.transformer import Transformer, named_shape
from speclm.core.sections import TrainConfig
from speclm.train.data import ArrayWindows, WindowSampler
from speclm.train.loop import train

torch.set_num_threads(1)
V, T = 61, 16


from conftest import KillAt, Killed  # noqa: E402


def setup(seed=0):
    tokens = np.random.default_rng(1).integers(0, V, 4000)
    torch.manual_seed(seed)
    model = Transformer(named_shape("tiny", V, max_seq_len=T))
    sampler = WindowSampler(ArrayWindows(tokens, T), batch_size=3, seed=5)
    valid = make_valid_fn(ArrayWindows(tokens[:600], T), batch_size=8)
    return model, sampler, valid


@pytest.mark.parametrize("dtype,accum", [("fp32", 2), ("bf16", 1)])
def test_killed_run_resumes_to_identical_weights(tmp_path, dtype, accum):
    cfg = TrainConfig(lr=3e-3, warmup_steps=3, batch_size=3, grad_accum=accum, dtype=dtype, max_steps=9,
                      eval_every=4, checkpoint_every=3, log_every=2)
    model_a, sampler, valid = setup()
    ref = train(model_a, sampler, cfg, tmp_path / "a", valid_fn=valid, progress=False)

    model_b, sampler, valid = setup()
    with pytest.raises(Killed):  # dies during step 8, after the checkpoint of step 6
        train(model_b, KillAt(sampler, 7 * accum), cfg, tmp_path / "b", valid_fn=valid, progress=False)
    assert not (tmp_path / "b" / "final").exists()
    model_c, sampler, valid = setup(seed=123)  # a fresh process: other initial weights
    res = train(model_c, sampler, cfg, tmp_path / "b", valid_fn=valid, progress=False)

    assert res.steps == ref.steps == 9
    sa, sc = model_a.state_dict(), model_c.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    fa = load_file(str(tmp_path / "a" / "checkpoint" / "optimizer.safetensors"))
    fc = load_file(str(tmp_path / "b" / "checkpoint" / "optimizer.safetensors"))
    assert fa.keys() == fc.keys() and all(torch.equal(fa[k], fc[k]) for k in fa)
    assert res.best_valid == ref.best_valid
    # the metrics log has no duplicated steps from the killed attempt
    from speclm.core.atomic import read_jsonl

    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)) == [2, 4, 6, 8]


def test_resume_differs_without_the_saved_state(tmp_path):
    """The check above can fail: restarting from scratch does not give the same weights."""
    cfg = TrainConfig(lr=3e-3, warmup_steps=3, batch_size=3, max_steps=6, eval_every=0, checkpoint_every=3)
    model_a, sampler, _ = setup()
    train(model_a, sampler, cfg, tmp_path / "a", progress=False)
    model_b, sampler, _ = setup(seed=9)
    train(model_b, sampler, cfg, tmp_path / "b", progress=False)
    assert not torch.equal(model_a.lm_head.weight, model_b.lm_head.weight)
