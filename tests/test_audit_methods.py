"""scripts/audit_methods.py on a tiny grid of slm, slm-is, slm-mix and slm-pn (one domain, one
size, a few steps): a healthy run passes the checks that look for defects, PN's materialized
experts match the routed network, and a damaged saved expert or a non-run folder is caught."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from conftest import FAST_CLUSTERS, FAST_TRAIN, tiny_copy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "audit_methods.py"
FAST = [*FAST_TRAIN, *FAST_CLUSTERS, "methods.sizes=['2k']", "methods.finetune_max_steps=[3]",
        "methods.finetune_eval_every=2", "methods.is_k=2", "methods.mix_k=2", "methods.pn_k=2"]


@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("audit_methods", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory, tiny_clusters):
    from speclm.grid.experiment import run_grid

    run = tiny_copy(tiny_clusters, tmp_path_factory.mktemp("audit") / "run", FAST)
    run_grid(run, methods=["slm", "slm-is", "slm-mix", "slm-pn"], domains=["kjv"], sizes=["2k"], log=lambda s: None)
    return run.path


def section(report: str, number: int) -> str:
    return report.split(f"\n## {number}. ")[1].split("\n## ")[0]


def test_audit_of_a_tiny_run(audit, audited_run, tmp_path, capsys):
    out = tmp_path / "audit.md"
    assert audit.main([str(audited_run), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert out.read_text(encoding="utf-8").strip() == report.strip()
    for title in ("1. Slice histograms", "3. Routing and expert choice", "5. PN's materialization",
                  "6. The fine-tuning rate rule"):
        assert f"| {title} | PASS |" in report, section(report, int(title[0]))
    assert "FAIL" not in report

    # 5: every cluster's materialized expert has slm's parameter count and the routed logits
    slm_params = json.loads((audited_run / "pretrain/slm/final/model.json").read_text())["param_count"]
    pn = section(report, 5)
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| ([0-9.e+-]+) \|", pn, re.M)
    assert len(rows) == 2, pn
    for _, params, windows, diff in rows:
        assert int(params) == slm_params and int(windows) > 0 and float(diff) < 1e-4
    assert "saved experts (specialize/slm-pn*/.../expert) against a fresh materialization of their vector: 1," in pn

    # 3: both fine-tunes started from the expert the rule chose
    routing = re.findall(r"^\| (slm-mix|slm-pn) \| kjv \| 2k \| most_frequent \| (\d+) \|.*\| (\S+) \|$", section(report, 3), re.M)
    assert len(routing) == 2 and all(expert == started for _, expert, started in routing)

    # 1: the slm-is pretraining's windows read, replayed, against its target
    assert re.search(r"^\| slm-is \| 0 \| kjv \| 2k \|", section(report, 1), re.M)

    # a saved PN expert that is not its materialization is a FAIL of check 5
    from safetensors.torch import load_file, save_file

    weights = audited_run / "specialize/slm-pn/kjv/2k/expert/model.safetensors"
    state = load_file(str(weights))
    name = next(n for n in state if ".mlp." in n)
    state[name] = state[name] + 0.01
    save_file(state, str(weights))
    assert audit.main([str(audited_run)]) == 0
    damaged = capsys.readouterr().out
    assert "| 5. PN's materialization | FAIL |" in damaged
    assert "specialize/slm-pn/kjv/2k/expert: the saved expert is 1.00e-02 from its materialization" in damaged


def test_not_a_run_folder_exits_2_with_one_line(audit, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    for bad, why in ((tmp_path, "is not a run folder"), (tmp_path / "notes.txt", "is not a folder"),
                     (tmp_path / "missing", "is not a folder")):
        assert audit.main([str(bad)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("audit_methods: error: ") and why in err, err


def test_a_tied_output_layer_saved_once_still_matches(audit):
    """safetensors stores a tied weight once (cpu-regime ties its embeddings): the check must
    match it to the embedding, and still catch a tensor missing or changed."""
    import torch

    emb = torch.randn(8, 4)
    want = {"tok_emb.weight": emb.clone(), "lm_head.weight": emb.clone(), "blocks.0.mlp.w": torch.ones(4, 4)}
    have = {"tok_emb.weight": emb.clone(), "blocks.0.mlp.w": torch.ones(4, 4)}
    assert audit.saved_gap(want, have) == (0.0, [])
    gap, odd = audit.saved_gap(want, {**have, "blocks.0.mlp.w": torch.ones(4, 4) + 0.5})
    assert gap == pytest.approx(0.5) and odd == []
    gap, odd = audit.saved_gap({**want, "lm_head.weight": emb + 1.0}, have)  # untied and not saved: caught
    assert odd == ["lm_head.weight"]
    assert audit.saved_gap(want, {**have, "extra.weight": torch.zeros(1)})[1] == ["extra.weight (saved only)"]
