"""Issue 13, "nothing lost": the user's data, the run's config and checkpoints survive
every command (each test fails on the code before the fix)."""

import json

from conftest import SMALL


def _sets(run):
    return sorted(p.name for p in (run / "corpus").glob("*.parquet"))


def test_run_with_a_preset_keeps_the_imported_corpus(imported_run, cli):
    """The README flow: `corpus import`, then `run --preset ...` uses the import, not the preset's corpus."""
    before = _sets(imported_run)
    assert "domain-notes.parquet" in before
    code, out, err = cli("run", "--run", imported_run, "--preset", "tiny", "--until", "corpus")
    assert code == 0, err
    assert _sets(imported_run) == before
    assert json.loads((imported_run / "corpus" / "summary.json").read_text())["source"] == "import"
    assert "source = \"import\"" in (imported_run / "config.toml").read_text()


def test_another_corpus_over_an_import_needs_force(imported_run, cli):
    before = _sets(imported_run)
    code, _, err = cli("corpus", "tiny", "--run", imported_run)
    assert code == 2
    assert "imported corpus" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert _sets(imported_run) == before
    assert "source = \"import\"" in (imported_run / "config.toml").read_text()
    code, _, err = cli("corpus", "tiny", "--run", imported_run, "--force")
    assert code == 0, err
    assert "domain-notes.parquet" not in _sets(imported_run)


import pytest


@pytest.mark.parametrize("setting, words", [
    ("train.max_steps=-1", "train.max_steps must be >= 0"),
    ("train.lr=nan", "train.lr must be a positive number"),
    ("train.lr=0", "train.lr must be a positive number"),
    ("tokens.window=0", "tokens.window must be positive"),
    ("clusters.ks=[]", "clusters.ks must be a non-empty list"),
    ("clusters.ks=[2, 0]", "clusters.ks must be a non-empty list"),
    ("seed=-1", "seed must be >= 0"),
    ("train.seed=-1", "train.seed must be >= 0"),
    ("tokens.min_frequency=-1", "tokens.min_frequency must be >= 0"),
    ("corpus.valid_fraction=1.5", "corpus.valid_fraction must be in [0, 1)"),
    ("train.batch_size=0", "train.batch_size must be positive"),
])
def test_a_refused_value_never_reaches_config_toml(tmp_path, cli, setting, words):
    run = tmp_path / "run"
    code, _, err = cli("run", "--run", run, *SMALL, "--until", "corpus")
    assert code == 0, err
    saved = (run / "config.toml").read_text()
    for cmd in (("pretrain", "slm"), ("run", "--until", "tokens"), ("tokens",)):
        code, _, err = cli(*cmd, "--run", run, "--set", setting)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (cmd, err)
        assert (run / "config.toml").read_text() == saved
    code, _, err = cli("run", "--run", run, "--until", "corpus")  # a plain command still works
    assert code == 0, err


def test_run_until_bogus_writes_nothing(tmp_path, cli):
    run = tmp_path / "new"
    code, _, err = cli("run", "--run", run, *SMALL, "--until", "bogus")
    assert code == 2 and "bogus" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_preset_naming_a_folder_and_run_naming_a_file(tmp_path, cli):
    code, _, err = cli("run", "--run", tmp_path / "r", "--preset", str(tmp_path), "--until", "corpus")
    assert code == 2 and "is a folder" in err and len(err.strip().splitlines()) == 1
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = cli("tokens", "--run", f)
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1
    assert f.read_text() == "x"


