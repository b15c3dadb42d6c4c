import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speclm.core.errors import SpeclmError
from speclm.inference.evaluate import macro_perplexity
from speclm.train.validate import mean_nll, window_nll
from speclm.model.transformer import Transformer, named_shape
from speclm.train.data import ArrayWindows

torch.set_num_threads(1)
V, T = 71, 16


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", V, max_seq_len=T))
    windows = ArrayWindows(np.random.default_rng(0).integers(0, V, 11 * T + 1), T)
    return model, windows


def test_eval_is_deterministic_and_batch_size_independent(setup):
    model, windows = setup
    assert len(windows) == 11
    ref, n = mean_nll(model, windows, batch_size=11)
    assert n == 11 * T
    for bs in (1, 3, 4, 7):  # 11 is divisible by none: partial last batches
        got, _ = mean_nll(model, windows, batch_size=bs)
        assert got == pytest.approx(ref, rel=1e-6, abs=0)
        assert mean_nll(model, windows, batch_size=bs)[0] == got  # repeats exactly
    # and it is the mean token NLL
    rows = torch.from_numpy(windows.batch(np.arange(11)))
    with torch.no_grad():
        logits, _ = model(rows[:, :-1])
    direct = F.cross_entropy(logits.reshape(-1, V), rows[:, 1:].reshape(-1)).item()
    assert ref == pytest.approx(direct, rel=1e-5)


def test_eval_weighs_tokens_not_batches(setup):
    """A mean of per-batch means (the common bug) differs when the last batch is partial."""
    model, windows = setup
    sums = window_nll(model, windows, batch_size=4)
    batch_means = [sums[i : i + 4].sum() / (len(sums[i : i + 4]) * T) for i in range(0, 11, 4)]
    assert abs(np.mean(batch_means) - mean_nll(model, windows, batch_size=4)[0]) > 1e-6


def test_subset_is_evenly_spread_and_deterministic(setup):
    model, windows = setup
    a, n = mean_nll(model, windows, max_windows=4)
    assert n == 4 * T
    assert a == pytest.approx(mean_nll(model, windows, max_windows=4, batch_size=2)[0], rel=1e-6)


def test_macro_perplexity_weighs_domains_equally():
    assert macro_perplexity({"a": 1.0, "b": 3.0}) == pytest.approx(math.exp(2.0))
    assert macro_perplexity({"a": 2.0}) == pytest.approx(math.exp(2.0))
    with pytest.raises(SpeclmError):
        macro_perplexity({})
    with pytest.raises(SpeclmError):
        macro_perplexity({"a": float("nan")})


def test_cli_train_eval_export_generate(tmp_path, imported_run, cli):
    run = imported_run
    code, out, err = cli("tokens", "--run", run)
    assert code == 0, err
    ov = ["--set", "train.max_steps=3", "--set", "train.eval_every=2", "--set", "train.batch_size=2",
          "--set", "train.eval_batches=2", "--set", "train.warmup_steps=1", "--set", "train.log_every=1"]
    code, out, err = cli("train", "--run", run, *ov, "--shape", "tiny")
    assert code == 0, err
    assert "parameters" in out and "MFLOPs" in out
    final = run / "train" / "generic" / "tiny" / "final"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    cost = json.loads((final.parent / "cost.json").read_text())
    assert cost["pretrain"]["steps"] == 3

    # fine-tune on a domain from that checkpoint: specialization costs kept apart
    code, out, err = cli("train", *ov, "--set-name", "code", "--init", final, "--early-stopping")  # run: the one holding it
    assert code == 0, err
    cost = json.loads((run / "train" / "code" / "tiny" / "cost.json").read_text())
    assert cost["phase"] == "specialize" and cost["pretrain"]["steps"] == 3 and cost["specialize"]["steps"] >= 2

    code, out, err = cli("eval", "--run", run, "--checkpoint", final, "--batch-size", "3")
    assert code == 0, err
    res = json.loads((final / "eval-test.json").read_text())
    assert set(res["sets"]) == {"generic", "notes", "code"}
    assert res["macro_ppl"] == pytest.approx(math.exp((res["sets"]["notes"]["nll"] + res["sets"]["code"]["nll"]) / 2))
    # without --run: the run folder that holds the checkpoint
    code, out, err = cli("eval", "--checkpoint", final, "--batch-size", "5", "--out", tmp_path / "e.json")
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["macro_ppl"] == pytest.approx(res["macro_ppl"], rel=1e-6)

    code, out, err = cli("export", "--checkpoint", final, "--out", tmp_path / "hf")
    assert code == 0, err
    assert (tmp_path / "hf" / "config.json").is_file()
    code, out, err = cli("generate", "--checkpoint", final, "--prompt", "def", "--max-new-tokens", "5")
    assert code == 0, err
    assert out.startswith("def") and len(out.strip()) > 3

    # bad input: a checkpoint made with another tokenizer, a checkpoint of another shape, a zero budget
    meta = json.loads((final / "model.json").read_text())
    meta["tokenizer_sha256"] = "f" * 64
    other = tmp_path / "other"
    import shutil

    shutil.copytree(final, other)
    (other / "model.json").write_text(json.dumps(meta))
    code, out, err = cli("eval", "--run", run, "--checkpoint", other)
    assert code == 2 and "another tokenizer" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("eval", "--checkpoint", other)  # outside every run folder, and no --run
    assert code == 2 and "not inside a run folder" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("train", "--run", run, *ov, "--shape", "tiny-large", "--init", final, "--out", tmp_path / "x")
    assert code == 2 and "another model shape" in err
    code, out, err = cli("train", "--run", run, "--set", "train.max_steps=0", "--out", tmp_path / "y")
    assert code == 2 and "budget is zero" in err
    assert not (tmp_path / "y" / "final").exists()


def test_cli_shapes_prints_counts(cli):
    code, out, err = cli("shapes", "--vocab", "32768", "--seq", "1024")
    assert code == 0, err
    line = next(l for l in out.splitlines() if "paper-slm" in l)
    assert "121.65M parameters" in line and "MLP 58.72M" in line
