"""The paper's protocol (issue 11): fine-tunes validate at step 0 and stop early inside
epoch caps, SLM-nopt under the same rule, equal-FLOP budgets by default, a device-hours
budget in the grid, LoRA on the query and value projections."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from speclm.core.errors import SpeclmError
from conftest import FAST_GRID_TRAIN, tiny_copy
from speclm.core import manifest

FAST = [
    *FAST_GRID_TRAIN,
    "methods.sizes=['2k', 'all']",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tokens):
    torch.set_num_threads(1)
    return tiny_copy(tiny_tokens, tmp_path_factory.mktemp("protocol") / "run", FAST)  # slm and slm-nopt need no clusters


def _ctx(run, **methods):
    from speclm.methods.base import Context

    cfg = dataclasses.replace(run.config, methods=dataclasses.replace(run.config.methods, **methods))
    return Context(run=dataclasses.replace(run, config=cfg), log=lambda s: None)


def test_caps_and_validation_interval_follow_the_size(run):
    from speclm.methods.finetune import plan
    from speclm.methods.inputs import shards

    ctx = _ctx(run, finetune_max_steps=[], finetune_eval_every=0, finetune_max_epochs=3.0, finetune_batch_size=2)
    n = len(shards(ctx).windows("kjv", "train"))
    p = plan(ctx, "kjv", "all")
    assert p.train_windows == n and p.max_steps == math.ceil(3.0 * n / 2)  # 3 epochs of 2 windows a step
    assert p.eval_every == max(1, round(n / 2 / 2))  # half an epoch
    bounded = plan(_ctx(run, finetune_max_steps=[4, 5], finetune_max_epochs=3.0, finetune_batch_size=2), "kjv", "all")
    assert bounded.max_steps == 5 and bounded.eval_every == 5  # the optional step bound, validation inside it
    with pytest.raises(SpeclmError, match="epochs"):
        plan(_ctx(run, finetune_max_epochs=0.0), "kjv", "all")


def test_fine_tuning_rate_of_a_set_does_not_depend_on_the_other_sizes(run):
    from speclm.methods.finetune import plan, rate_key, small_set

    base = 1e-3
    rates = {tuple(sizes): plan(_ctx(run, sizes=sizes, finetune_lr=base, finetune_small_lr_factor=0.25), "kjv", "16k").lr
             for sizes in (["16k"], ["4k", "16k", "64k"], ["16k", "all"])}
    assert set(rates.values()) == {base * 0.25}  # 16k <= finetune_small_tokens (32k) in every grid
    wide = _ctx(run, sizes=["4k", "16k", "64k"], finetune_lr=base, finetune_small_lr_factor=0.25)
    assert not small_set(wide, "64k") and small_set(wide, "32k") and not small_set(wide, "33k")  # default 32k
    assert plan(wide, "kjv", "all").lr == base and plan(wide, "kjv", "4k").lr == base * 0.25
    # kjv's tiny train split holds about 25k tokens: a 20k set stands for the 64k above a lower threshold
    low = [_ctx(run, sizes=sizes, finetune_lr=base, finetune_small_lr_factor=0.25, finetune_small_tokens=16000)
           for sizes in (["16k", "20k"], ["20k"], ["4k", "20k", "all"])]
    assert {plan(c, "kjv", "20k").lr for c in low} == {base}  # the largest or the only size: the base rate
    assert {plan(c, "kjv", "16k").lr for c in low} == {base * 0.25}
    none = _ctx(run, sizes=["4k"], finetune_lr=base, finetune_small_lr_factor=0.25, finetune_small_tokens=0)
    assert plan(none, "kjv", "4k").lr == base
    # job keys: unchanged where the old rule (smallest configured size) gave the same rate
    assert rate_key(_ctx(run, sizes=["16k"]), "16k") == {}  # the demo's 16k: lr/3 before and after
    assert rate_key(wide, "4k") == {} and rate_key(wide, "64k") == {}
    assert rate_key(wide, "16k") == {"finetune_small_rate": True}  # cpu-full's 16k: was the full rate


def test_the_rate_threshold_must_be_a_token_count(tmp_path, capsys):
    from speclm.core.run import open_run

    with pytest.raises(SpeclmError, match="finetune_small_tokens"):
        open_run(tmp_path / "bad", "tiny", ["methods.finetune_small_tokens=-1"])


def test_nopt_has_the_fine_tuning_schedule_not_the_pretraining_budget(run):
    from speclm.methods.base import get
    from speclm.methods.finetune import plan

    ctx = _ctx(run, finetune_max_steps=[], finetune_eval_every=0, finetune_max_epochs=2.0, nopt_max_epochs=5.0,
               finetune_batch_size=2, nopt_lr=3e-3, pretrain_steps=7)
    cfg = get("slm-nopt").train_config(ctx, "kjv", "2k")
    p = plan(ctx, "kjv", "2k", max_epochs=5.0)
    assert (cfg.max_steps, cfg.eval_every, cfg.patience) == (p.max_steps, p.eval_every, ctx.config.methods.finetune_patience)
    assert cfg.max_steps == math.ceil(5.0 * p.train_windows / 2) != 7  # epochs of the size, not pretraining steps
    assert cfg.lr == 3e-3 and cfg.max_flops == 0 and cfg.warmup_steps <= cfg.max_steps // 10


def test_a_fine_tune_that_only_hurts_keeps_the_pretrained_weights(run, tmp_path):
    from safetensors.torch import load_file

    from speclm.methods.base import get
    from speclm.methods.finetune import finetune

    ctx = _ctx(run, finetune_max_steps=[4], finetune_eval_every=1, finetune_patience=2, finetune_lr=0.5,
               finetune_small_lr_factor=1.0)
    pre = get("slm").pretrain(ctx)
    res = finetune(ctx, pre, "kjv", "2k", tmp_path / "ft", progress=False)
    assert res.best_step == 0 and res.stop == "pretrained" and res.to_json()["stop"] == "pretrained"
    assert res.steps == 2 and res.epochs > 0  # patience 2 after the step-0 validation
    a, b = load_file(str(pre / "model.safetensors")), load_file(str(res.final / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_equal_flops_is_the_default_budget():
    from speclm.core.sections import MethodsConfig

    assert MethodsConfig().budget == "flops"


def test_grid_under_a_device_hours_budget_and_rows_say_how_fine_tunes_stopped(run):
    from speclm.core import atomic
    from speclm.grid.experiment import run_grid

    cfg = dataclasses.replace(
        run.config,
        train=dataclasses.replace(run.config.train, max_device_hours=1e-9),  # spent by the first step
        methods=dataclasses.replace(run.config.methods, budget="device_hours", pretrain_steps=50,
                                    finetune_max_steps=[2]),
    )
    r = dataclasses.replace(run, config=cfg)
    run_grid(r, methods=["slm"], domains=["kjv"], sizes=["2k"], name="hours", log=lambda s: None)
    (row,) = atomic.read_jsonl(r.eval_dir / "hours.jsonl")
    pre = manifest.job_summary(r.path / "pretrain" / "slm")["train"]
    assert (pre["stop_reason"], pre["steps"]) == ("device_hours", 1)
    assert pre["seconds_per_token"] > 0 and pre["flops_per_token"] > 0
    assert row["stop"] in ("early", "cap", "pretrained") and row["stop"] == row["extra"]["stop"]
    assert row["best_step"] == row["extra"]["best_step"] and row["epochs"] > 0
    import shutil

    shutil.rmtree(r.path / "pretrain" / "slm")
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_device_hours=0.0))
    with pytest.raises(SpeclmError, match="max_device_hours"):
        run_grid(dataclasses.replace(run, config=bad), methods=["slm"], domains=["kjv"], sizes=["2k"], name="bad",
                 log=lambda s: None)
    assert not (r.eval_dir / "bad.jsonl").exists() and not (r.path / "pretrain" / "slm" / "manifest.json").exists()


def test_seeds_go_to_the_methods_that_need_them(run):
    from speclm.core import atomic
    from speclm.grid.experiment import run_grid

    cfg = dataclasses.replace(run.config, methods=dataclasses.replace(
        run.config.methods, seeds=2, seed_methods=["slm-nopt"], finetune_max_steps=[2]))
    r = dataclasses.replace(run, config=cfg)
    run_grid(r, methods=["slm", "slm-nopt"], domains=["kjv"], sizes=["2k"], name="seeded", log=lambda s: None)
    got = sorted((row["method"], row["seed"]) for row in atomic.read_jsonl(r.eval_dir / "seeded.jsonl"))
    assert got == [("slm", 0), ("slm-nopt", 0), ("slm-nopt", 1)]  # slm is a reference here: one seed
    bad = dataclasses.replace(cfg, methods=dataclasses.replace(cfg.methods, seed_methods=["slm-nope"]))
    with pytest.raises(SpeclmError, match="seed_methods"):
        run_grid(dataclasses.replace(run, config=bad), methods=["slm"], domains=["kjv"], sizes=["2k"], name="bad2",
                 log=lambda s: None)


def test_per_domain_pretraining_gets_its_share_of_the_budget(run):
    from speclm.methods import pretraining
    from speclm.methods.base import get

    full = _ctx(run, per_domain_budget=1.0, pretrain_steps=40)  # well above the one-step floor
    quarter = _ctx(run, per_domain_budget=0.25, pretrain_steps=40)
    is_, slm = get("slm-is"), get("slm")
    assert is_.budget_share(quarter) == 0.25 and slm.budget_share(quarter) == 1.0  # shared pretraining: the whole
    a = pretraining.pretrain_config(full, is_.budget_share(full)).max_flops
    b = pretraining.pretrain_config(quarter, is_.budget_share(quarter)).max_flops
    assert b == pytest.approx(a / 4)
    from speclm.core.config import load

    with pytest.raises(SpeclmError, match="per_domain_budget"):
        load("tiny", ["methods.per_domain_budget=1.5"])


def test_the_grid_runs_the_configured_methods(run):
    from speclm.core import atomic
    from speclm.grid.experiment import run_grid

    cfg = dataclasses.replace(run.config, methods=dataclasses.replace(
        run.config.methods, grid_methods=["slm-nopt"], finetune_max_steps=[2]))
    r = dataclasses.replace(run, config=cfg)
    run_grid(r, domains=["kjv"], sizes=["2k"], name="configured", log=lambda s: None)
    assert {row["method"] for row in atomic.read_jsonl(r.eval_dir / "configured.jsonl")} == {"slm-nopt"}
