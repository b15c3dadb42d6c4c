"""Issue 21, "nothing lost, round two": a preset means one config in every folder, no
command writes where it should not, a refused command saves nothing, absurd values are
refused with the estimate (each test fails on the code before the fix)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import FAST_TRAIN, SMALL

TRAIN = [a for s in FAST_TRAIN for a in ("--set", s)]


def _one_line(code, err, *words):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith(("speclm: error", "Traceback"))]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("speclm: error:"), (code, err[-1500:])
    for w in words:
        assert w in lines[0], (w, lines[0])


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


# ---- 1. a preset means one config --------------------------------------------------------


def _import(cli, run, user_files, *extra):
    code, _, err = cli("corpus", "import", "--run", run, *extra, "--generic", user_files["generic"],
                       "--domain", f"notes={user_files['notes']}", "--domain", f"code={user_files['code']}")
    assert code == 0, err


def test_the_own_data_recipe_gives_the_presets_config(tmp_path, cli, user_files):
    """README: `corpus import` (no preset: tiny), then `run --preset demo`: the demo's config,
    not the tiny preset's fine-tuning caps (the bug: methods.finetune_max_steps = [10, 20, 30])."""
    from speclm.core.config import load, to_dict
    from speclm.core.run import open_run

    recipe, fresh = tmp_path / "recipe", tmp_path / "fresh"
    _import(cli, recipe, user_files)
    code, _, err = cli("run", "--run", recipe, "--preset", "demo", "--until", "corpus")
    assert code == 0, err
    _import(cli, fresh, user_files, "--preset", "demo")
    assert (recipe / "config.toml").read_text() == (fresh / "config.toml").read_text()
    got = to_dict(open_run(recipe, save=False).config)
    want = to_dict(load("demo"))
    assert got["corpus"].pop("source") == "import" and want["corpus"].pop("source") == "default"
    assert got == want
    assert got["methods"]["finetune_max_steps"] == [] and got["methods"]["finetune_eval_every"] != 5


def test_explicit_values_survive_a_preset_change_and_the_change_is_said(tmp_path, cli):
    run = tmp_path / "run"
    code, _, err = cli("run", "--run", run, *SMALL, "--set", "train.max_steps=7", "--until", "tokens")
    assert code == 0, err
    code, _, err = cli("run", "--run", run, "--preset", "demo", "--dry-run")
    assert code == 0, err
    assert "speclm: note: preset demo changes" in err and "tokens/" in err
    code, _, err = cli("corpus", "build", "--run", run, "--preset", "demo", "--set", "corpus.source='tiny'")
    assert code == 0, err
    from speclm.core.run import open_run

    cfg = open_run(run, save=False).config
    assert (cfg.name, cfg.train.max_steps, cfg.tokens.vocab_size, cfg.train.lr) == ("demo", 7, 300, 2e-3)


# ---- 2. one rule for every output path ---------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with the tiny corpus, its tokens and one `speclm train` checkpoint."""
    from speclm.cli import main

    run = tmp_path_factory.mktemp("outputs") / "run"
    for args in (["run", "--run", str(run), *SMALL, "--until", "tokens"], ["train", "--run", str(run), *TRAIN]):
        try:
            main(args)
        except SystemExit as e:
            assert not e.code
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def _ckpt(run):
    return run / "train" / "generic" / "tiny" / "final"


@pytest.mark.parametrize("target", ["config.toml", "corpus/generic.parquet", "train/generic/tiny/final/model.json",
                                    "tokens/summary.json", "train/generic/tiny", "eval.json/"])
def test_eval_out_never_overwrites_a_run_file(run_copy, cli, target):
    before = _tree(run_copy)
    if target.endswith("/"):
        (run_copy / target).mkdir()
        before = _tree(run_copy)
    code, _, err = cli("eval", "--run", run_copy, "--checkpoint", _ckpt(run_copy), "--max-windows", "2",
                       "--out", run_copy / target.rstrip("/"))
    _one_line(code, err, "--out")
    assert _tree(run_copy) == before


