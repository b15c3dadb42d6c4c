"""The ablation slm-is-full (issue 23, item 4: selection apart from budget): slm-is's resample
pretrained at the full budget, on a real tiny grid (a few steps), in the dry run, and in the
report built from the grid's rows."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST_CLUSTERS, FAST_GRID_TRAIN, tiny_copy

from speclm.core import atomic, manifest

# 8 pretraining steps: slm-is at a quarter gets 2, slm-is-full and slm get all 8
FAST = [
    *FAST_GRID_TRAIN,
    *FAST_CLUSTERS,
    "methods.pretrain_steps=8",
    "methods.per_domain_budget=0.25",
    "methods.sizes=['2k']",
    "methods.finetune_max_steps=[2]",
    "methods.finetune_eval_every=2",
    "methods.is_k=4",
    "methods.bootstrap=50",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clusters):
    torch.set_num_threads(1)
    return tiny_copy(tiny_clusters, tmp_path_factory.mktemp("ablation") / "run", FAST)


@pytest.fixture(scope="module")
def rows(run):
    from speclm.cli import main

    main(["grid", "--run", str(run.path), "--methods", "slm,slm-is,slm-is-full", "--domains", "kjv", "--sizes", "2k"])
    return {r["method"]: r for r in atomic.read_jsonl(run.eval_dir / "results.jsonl")}


def test_full_budget_pretrains_on_four_times_the_draws_of_slm_is(run, rows):
    assert set(rows) == {"slm", "slm-is", "slm-is-full"}
    is_, full, slm = rows["slm-is"], rows["slm-is-full"], rows["slm"]
    # the same resample (same histogram, k, seed), 1 / per_domain_budget = 4x as many draws
    imp_is, imp_full = is_["extra"]["importance"], full["extra"]["importance"]
    assert imp_full["draws"] == 4 * imp_is["draws"] > 0
    assert imp_full["generic_windows"] == imp_is["generic_windows"]
    assert imp_full["kish_ess"] == pytest.approx(imp_is["kish_ess"])  # one histogram: one plan
    assert set(imp_full) == {"kish_ess", "kish_ess_fraction", "max_passes", "mean_passes", "draws", "drawn_unique",
                             "generic_windows"}
    # its own job folders, keyed by the same histogram as slm-is's
    (pre_full,) = sorted(run.pretrain_dir("slm-is-full", "kjv").glob("h-*"))
    (pre_is,) = sorted(run.pretrain_dir("slm-is", "kjv").glob("h-*"))
    assert pre_full.name == pre_is.name
    steps_full = manifest.job_summary(pre_full)["train"]["steps"]
    steps_is = manifest.job_summary(pre_is)["train"]["steps"]
    assert (steps_full, steps_is) == (8, 2)
    assert manifest.job_summary(pre_full)["importance"]["draws"] == imp_full["draws"]
    assert (run.path / full["checkpoint"]).is_relative_to(run.path / "specialize" / "slm-is-full" / "kjv" / "2k")
    # slm's budget, paid per domain: specialization cost, nothing shared
    assert full["cost"]["generic"]["flops"] == 0 and full["shared_pretraining"] is False
    assert full["cost"]["specialization"]["flops"] > slm["cost"]["generic"]["flops"]
    assert full["cost"]["specialization"]["flops"] > 3 * is_["cost"]["specialization"]["flops"] / 2
    assert full["small_at_inference"] and full["inference_params"] == slm["inference_params"]


def test_the_dry_run_counts_the_full_budget(run, rows):
    from speclm.grid.dryrun import jobs
    from speclm.methods.inputs import shards
    from speclm.methods.base import Context

    sh = shards(Context(run=run))
    plan = {j.name: j for j in jobs(run, ["slm", "slm-is", "slm-is-full"], ["2k"], ["kjv"], {}, sh.vocab_size, sh.window)
            if j.kind == "pretrain"}
    full, is_, slm = plan["slm-is-full / kjv / 2k"], plan["slm-is / kjv / 2k"], plan["slm"]
    assert full.flops == pytest.approx(slm.flops) == pytest.approx(4 * is_.flops)
    assert "the full budget" in full.note and "0.25 of the budget" in is_.note
    # and what the grid measured: slm-is-full read the tokens the plan says
    window = sh.window
    assert rows["slm-is-full"]["extra"]["importance"]["draws"] * window == pytest.approx(full.tokens)


def test_an_ablation_runs_only_when_named_and_warns_when_it_repeats_its_method(cli, tmp_path, monkeypatch):
    from speclm.core.run import open_run
    from speclm.grid.dryrun import grid_methods

    assert "slm-is-full" not in grid_methods(open_run(tmp_path / "t", "tiny", save=False))  # tiny names none
    assert "slm-is-full" in grid_methods(open_run(tmp_path / "d", "demo", save=False))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", "--preset", "tiny", "--run", tmp_path / "r", "--dry-run",
                         "--set", "methods.grid_methods=['slm', 'slm-is', 'slm-is-full']")
    assert code == 0, err
    assert "warning: slm-is-full repeats slm-is: methods.per_domain_budget = 1" in out  # tiny's default share
    assert not (tmp_path / "r").exists()


def test_the_report_shows_the_ablation_beside_slm_is(run, rows):
    from speclm.report.page import collect, render

    facts = collect(run)
    f3 = next(f for f in facts["findings"] if f["n"] == 3)
    assert "Budget: slm-is at the paper's quarter budget (methods.per_domain_budget = 0.25" in f3["text"]
    assert "slm-is-full vs slm: NLL difference" in f3["text"] and "slm-is-full vs slm-is: NLL difference" in f3["text"]
    for f in facts["findings"]:
        if f["n"] != 3:
            assert "slm-is-full" not in f["text"]
    pr = facts["premises"]
    assert pr["is_full_max_passes"] == rows["slm-is-full"]["extra"]["importance"]["max_passes"]
    assert pr["is_max_passes"] == rows["slm-is"]["extra"]["importance"]["max_passes"]
    text = render(facts, {})
    assert "| slm-is-full (ablation) |" in text
    table = (run.eval_dir / "results.md").read_text(encoding="utf-8")
    assert "| slm-is-full |" in table and "slm-is-full: an ablation" in table
