"""The experiment grid: rows per (method, domain, size), resumable, a table with costs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from speclm.core import atomic
from speclm.core.errors import SpeclmError
from conftest import FAST_GRID_TRAIN, tiny_copy

FAST = [
    *FAST_GRID_TRAIN,
    "methods.sizes=['2k', 'all']",
    "methods.finetune_max_steps=[2, 3]",
    "methods.finetune_eval_every=2",
]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, tiny_tokens):
    torch.set_num_threads(1)
    return tiny_copy(tiny_tokens, tmp_path_factory.mktemp("grid") / "run", FAST)  # slm and slm-nopt need no clusters


def test_grid_rows_table_and_resume(grid_run):
    from speclm.grid.experiment import run_grid

    domains = ["kjv", "legal"]
    table = run_grid(grid_run, methods=["slm-nopt", "slm"], domains=domains, sizes=["2k"], log=lambda s: None)
    rows = atomic.read_jsonl(grid_run.path / "eval" / "results.jsonl")
    assert [(r["method"], r["domain"]) for r in rows] == [("slm", "kjv"), ("slm", "legal"), ("slm-nopt", "kjv"), ("slm-nopt", "legal")]
    for r in rows:
        assert r["size"] == "2k" and math.isclose(r["ppl"], math.exp(r["nll"]))
        assert r["cost"]["specialization"]["flops"] > 0 and r["eval_tokens"] > 0
    slm = [r for r in rows if r["method"] == "slm"]
    nopt = [r for r in rows if r["method"] == "slm-nopt"]
    assert all(r["cost"]["generic"]["flops"] > 0 for r in slm)  # shared pretraining
    assert all(r["cost"]["generic"]["flops"] == 0 for r in nopt)
    assert slm[0]["cost"]["generic"] == slm[1]["cost"]["generic"]  # paid once, the same for both domains

    text = table.read_text()
    macro = math.exp(sum(r["nll"] for r in slm) / 2)
    assert f"{macro:.2f}" in text and "| slm-nopt |" in text
    assert (grid_run.path / "eval" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](results.png)" in text

    # resume: nothing to redo; a lost row is recomputed alone (its jobs are finished, so it is cheap)
    run_grid(grid_run, methods=["slm", "slm-nopt"], domains=domains, sizes=["2k"], log=lambda s: None)
    assert len(atomic.read_jsonl(grid_run.path / "eval" / "results.jsonl")) == 4
    path = grid_run.path / "eval" / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # a torn last line, as after a kill
    run_grid(grid_run, methods=["slm", "slm-nopt"], domains=domains, sizes=["2k"], log=lambda s: None)
    again = atomic.read_jsonl(path)
    assert len(again) == 4 and again[-1]["nll"] == pytest.approx(rows[-1]["nll"])


def test_plots_are_redrawn_at_most_once_per_interval():
    from speclm.grid.experiment import Every

    now = [100.0]
    every = Every(60.0, clock=lambda: now[0])
    assert not every.due()  # not at once: the grid's end draws anyway
    now[0] = 159.0
    assert not every.due()
    now[0] = 160.0
    assert every.due() and not every.due()  # counted again from this drawing
    now[0] = 219.5
    assert not every.due()
    now[0] = 221.0
    assert every.due()


def test_grid_refuses_bad_names_before_work(grid_run):
    from speclm.grid.experiment import run_grid

    with pytest.raises(SpeclmError, match="unknown method"):
        run_grid(grid_run, methods=["slm", "nope"], log=lambda s: None)
    with pytest.raises(SpeclmError, match="unknown domain"):
        run_grid(grid_run, methods=["slm"], domains=["atlantis"], log=lambda s: None)
    with pytest.raises(SpeclmError, match="larger than"):
        run_grid(grid_run, methods=["slm"], domains=["kjv"], sizes=["50M"], log=lambda s: None)


def test_grid_cli(grid_run, cli):
    code, out, err = cli("grid", "--run", grid_run.path, "--methods", "slm", "--domains", "kjv", "--sizes", "2k",
                         "--name", "cli")
    assert code == 0, err
    rows = [json.loads(x) for x in (grid_run.path / "eval" / "cli.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["method"] == "slm"
    assert (grid_run.path / "eval" / "cli.md").exists()