def test_eval_out_may_replace_its_own_result(run_copy, cli, tmp_path):
    out = tmp_path / "ev.json"
    for _ in range(2):
        code, _, err = cli("eval", "--run", run_copy, "--checkpoint", _ckpt(run_copy), "--max-windows", "2",
                           "--out", out)
        assert code == 0, err
    assert "sets" in json.loads(out.read_text())
    code, _, err = cli("eval", "--run", run_copy, "--checkpoint", _ckpt(run_copy), "--split", "../../x")
    _one_line(code, err, "--split")


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "", ".hidden", "a/b"])
def test_grid_report_plan_names_are_plain_names(run_copy, cli, name):
    before = _tree(run_copy)
    for cmd in (("grid", "--methods", "slm"), ("report",), ("plan",)):
        code, _, err = cli(*cmd, "--run", run_copy, "--name", name)
        _one_line(code, err, "--name")
    assert _tree(run_copy) == before
    assert not (run_copy.parent / "escaped.jsonl").exists()


def test_plan_out_never_overwrites_the_config(run_copy, cli):
    before = _tree(run_copy)
    code, _, err = cli("plan", "--run", run_copy, "--domains", "2", "--out", run_copy / "config.toml")
    _one_line(code, err, "--out")
    assert _tree(run_copy) == before


def test_train_out_never_trains_into_a_stage_folder(run_copy, cli):
    before = _tree(run_copy)
    code, _, err = cli("train", "--run", run_copy, *TRAIN, "--out", run_copy / "corpus")
    _one_line(code, err, "--out", "training folder")
    assert _tree(run_copy) == before


def test_export_force_never_deletes_a_users_file(run_copy, cli, tmp_path):
    out = tmp_path / "hf"
    code, _, err = cli("export", "--checkpoint", _ckpt(run_copy), "--run", run_copy, "--out", out)
    assert code == 0, err
    (out / "my-notes.txt").write_text("mine")
    code, _, err = cli("export", "--checkpoint", _ckpt(run_copy), "--run", run_copy, "--out", out, "--force")
    _one_line(code, err, "my-notes.txt")
    assert (out / "my-notes.txt").read_text() == "mine"


# ---- 3. a refused command saves nothing --------------------------------------------------


@pytest.mark.parametrize("cmd", [
    ("pretrain", "slm", "--set", "model.small=nonexistent"),
    ("run", "--set", "tokens.vocab_size=10", "--until", "tokens"),
    ("run", "--set", "methods.sizes=[]", "--until", "corpus"),
    ("train", "--set", "train.max_steps=99999999999999999999999"),
    ("train", "--set", "train.max_steps=99999999999999"),
    ("run", "--set", "train.max_steps=0", "--set", "train.max_tokens=999999999999999999", "--dry-run"),
    ("clusters", "--set", "clusters.ks=[100000]"),
])
def test_a_refused_command_leaves_config_toml_as_it_was(run_copy, cli, cmd):
    before = _tree(run_copy)
    code, _, err = cli(*cmd, "--run", run_copy)
    _one_line(code, err)
    after = _tree(run_copy)
    if cmd[0] == "clusters":  # k is checked against the embedded windows: the embedding cache stays
        after = {k: v for k, v in after.items() if not k.startswith("clusters/")}
    assert after == before


def test_an_absurd_budget_is_refused_with_the_estimate(run_copy, cli):
    code, _, err = cli("train", "--run", run_copy, "--set", "train.max_steps=99999999999999")
    _one_line(code, err, "years on this machine", "train.max_steps")
    code, _, err = cli("generate", "--run", run_copy, "--checkpoint", _ckpt(run_copy), "--max-new-tokens",
                       str(10**15))
    _one_line(code, err, "years on this machine")


def test_another_corpus_over_an_import_saves_nothing(tmp_path, cli, user_files):
    run = tmp_path / "run"
    _import(cli, run, user_files)
    before = _tree(run)
    code, _, err = cli("run", "--run", run, "--set", "corpus.source=tiny", "--until", "corpus")
    _one_line(code, err, "--force")
    assert _tree(run) == before


