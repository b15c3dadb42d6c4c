"""Progress when stderr is not a terminal: plain lines with rate and time left, no bars."""

from __future__ import annotations

import io

from speclm.core.progress import progress, track


def test_piped_progress_prints_plain_lines_with_rate_and_time_left(monkeypatch):
    monkeypatch.setenv("SPECLM_PROGRESS_EVERY", "0")
    out = io.StringIO()  # not a terminal
    with progress(4, desc="embed", unit="win", file=out) as bar:
        for _ in range(4):
            bar.update(1)
            if bar.n == 2:
                bar.set_postfix({"loss": "1.5"})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("speclm: embed: 1/4 win (25%), ") and "win/s" in lines[0] and " left" in lines[0]
    assert lines[2].endswith("loss=1.5")
    assert lines[-1].startswith("speclm: embed: 4/4 win (100%)") and lines[-1].endswith("(done)")


def test_piped_progress_is_quiet_between_intervals_and_when_off(monkeypatch):
    monkeypatch.setenv("SPECLM_PROGRESS_EVERY", "3600")
    out = io.StringIO()
    assert list(track(range(50), desc="eval", file=out)) == list(range(50))
    assert out.getvalue() == ""  # short loops print nothing, not even a last line
    monkeypatch.setenv("SPECLM_PROGRESS_EVERY", "0")
    off = io.StringIO()
    list(track(range(5), desc="eval", file=off, show=False))
    assert off.getvalue() == ""


def test_piped_training_loop_prints_progress_lines(tmp_path, monkeypatch, capfd):
    """The training loop, with stderr a pipe: plain lines, no tqdm bar fragments."""
    import numpy as np
    import torch

    from speclm.core.sections import TrainConfig
    from speclm.model.transformer import Transformer, named_shape
    from speclm.train.data import ArrayWindows, WindowSampler
    from speclm.train.loop import train

    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", 53, max_seq_len=16))
    sampler = WindowSampler(ArrayWindows(np.random.default_rng(0).integers(0, 53, 3000), 16), batch_size=4, seed=0)
    cfg = TrainConfig(lr=3e-3, warmup_steps=2, batch_size=4, max_steps=3, eval_every=0, checkpoint_every=0, log_every=1)
    monkeypatch.setenv("SPECLM_PROGRESS_EVERY", "0")
    train(model, sampler, cfg, tmp_path, progress=True)
    err = capfd.readouterr().err
    assert "\r" not in err
    steps = [line for line in err.splitlines() if line.startswith("speclm: train ")]
    assert len(steps) >= 3 and "/3 step" in steps[0] and "step/s" in steps[0], err