def test_checkpoints_name_their_tokenizer_and_other_runs_refuse_them(tmp_path, cli):
    from conftest import FAST_TRAIN

    from speclm.core.errors import SpeclmError
    from speclm.core.run import open_run
    from speclm.methods.base import Context
    from speclm.methods.finetune import load_model
    from speclm.tokens.shards import TokenShards

    a, b = tmp_path / "a", tmp_path / "b"
    ov = [x for s in FAST_TRAIN for x in ("--set", s)]
    for run, vocab in ((a, 300), (b, 320)):
        code, _, err = cli("run", "--run", run, *SMALL, "--set", f"tokens.vocab_size={vocab}", "--until", "tokens")
        assert code == 0, err
    code, _, err = cli("pretrain", "slm", "--run", a, *ov)
    assert code == 0, err
    final = next(a.glob("pretrain/slm/**/final"))
    meta = json.loads((final / "model.json").read_text())
    assert meta["tokenizer_sha256"] == TokenShards(a / "tokens").tokenizer_sha256
    for folder in [p for p in final.parent.iterdir() if p.is_dir() and (p / "model.json").exists()]:
        assert "tokenizer_sha256" in json.loads((folder / "model.json").read_text()), folder

    code, _, err = cli("eval", "--run", b, "--checkpoint", final)
    assert code == 2 and "another tokenizer" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("train", "--run", b, *ov, "--init", final, "--out", tmp_path / "t")
    assert code == 2 and "another tokenizer" in err
    with pytest.raises(SpeclmError, match="another tokenizer"):
        load_model(final, Context(run=open_run(b, None, None, save=False), log=lambda s: None))



def _tiny_checkpoint(tmp_path):
    """A real tiny transformer checkpoint with a real (small) BPE tokenizer."""
    import torch

    from conftest import stdlib_texts
    from speclm.model.transformer import Transformer, named_shape
    from speclm.tokens.bpe import save_tokenizer, train_bpe
    from speclm.train.checkpoint import save_checkpoint

    tok = train_bpe(stdlib_texts(5), 300, progress=False)
    tok_file = tmp_path / "tok.json"
    save_tokenizer(tok, tok_file)
    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", tok.get_vocab_size(), max_seq_len=16))
    ck = tmp_path / "ckpt"
    save_checkpoint(ck, model, files={"tokenizer.json": tok_file})
    return ck


def test_export_never_destroys_data(tmp_path, cli):
    ck = _tiny_checkpoint(tmp_path)
    before = sorted(p.name for p in ck.iterdir())
    for out in (ck, ck / "hf", tmp_path):  # the checkpoint, inside it, around it
        code, _, err = cli("export", "--checkpoint", ck, "--out", out)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in ck.iterdir()) == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, words in ((busy, "not empty"), (afile, "is a file")):
        code, _, err = cli("export", "--checkpoint", ck, "--out", out, "--force")
        assert code == 2 and words in err, err
    assert (busy / "mine.txt").read_text() == "keep" and afile.read_text() == "keep"
    hf = tmp_path / "hf"
    code, _, err = cli("export", "--checkpoint", ck, "--out", hf)
    assert code == 0, err
    code, _, err = cli("export", "--checkpoint", ck, "--out", hf)
    assert code == 2 and "--force" in err
    code, _, err = cli("export", "--checkpoint", ck, "--out", hf, "--force")
    assert code == 0, err
    assert (hf / "config.json").is_file() and (hf / "speclm-export.json").is_file()
    (tmp_path / "empty").mkdir()
    code, _, err = cli("export", "--checkpoint", ck, "--out", tmp_path / "empty")
    assert code == 0, err