# ---- 4. damaged files: one line, never silent defaults -----------------------------------


def test_an_empty_config_toml_is_refused_not_all_defaults(run_copy, cli):
    (run_copy / "config.toml").write_text("")
    before = _tree(run_copy)
    code, _, err = cli("tokens", "--run", run_copy)
    _one_line(code, err, "config.toml is empty", "delete it")
    assert _tree(run_copy) == before


def test_a_damaged_state_json_names_the_file_and_restart(run_copy, cli):
    out = run_copy / "train" / "generic" / "tiny"
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    state["step"] = "ten"
    (out / "checkpoint" / "state.json").write_text(json.dumps(state))
    (out / "train.json").unlink()  # unfinished: the next train resumes from the checkpoint
    code, _, err = cli("train", "--run", run_copy, *TRAIN)
    _one_line(code, err, "state.json", "--restart")
    code, _, err = cli("train", "--run", run_copy, *TRAIN, "--restart")
    assert code == 0, err


def test_a_full_disk_while_a_checkpoint_is_saved_is_one_line(run_copy, cli, monkeypatch):
    import safetensors.torch

    from speclm.train import checkpoint

    def full(*a, **k):
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')

    monkeypatch.setattr(checkpoint, "save_model", full)
    code, _, err = cli("train", "--run", run_copy, *TRAIN, "--out", run_copy / "t2")
    _one_line(code, err, "no space left")


def test_a_read_only_folder_for_eval_with_a_relative_path(run_copy, cli, monkeypatch):
    import errno
    import os

    from speclm.core import atomic

    real = atomic.tempfile.mkstemp

    def refuse(*a, dir=None, **k):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.abspath(str(dir)))

    monkeypatch.chdir(run_copy.parent)
    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    code, _, err = cli("eval", "--run", "run", "--checkpoint", "run/train/generic/tiny/final", "--max-windows", "2")
    monkeypatch.setattr(atomic.tempfile, "mkstemp", real)
    _one_line(code, err, "Permission denied")


# ---- 7. input that is not what it seems --------------------------------------------------


def test_a_device_as_a_domain_and_a_domain_equal_to_the_generic_set(tmp_path, cli, user_files):
    code, _, err = cli("corpus", "import", "--run", tmp_path / "a", "--generic", user_files["generic"],
                       "--domain", "zero=/dev/zero")
    _one_line(code, err, "not a regular file")
    assert not (tmp_path / "a").exists()
    code, _, err = cli("corpus", "import", "--run", tmp_path / "b", *SMALL, "--generic", user_files["generic"],
                       "--domain", f"same={user_files['generic']}", "--domain", f"code={user_files['code']}")
    assert code == 0, err
    assert "warning: domain 'same' holds only documents of the generic set" in err
    assert "'code'" not in err


# ---- 6. a worker dies with its parent ----------------------------------------------------


def test_a_process_watching_its_parent_ends_within_seconds_of_its_death(tmp_path):
    """speclm.core.ranks.watch_parent, as every grid worker runs it: the parent is SIGKILLed
    and the worker (here in a long sleep, no training step to stop at) is gone within 10 s,
    quietly. scripts/kill_resume.py does the same with a real `speclm grid --workers 2`."""
    import os
    import signal
    import subprocess
    import sys
    import time

    child = ("import time; from speclm.core import ranks; ranks.watch_parent(grace=1.0, interval=0.1); "
             "print('ready', flush=True); time.sleep(60)")
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}], "
              "stdout=sys.stdout, stderr=sys.stderr); print(p.pid, flush=True); time.sleep(60)")
    err = tmp_path / "err"
    with open(err, "wb") as f:
        p = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, stderr=f)
    pid = int(p.stdout.readline())
    assert p.stdout.readline().strip() == b"ready"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 10:
        try:
            os.kill(pid, 0)
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the worker outlived its parent by 10 s")
    assert "Traceback" not in err.read_text()
