"""The grid as a graph of jobs: the plan, local worker processes, two grid processes on one
run folder, a killed worker, and Ray's local mode: all give the rows of one process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from speclm.core import atomic
from conftest import FAST_GRID_TRAIN, tiny_copy

FAST = [
    *FAST_GRID_TRAIN,
    "methods.sizes=['2k']",
    "methods.finetune_max_steps=[2]",
    "methods.finetune_eval_every=2",
]
GRID = {"methods": ["slm", "slm-nopt"], "domains": ["kjv", "legal"], "sizes": ["2k"]}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_tokens):
    torch.set_num_threads(1)
    return tiny_copy(tiny_tokens, tmp_path_factory.mktemp("exec") / "base", FAST).path


def fresh(base: Path, name: str) -> Path:
    """A copy of the run folder with its stages built and no method job yet."""
    out = base.parent / name
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("pretrain", "specialize", "eval", ".*.lock"))
    return out


def nlls(path: Path) -> dict:
    rows = atomic.read_jsonl(path)
    keys = [(r["method"], r["domain"], r["size"]) for r in rows]
    assert len(keys) == len(set(keys)), f"duplicate rows in {path}"
    return {k: r["nll"] for k, r in zip(keys, rows)}


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-6, (k, a[k], b[k])


def trained_once(run: Path) -> None:
    """Every job's metrics.jsonl logs each step once (a job trained twice at once would not)."""
    files = list(run.glob("pretrain/**/metrics.jsonl")) + list(run.glob("specialize/**/metrics.jsonl"))
    assert files
    for f in files:
        steps = [(r.get("step"), "valid_loss" in r) for r in atomic.read_jsonl(f)]
        assert len(steps) == len(set(steps)), f"{f}: duplicated steps"


def grid(run: Path, **kw) -> Path:
    from speclm.core.run import open_run
    from speclm.grid.experiment import run_grid

    run_grid(open_run(run, None, [], save=False), log=lambda s: None, **{**GRID, **kw})
    return run / "eval" / "results.jsonl"


def test_plan_shares_pretrainings_and_orders_reuse():
    from speclm.grid.executor import plan_graph

    todo = [(m, d, "2k") for m in ["slm", "slm-d", "slm-is", "llm-lora"] for d in ["kjv", "legal"]]
    jobs, deps = plan_graph(todo)
    pre = [j for j in jobs if j.startswith("pretrain:")]
    assert sorted(pre) == ["pretrain:llm", "pretrain:slm", "pretrain:slm-is/kjv/2k", "pretrain:slm-is/legal/2k"]
    assert list(jobs)[: len(pre)] == pre  # pretrainings come first, each once
    assert deps["row:slm-d/kjv/2k"] == ["pretrain:llm", "pretrain:slm", "specialize:llm/kjv/2k"]
    assert deps["row:llm-lora/legal/2k"] == ["pretrain:llm"]
    assert deps["row:slm-is/legal/2k"] == ["pretrain:slm-is/legal/2k"]  # per domain and set: its histogram
    jobs, deps = plan_graph([("slm", "kjv", "2k", 0), ("slm", "kjv", "2k", 1)])  # each seed pretrains
    assert deps["row:slm/kjv/2k@1"] == ["pretrain:slm@1"] and jobs["pretrain:slm@1"]["seed"] == 1
    jobs, deps = plan_graph([("llm", "kjv", "2k"), ("slm-d", "kjv", "2k"), ("slm-nopt", "kjv", "2k")])
    assert deps["row:slm-d/kjv/2k"][-1] == "row:llm/kjv/2k" and deps["row:slm-nopt/kjv/2k"] == []
    assert not any(j.startswith("specialize:") for j in jobs)


@pytest.fixture(scope="module")
def one_process_rows(base_run) -> dict:
    """The rows of the grid run in this process (workers=1): the reference every executor
    test compares with (computed once for the module)."""
    return nlls(grid(fresh(base_run, "w1"), workers=1))


def test_one_and_two_workers_same_rows(base_run, one_process_rows):
    t0 = time.perf_counter()
    two = grid(fresh(base_run, "w2"), workers=2)
    print(f"workers=2 grid: {time.perf_counter() - t0:.1f} s")
    same(one_process_rows, nlls(two))
    trained_once(two.parent.parent)


