"""Live curves: ``train.logger = "tensorboard"`` writes the loop's rows as TensorBoard events,
read back here with TensorBoard's own reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speclm.core.atomic import read_jsonl
from speclm.core.errors import SpeclmError
from speclm.core.sections import TrainConfig
from speclm.model.transformer import Transformer, named_shape
from speclm.train.data import ArrayWindows, WindowSampler
from speclm.train.loop import train

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

torch.set_num_threads(1)
V, T = 53, 16


def _model():
    torch.manual_seed(0)
    return Transformer(named_shape("tiny", V, max_seq_len=T))


def _sampler():
    return WindowSampler(ArrayWindows(np.random.default_rng(0).integers(0, V, 3000), T), batch_size=4, seed=0)


def _cfg(**kw):
    base = dict(lr=3e-3, warmup_steps=2, batch_size=4, max_steps=6, eval_every=2, checkpoint_every=2, log_every=1,
                logger="tensorboard")
    return TrainConfig(**{**base, **kw})


def _valid(model):
    x = torch.arange(T + 1).remainder(V)[None]
    with torch.no_grad():
        return float(model(x[:, :-1], x[:, 1:])[1])


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_are_the_metrics_rows(tmp_path):
    train(_model(), _sampler(), _cfg(), tmp_path, valid_fn=_valid, progress=False)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    got = _scalars(tmp_path)
    assert {"train/loss", "train/lr", "train/tokens_per_s", "valid/loss", "valid/best"} <= set(got)
    steps = [r for r in rows if "loss" in r]
    assert [s for s, _ in got["train/loss"]] == [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in got["train/loss"]] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    assert [v for _, v in got["train/lr"]] == pytest.approx([r["lr"] for r in steps], rel=1e-6)
    assert all(v > 0 for _, v in got["train/tokens_per_s"])
    valids = [r for r in rows if "valid_loss" in r]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in got["valid/loss"]] == [(r["step"], r["valid_loss"]) for r in valids]
    assert [s for s, _ in got["valid/loss"]] == [2, 4, 6]


def test_jsonl_logger_writes_no_events(tmp_path):
    train(_model(), _sampler(), _cfg(logger="jsonl"), tmp_path, valid_fn=_valid, progress=False)
    assert (tmp_path / "metrics.jsonl").is_file() and not (tmp_path / "tensorboard").exists()


def test_a_resumed_job_logs_each_step_once(tmp_path):
    from conftest import KillAt, Killed

    with pytest.raises(Killed):  # killed in step 6: step 5 was logged after the checkpoint at step 4
        train(_model(), KillAt(_sampler(), 5), _cfg(), tmp_path, valid_fn=_valid, progress=False)
    assert [s for s, _ in _scalars(tmp_path)["train/loss"]] == [1, 2, 3, 4, 5]
    # the resumed run starts at step 4 again: the killed run's step 5 is purged, not doubled
    train(_model(), _sampler(), _cfg(), tmp_path, valid_fn=_valid, progress=False)
    got = _scalars(tmp_path)
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in got["valid/loss"]] == [2, 4, 6]


def test_an_unknown_logger_is_refused(tmp_path, cli):
    with pytest.raises(SpeclmError, match="train.logger"):
        TrainConfig(logger="wandb")
    code, _, err = cli("run", "--run", tmp_path / "r", "--preset", "tiny", "--set", "train.logger='wandb'")
    assert code == 2 and "train.logger" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_the_logger_changes_no_key(tmp_path):
    """Turning TensorBoard on redoes nothing: a finished job is found finished, the grid's rows
    and the method jobs keep their keys (and runs from before train.logger keep theirs)."""
    from speclm.core.manifest import hash_obj
    from speclm.core.run import open_run
    from speclm.report.rows import config_hash
    from speclm.methods.base import Context
    from speclm.methods.jobs import config_part

    first = train(_model(), _sampler(), _cfg(logger="jsonl"), tmp_path, valid_fn=_valid, progress=False)
    again = train(_model(), _sampler(), _cfg(), tmp_path, valid_fn=_valid, progress=False)  # returns at once
    assert again.steps == first.steps and not (tmp_path / "tensorboard").exists()
    keys = []
    for logger in ("jsonl", "tensorboard"):
        r = open_run(tmp_path / "r", "tiny", [f"train.logger='{logger}'"], save=False)
        keys.append((config_hash(r), hash_obj(config_part(Context(run=r, log=print)))))
    assert keys[0] == keys[1]
    assert "logger" not in TrainConfig().result_fields() and "lr" in TrainConfig().result_fields()