def test_a_kill_between_the_two_renames_resumes_and_leaves_no_temps(tmp_path):
    """Kill during step 8 (checkpoint of step 6 saved), then fake the two leftovers of a
    kill inside the next save: the checkpoint moved to .checkpoint.old with a partial
    .checkpoint.*.tmp beside it, and a torn metrics rewrite. The restart resumes from
    .checkpoint.old (no step-0 restart, no duplicated rows) and removes every temp."""
    import os
    import stat

    import torch

    from speclm.core.atomic import read_jsonl
    from speclm.core.sections import TrainConfig
    from speclm.train.loop import train
    from test_resume import Killed, KillAt, setup

    cfg = TrainConfig(lr=3e-3, warmup_steps=3, batch_size=3, max_steps=9, eval_every=4, checkpoint_every=3, log_every=2)
    model_a, sampler, valid = setup()
    train(model_a, sampler, cfg, tmp_path / "a", valid_fn=valid, progress=False)
    model_b, sampler, valid = setup()
    out = tmp_path / "b"
    with pytest.raises(Killed):
        train(model_b, KillAt(sampler, 7), cfg, out, valid_fn=valid, progress=False)
    os.replace(out / "checkpoint", out / ".checkpoint.old")
    (out / ".checkpoint.x1y2.tmp").mkdir()
    (out / ".checkpoint.x1y2.tmp" / "model.safetensors").write_bytes(b"partial")
    (out / ".metrics.jsonl.abc.tmp").write_text('{"step": 1')
    model_c, sampler, valid = setup(seed=123)
    res = train(model_c, sampler, cfg, out, valid_fn=valid, progress=False)
    assert res.steps == 9
    sa, sc = model_a.state_dict(), model_c.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == [2, 4, 6, 8]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (out / "checkpoint").iterdir()}
    want = 0o666 & ~_umask()
    assert modes["model.safetensors"] == modes["optimizer.safetensors"] == modes["model.json"] == want, modes


def _umask() -> int:
    import os

    m = os.umask(0)
    os.umask(m)
    return m