def _speclm(run: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "speclm.cli", "grid", "--run", str(run), "--methods", "slm,slm-nopt",
           "--domains", "kjv,legal", "--sizes", "2k", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_grid_processes_share_one_run(base_run, one_process_rows):
    run = fresh(base_run, "shared")
    procs = [_speclm(run), _speclm(run)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    same(one_process_rows, nlls(run / "eval" / "results.jsonl"))
    trained_once(run)


def test_killed_worker_is_retried(base_run):
    run = fresh(base_run, "killed")
    longer = ["--set", "train.max_steps=40", "--set", "train.checkpoint_every=4", "--set", "train.eval_every=20"]
    p = _speclm(run, "--workers", "2", *longer)
    lines, victim = [], None
    for line in p.stdout:
        lines.append(line)
        m = re.search(r"\[(\d+)\] pretrain slm ->", line)  # the jobs bar may share the line
        if m:
            victim = int(m.group(1))
            deadline = time.time() + 300
            while not (run / "pretrain" / "slm" / "checkpoint").exists() and time.time() < deadline:
                time.sleep(0.2)
            os.kill(victim, signal.SIGKILL)
            break
    out = "".join(lines) + p.communicate(timeout=600)[0]
    assert victim is not None and p.returncode == 0, out
    assert "its worker died; retry 1" in out
    trained_once(run)
    steps = [r["step"] for r in atomic.read_jsonl(run / "pretrain" / "slm" / "metrics.jsonl") if "valid_loss" not in r]
    assert steps[-1] == 40 and steps == sorted(steps)
    assert len(atomic.read_jsonl(run / "eval" / "results.jsonl")) == 4


def test_ray_local_two_workers_same_rows(base_run, request):
    pytest.importorskip("ray", reason="Ray is the optional `cluster` extra: pip install 'speclm[cluster]'")
    one = request.getfixturevalue("one_process_rows")
    two = grid(fresh(base_run, "r2"), workers=2, executor="ray")
    same(one, nlls(two))
    trained_once(two.parent.parent)
    assert json.loads(two.read_text().splitlines()[0])["config"]


def test_bad_executor_or_workers_is_one_line(base_run, cli):
    run = fresh(base_run, "bad")
    code, out, err = cli("grid", "--run", run, "--methods", "slm", "--domains", "kjv", "--sizes", "2k", "--executor", "slurm")
    assert code == 2 and "unknown executor 'slurm'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("grid", "--run", run, "--methods", "slm", "--domains", "kjv", "--sizes", "2k", "--set",
                         "methods.grid_workers=-1")
    assert code == 2 and "must be at least 1" in err
    assert not (run / "pretrain").exists()


def test_lora_init_does_not_depend_on_process_history():
    """A worker runs jobs in another order than one process: LoRA's random init is seeded."""
    from speclm.methods.llm_lora import add_adapters
    from speclm.model.transformer import Transformer, named_shape

    def adapters(draws: int) -> list[torch.Tensor]:
        torch.rand(draws)  # what the process ran before
        model = add_adapters(Transformer(named_shape("tiny", 64)), rank=2, alpha=4.0, seed=3)
        return [p.detach().clone() for n, p in model.named_parameters() if "lora" in n]

    a, b = adapters(1), adapters(1000)
    assert a and all(torch.equal(x, y) for x, y in zip(a, b))


def test_slm_pn_hist_shares_the_projected_networks_pretraining_job():
    from speclm.grid.executor import plan_graph

    jobs, deps = plan_graph([("slm-pn", "kjv", "2k"), ("slm-pn-hist", "kjv", "2k")])
    assert [j for j in jobs if j.startswith("pretrain:")] == ["pretrain:slm-pn"]
    assert deps["row:slm-pn-hist/kjv/2k"] == ["pretrain:slm-pn"]


def _quiet_job(job, ctx=None):
    return None


def test_one_progress_bar_over_every_job(capsys, monkeypatch):
    from speclm.grid.executor import run_graph

    monkeypatch.setenv("SPECLM_PROGRESS_EVERY", "0")  # stderr is not a terminal here: plain lines

    todo = [("slm", "kjv", "2k"), ("slm", "legal", "2k"), ("slm-nopt", "kjv", "2k")]
    run_graph(None, todo, {}, _quiet_job, lambda row: None, workers=1, engine="local", log=lambda s: None)
    err = capsys.readouterr().err
    assert "grid jobs" in err and "4/4" in err  # one shared pretraining + three rows
