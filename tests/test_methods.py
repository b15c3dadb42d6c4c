"""Every method pretrains and specializes on the tiny preset (real training, a few steps),
and its output is a plain transformer checkpoint with per-stage costs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_CLUSTERS, FAST_TRAIN, tiny_copy

from speclm.core.errors import SpeclmError
from speclm.methods import inputs
from speclm.core import manifest

# A few steps of everything: each method's test runs in seconds.
FAST = [
    *FAST_TRAIN,
    "methods.sizes=['2k', '8k', 'all']",
    "methods.finetune_max_steps=[3, 4, 5]",
    "methods.finetune_eval_every=2",
    "methods.finetune_small_tokens=2000",  # 2k at lr/3, 8k at the base rate
    "methods.is_k=2",
    "methods.mix_k=2",
    "methods.lora_rank=4",
    "methods.dsir_buckets=2000",
    *FAST_CLUSTERS,
]


def build_tokens_only(run) -> None:
    from speclm.corpus.stage import build_corpus
    from speclm.tokens.stage import build_tokens

    build_corpus(run)
    build_tokens(run)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_clusters):
    """The tiny preset's corpus, tokens and clusters (k=2, 4): a copy of the suite's shared ones."""
    from speclm.clusters.stage import build_clusters

    torch.set_num_threads(1)
    run = tiny_copy(tiny_clusters, tmp_path_factory.mktemp("methods") / "run", FAST)
    build_clusters(run, progress=False)  # the shared clusters (FAST_CLUSTERS): nothing to do
    return run


@pytest.fixture
def ctx(tiny_run):
    from speclm.methods.base import Context

    return Context(run=tiny_run, log=lambda s: None)


def _domain(ctx) -> str:

    return inputs.domains(ctx)[0]


def _shape(ckpt: Path) -> dict:
    return json.loads((Path(ckpt) / "model.json").read_text())["shape"]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(ckpt) / "model.safetensors"))


def _cost(ckpt: Path) -> dict:
    from speclm.train.cost import read_cost

    return read_cost(ckpt)


def _assert_plain(ckpt: Path, ctx, which: str = "small") -> None:
    from speclm.train.checkpoint import load_transformer

    assert _shape(ckpt) == inputs.shape(ctx, which).to_dict()
    model = load_transformer(ckpt)  # a plain transformer loads strictly
    x = torch.randint(0, model.shape.vocab_size, (1, 8))
    assert torch.isfinite(model(x)[0]).all()


def test_slm_pretrains_once_and_specializes(ctx):
    from speclm.methods.base import get

    m, d = get("slm"), _domain(ctx)
    pre = m.pretrain(ctx)
    out = m.specialize(ctx, d, "2k")
    _assert_plain(out, ctx)
    before, after = _weights(pre), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # fine-tuning changed the model
    cost = _cost(out)
    assert cost["pretrain"]["tokens"] > 0 and cost["specialize"]["tokens"] > 0
    assert cost["specialize"]["steps"] <= 3  # the 2k cap
    done = manifest.job_summary(out.parent)
    assert done["plan"]["lr"] == pytest.approx(ctx.config.train.lr / 3)  # smallest size: lr / 3
    # a second call reuses both jobs: same result, nothing retrained
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert m.specialize(ctx, d, "2k") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_larger_size_uses_base_rate_and_larger_cap(ctx):
    from speclm.methods.base import get

    out = get("slm").specialize(ctx, _domain(ctx), "8k")
    done = manifest.job_summary(out.parent)
    assert done["plan"]["lr"] == pytest.approx(ctx.config.train.lr)
    assert done["plan"]["max_steps"] == 4 and done["plan"]["train_tokens"] <= 8000


def test_slm_nopt_has_no_pretraining_cost(ctx):
    from speclm.methods.base import get

    out = get("slm-nopt").specialize(ctx, _domain(ctx), "2k")
    _assert_plain(out, ctx)
    cost = _cost(out)
    assert "pretrain" not in cost and cost["specialize"]["tokens"] > 0


def test_llm_and_lora_are_large_and_lora_merges(ctx):
    from speclm.methods.base import get

    d = _domain(ctx)
    pre = get("llm").pretrain(ctx)
    full = get("llm").specialize(ctx, d, "2k")
    lora = get("llm-lora").specialize(ctx, d, "2k")
    _assert_plain(full, ctx, "large")
    _assert_plain(lora, ctx, "large")  # merged: no adapter tensors left
    base, merged = _weights(pre), _weights(lora)
    assert set(base) == set(merged)
    assert torch.equal(base["embed.weight"], merged["embed.weight"])  # LoRA leaves embeddings alone
    assert not torch.equal(base["blocks.0.attn.qkv.weight"], merged["blocks.0.attn.qkv.weight"])
    assert get("llm-lora").pretrain(ctx) == pre  # reuses the LLM's pretraining


def test_distillation_loss_mixes_targets_and_teacher():
    from speclm.methods.slm_d import distillation_loss
    from speclm.model.transformer import Transformer, named_shape

    torch.manual_seed(0)
    student = Transformer(named_shape("tiny", 50, max_seq_len=8))
    teacher = Transformer(named_shape("tiny", 50, max_seq_len=8))
    x, y = torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))
    ce = student(x, y)[1]
    assert torch.allclose(distillation_loss(teacher, 0.0, 1.0)(student, (x, y)), ce)
    assert distillation_loss(student, 1.0, 2.0)(student, (x, y)).abs() < 1e-5  # KL to itself
    assert distillation_loss(teacher, 1.0, 1.0)(student, (x, y)) > 0


def test_slm_d_counts_teacher_and_student(ctx):
    from speclm.methods.base import get

    d = _domain(ctx)
    out = get("slm-d").specialize(ctx, d, "2k")
    _assert_plain(out, ctx)
    cost = _cost(out)
    slm_pre = _cost(get("slm").pretrain(ctx))["pretrain"]
    teacher = _cost(get("llm").specialize(ctx, d, "2k"))
    assert cost["pretrain"]["flops"] == pytest.approx(slm_pre["flops"] + teacher["pretrain"]["flops"])
    # specialization: the teacher's fine-tune + the student's steps (with teacher forwards)
    assert cost["specialize"]["flops"] > teacher["specialize"]["flops"]


def test_slm_dsir_resamples_per_domain(ctx):
    from speclm.methods.base import get

    d = _domain(ctx)
    out = get("slm-dsir").specialize(ctx, d, "2k")
    _assert_plain(out, ctx)
    pre = get("slm-dsir").pretrain(ctx, d, "2k")  # the job of the 2k set's n-gram histogram
    assert pre.parent.parent == ctx.pretrain_dir("slm-dsir", d) and pre.parent.name.startswith("h-")
    report = manifest.job_summary(pre.parent)["dsir"]
    t = ctx.config.train
    assert report["draws"] == t.max_steps * t.batch_size
    assert 0 < report["kish_ess"] <= report["generic_windows"]
    assert manifest.job_summary(out.parent)["pretraining"]["dsir"]["draws"] == report["draws"]


def test_slm_is_follows_the_domain_histogram(ctx):
    from speclm.methods.base import get

    d = _domain(ctx)
    out = get("slm-is").specialize(ctx, d, "2k")
    _assert_plain(out, ctx)
    pre = get("slm-is").pretrain(ctx, d, "2k")
    rep = manifest.job_summary(pre.parent)["importance"]
    hist = _slice_histogram(ctx, d, "2k", 2)  # the specialization set's, not the whole split's
    assert np.allclose(rep["domain_histogram"], hist)
    spec_set = manifest.job_summary(out.parent)["specialization_set"]
    whole = np.asarray(inputs.clusters(ctx).histogram(2, d, "train"))
    assert spec_set["tv_to_split"] == pytest.approx(0.5 * np.abs(hist - whole).sum())
    assert rep["repeat_factor"] >= 1 and 0 < rep["kish_ess_fraction"] <= 1
    # passes over the drawn windows, from the drawn stream itself
    idx, _ = get("slm-is").pretrain_indices(ctx, d, get("slm-is").pretrain_target(ctx, d, "2k"))
    counts = np.bincount(idx)
    assert rep["max_passes"] == counts.max() >= 1 and rep["mean_passes"] == pytest.approx(len(idx) / (counts > 0).sum())
    # what a grid row carries under extra.importance (recomputed, so older pretrainings have it too)
    row = get("slm-is").row_extra(ctx, d, "2k")["importance"]
    assert row == {k: rep[k] for k in ("kish_ess", "kish_ess_fraction", "max_passes", "mean_passes", "draws",
                                       "drawn_unique", "generic_windows")}
    # its pretraining is paid per domain: the grid counts it as specialization cost
    from speclm.grid.experiment import split_costs

    split = split_costs(_cost(out), get("slm-is").shared_pretraining)
    assert split["generic"]["flops"] == 0
    assert split["specialization"]["flops"] > _cost(out)["specialize"]["flops"] > 0


def _slice_histogram(ctx, domain: str, size: str, k: int) -> np.ndarray:
    from speclm.clusters.store import histogram_of
    from speclm.methods.sizes import slice_indices

    n = len(inputs.shards(ctx).windows(domain, "train"))
    idx = slice_indices(size, n, inputs.shards(ctx).window, seed=ctx.config.seed, domain=domain)
    return histogram_of(np.asarray(inputs.clusters(ctx).assign(k, domain, "train"))[idx], k)


@pytest.mark.parametrize("rule", ["most_frequent", "best_pretrained", "finetune_all"])
def test_slm_mix_rules(ctx, rule, tiny_run):
    import dataclasses

    from speclm.methods.base import Context, get

    cfg = dataclasses.replace(tiny_run.config, methods=dataclasses.replace(tiny_run.config.methods, expert_rule=rule))
    c = Context(run=dataclasses.replace(tiny_run, config=cfg), log=lambda s: None)
    m, d = get("slm-mix"), _domain(c)
    mix = m.pretrain(c)
    info = manifest.job_summary(mix)
    expert_cost = [_cost(mix / f"expert-{i:03d}")["pretrain"]["flops"] for i in info["experts"]]
    out = m.specialize(c, d, "2k")
    _assert_plain(out, c)
    cost = _cost(out)
    assert cost["pretrain"]["flops"] == pytest.approx(sum(expert_cost))  # every expert counts
    chosen = manifest.job_summary(out.parent)["expert"]
    assert chosen["rule"] == rule
    if rule == "most_frequent":
        hist = _slice_histogram(c, d, "2k", 2)
        assert chosen["expert"] == int(np.argmax(hist))
    if rule == "finetune_all":
        assert chosen["finetunes"] == len(info["experts"])
        one = _cost(out.parent / "experts" / f"e{chosen['expert']:03d}")["specialize"]["flops"]
        assert cost["specialize"]["flops"] == pytest.approx(one * len(info["experts"]), rel=0.5)


# -- bad input ------------------------------------------------------------------------------


def test_unknown_method_lists_known():
    from speclm.methods.base import get

    with pytest.raises(SpeclmError, match="slm-is.*|known: .*slm"):
        get("slm-magic")


def test_bad_domain_size_and_rule(ctx):
    from speclm.methods.base import get

    with pytest.raises(SpeclmError, match="unknown domain 'nope'"):
        inputs.check_domain(ctx, get("slm"), "nope")
    with pytest.raises(SpeclmError, match="larger than"):
        inputs.check_size(ctx, _domain(ctx), "5M")
    with pytest.raises(SpeclmError, match="bad size"):
        inputs.check_size(ctx, _domain(ctx), "lots")
    import dataclasses

    from speclm.methods.base import Context

    cfg = dataclasses.replace(ctx.config, methods=dataclasses.replace(ctx.config.methods, expert_rule="coin_flip"))
    with pytest.raises(SpeclmError, match="unknown expert rule 'coin_flip'.*most_frequent"):
        get("slm-mix").check(Context(run=dataclasses.replace(ctx.run, config=cfg)))


@pytest.mark.parametrize("method, field, value", [
    ("slm-dsir", "dsir_ngrams", 0), ("slm-dsir", "dsir_buckets", -1),
    ("llm-lora", "lora_rank", 0), ("llm-lora", "lora_steps_factor", 0.0), ("llm-lora", "lora_lr_factor", -1.0),
])
def test_non_positive_method_settings_are_refused(ctx, method, field, value):
    import dataclasses

    from speclm.methods.base import Context, get

    get(method).check(ctx)  # the test config passes
    cfg = dataclasses.replace(ctx.config, methods=dataclasses.replace(ctx.config.methods, **{field: value}))
    with pytest.raises(SpeclmError, match=rf"^methods\.{field} must be positive, got {value}$"):
        get(method).check(Context(run=dataclasses.replace(ctx.run, config=cfg)))


def test_cli_errors_are_one_line(tiny_run, cli):
    d = "legal"
    code, _, err = cli("specialize", "slm-zzz", "--domain", d, "--size", "2k", "--run", tiny_run.path)
    assert code == 2 and "unknown method 'slm-zzz'" in err and "slm-nopt" in err
    code, _, err = cli("specialize", "slm", "--domain", d, "--size", "9M", "--run", tiny_run.path)
    assert code == 2 and "larger than the legal train split" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("specialize", "slm-mix", "--domain", d, "--size", "2k", "--run", tiny_run.path,
                       "--set", "methods.expert_rule=oracle")
    assert code == 2 and "unknown expert rule 'oracle'" in err
    code, _, err = cli("specialize", "slm-is", "--domain", d, "--size", "2k", "--run", tiny_run.path,
                       "--set", "methods.is_k=7")
    assert code == 2 and "k=7" in err
    code, out, _ = cli("methods")
    assert code == 0 and "slm-is" in out and "llm-lora" in out


def test_domain_not_clustered_is_refused(tmp_path, cli):
    """A run with tokens but no clusters: cluster-based methods say what to run."""
    from speclm.core.run import open_run

    run = open_run(tmp_path / "r", "tiny", FAST)
    build_tokens_only(run)
    code, _, err = cli("pretrain", "slm-is", "--domain", "legal", "--run", run.path)
    assert code == 2 and "speclm clusters" in err


def test_slm_mix_experts_spread_over_two_torchrun_ranks(tiny_run, tmp_path):
    """Two gloo ranks train disjoint experts (no DDP between them); rank 0 closes the mixture."""
    import shutil
    import subprocess
    import sys


    run = tmp_path / "run"
    run.mkdir()
    for part in ("config.toml", "corpus", "tokens", "clusters"):
        src = tiny_run.path / part
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, run / part)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = tmp_path / "pretrain_mix.py"  # torchrun would take the CLI's --run for its own option
    script.write_text(f"from speclm.cli import main\nmain(['pretrain', 'slm-mix', '--run', {str(run)!r}])\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mix = run / "pretrain" / "slm-mix"
    info = manifest.job_summary(mix)
    ranks = {i: manifest.job_summary(mix / f"expert-{i:03d}")["rank"] for i in info["experts"]}
    assert ranks == {i: n % 2 for n, i in enumerate(info["experts"])}
    assert all(manifest.job_summary(mix / f"expert-{i:03d}")["world_size"] == 2 for i in info["experts"])
    assert (mix / "cost.json").exists()