def test_two_runs_at_once_on_one_folder_both_succeed(tmp_path):
    """Two `speclm run --until tokens` started together on one new run folder: one builds,
    the other waits for its lock, then reads the same stages; both exit 0."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "speclm.cli", "run", "--run", str(run), *SMALL, "--until", "tokens"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert (run / "tokens" / "manifest.json").is_file()
    assert not list(run.glob(".*.tmp")) and not list(run.glob("*/.*.tmp"))


@pytest.mark.parametrize("args, words", [
    (("generate", "--temperature", "nan"), "--temperature"),
    (("generate", "--samples", "0"), "--samples must be at least 1"),
    (("generate", "--device", "tpu"), "'tpu' is not one speclm can use"),
    (("eval", "--max-windows", "0"), "--max-windows must be at least 1"),
    (("eval", "--device", "tpu"), "'tpu' is not one speclm can use"),
])
def test_inference_bad_options_are_one_line(tmp_path, cli, args, words):
    ck = _tiny_checkpoint(tmp_path)
    code, out, err = cli(*args, "--checkpoint", ck)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_train_device_is_checked():
    from speclm.core.errors import SpeclmError
    from speclm.core.ranks import check_device, local

    with pytest.raises(SpeclmError, match="'tpu' is not one speclm can use"):
        local("tpu")
    check_device("cpu")


def _kill_at_step_5(out):
    """A run of 9 steps killed during step 5 (checkpoint of step 3 saved); the config."""
    from speclm.core.sections import TrainConfig
    from speclm.train.loop import train
    from test_resume import Killed, KillAt, setup

    cfg = TrainConfig(lr=3e-3, warmup_steps=3, batch_size=3, max_steps=9, eval_every=4, checkpoint_every=3, log_every=2)
    model, sampler, valid = setup()
    with pytest.raises(Killed):
        train(model, KillAt(sampler, 5), cfg, out, valid_fn=valid, progress=False)
    return cfg


@pytest.mark.parametrize("damage, name", [
    (lambda ck: (ck / "state.json").write_text((ck / "state.json").read_text()[:300]), "state.json"),
    (lambda ck: (ck / "state.json").write_text(
        json.dumps({**json.loads((ck / "state.json").read_text()), "rng": {"torch": "bm90IGEgc3RhdGU="}})), "state.json"),
    (lambda ck: (ck / "optimizer.safetensors").write_bytes((ck / "optimizer.safetensors").read_bytes()[:2000]),
     "optimizer.safetensors"),
    (lambda ck: (ck / "model.safetensors").write_bytes((ck / "model.safetensors").read_bytes()[:2000]),
     "model.safetensors"),
])
def test_a_damaged_resume_state_names_the_file_and_restart_recovers(tmp_path, damage, name):
    import torch

    from speclm.core.atomic import read_jsonl
    from speclm.core.errors import SpeclmError
    from speclm.train.loop import restarting, train
    from test_resume import setup

    out = tmp_path / "b"
    cfg = _kill_at_step_5(out)
    damage(out / "checkpoint")
    model, sampler, valid = setup()
    with pytest.raises(SpeclmError, match=rf"{name} .*(damaged|truncated or corrupt).*--restart") as e:
        train(model, sampler, cfg, out, valid_fn=valid, progress=False)
    assert len(str(e.value).splitlines()) == 1
    model_a, sampler, valid = setup()
    train(model_a, sampler, cfg, tmp_path / "a", valid_fn=valid, progress=False)
    model_b, sampler, valid = setup()
    with restarting():
        res = train(model_b, sampler, cfg, out, valid_fn=valid, progress=False)
    assert res.steps == 9
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # restarted from step 0: as if never killed
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == [2, 4, 6, 8]


def test_restart_flag_on_the_cli(cli):
    for cmd in (["train"], ["pretrain", "slm"], ["specialize", "slm", "--domain", "d", "--size", "all"]):
        code, out, _ = cli(*cmd, "--help")
        assert code == 0 and "--restart" in out, cmd


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, cli, user_files):
    import errno
    import os

    from speclm.core import atomic
    from speclm.core.errors import SpeclmError

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(SpeclmError, match=r"no space left on the device holding .*x.bin while writing 1,000 bytes"):
            atomic.write_bytes(tmp_path / "x.bin", b"0" * 1000)
        with pytest.raises(SpeclmError, match=r"no space left .*d.jsonl"):
            atomic.append_jsonl(tmp_path / "d.jsonl", {"a": 1})
        run = tmp_path / "run"
        code, _, err = cli("corpus", "import", "--run", run, *SMALL, "--generic", user_files["generic"],
                           "--domain", f"notes={user_files['notes']}")
    assert code == 2 and "no space left on the device holding" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.bin").exists()
    assert [p.name for p in tmp_path.rglob(".*.tmp")] == []  # nothing half-written left behind


def test_a_read_only_run_folder_is_one_line(tmp_path, monkeypatch, cli, user_files):
    import errno
    import os
    import tempfile

    run = tmp_path / "run"
    run.mkdir()
    if os.geteuid() != 0:  # a real read-only folder (as root, permissions do not bite)
        run.chmod(0o555)
    else:  # simulate it: creating any file in the run folder is refused
        real = tempfile.mkstemp

        def refuse(*a, dir=None, **k):
            if dir is not None and str(dir).startswith(str(run)):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        code, _, err = cli("corpus", "import", "--run", run, *SMALL, "--generic", user_files["generic"],
                           "--domain", f"notes={user_files['notes']}")
    finally:
        run.chmod(0o755)
    assert code == 2 and "cannot write" in err and "Permission denied" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_killed_clusters_stage_leaves_no_temps(tmp_path):
    """scripts/kill_resume.py found `.describe.*.tmp` folders left in clusters/ by kills: the
    next build removes them (and puts back a complete `.k2.old` cut between two renames)."""
    from speclm.clusters.stage import _remove_stale_temps

    cdir = tmp_path / "clusters"
    (cdir / ".describe.ab12.tmp").mkdir(parents=True)
    (cdir / ".describe.ab12.tmp" / ".x.png.cd34.tmp").write_bytes(b"partial")
    (cdir / ".summary.json.ef56.tmp").write_text("{")
    (cdir / ".k2.old").mkdir()
    (cdir / ".k2.old" / "meta.json").write_text("{}")
    (cdir / "embeddings").mkdir()
    (cdir / "embeddings" / ".shard0.npy.gh78.tmp").write_bytes(b"x")
    _remove_stale_temps(cdir, embeddings=True)
    assert sorted(str(p.relative_to(cdir)) for p in cdir.rglob("*")) == ["embeddings", "k2", "k2/meta.json"]
