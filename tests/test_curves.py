"""Operating curves over pretraining cost (issue 14 item 3): snapshots during pretraining,
specializations from a snapshot, and eval/curves.jsonl with the results rows' schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import FAST_CLUSTERS, FAST_GRID_TRAIN, KillAt, Killed, tiny_copy
from safetensors.torch import load_file

from speclm.core import atomic
from speclm.core.errors import SpeclmError

torch.set_num_threads(1)


def _weights(folder) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _equal(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- the config ----------------------------------------------------------------------------


@pytest.mark.parametrize("sets,match", [
    (["methods.curve_fractions=[1.0]", "methods.curve_methods=['slm']"], "in \\(0, 1\\)"),
    (["methods.curve_fractions=[0.0]", "methods.curve_methods=['slm']"], "in \\(0, 1\\)"),
    (["methods.curve_fractions=[0.5, 0.25]", "methods.curve_methods=['slm']"], "sorted"),
    (["methods.curve_fractions=[0.5, 0.5]", "methods.curve_methods=['slm']"], "sorted and without repeats"),
    (["methods.curve_fractions=[0.5]", "methods.curve_methods=['slm-zzz']"], "unknown method"),
    (["methods.curve_fractions=[0.5]", "methods.curve_methods=['slm-is']"], "slm-is: its pretraining is per domain"),
    (["methods.curve_fractions=[0.5]", "methods.curve_methods=['slm-nopt']"], "no pretraining"),
    (["methods.curve_fractions=[0.5]", "methods.curve_methods=['slm', 'slm']"], "twice"),
    (["methods.curve_fractions=[0.5]"], "set both or neither"),
    (["methods.curve_methods=['slm']"], "set both or neither"),
])
def test_bad_curve_settings_are_refused_in_one_line(sets, match):
    from speclm.core.config import load

    with pytest.raises(SpeclmError, match=match) as e:
        load("tiny", sets)
    assert "\n" not in str(e.value)


def test_cli_refuses_bad_curve_settings_and_writes_nothing(tmp_path, cli):
    run = tmp_path / "run"
    code, _, err = cli("grid", "--run", run, "--preset", "tiny", "--set", "methods.curve_fractions=[0.5]",
                       "--set", "methods.curve_methods=['slm-dsir']")
    assert code == 2 and "slm-dsir" in err and "per domain" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_curve_method_lists_cover_every_registered_method():
    from speclm.core.sections import CURVE_METHODS, NO_CURVE
    from speclm.methods import base

    assert sorted(CURVE_METHODS) + sorted(NO_CURVE) and set(CURVE_METHODS) | set(NO_CURVE) == set(base.known())
    assert not set(CURVE_METHODS) & set(NO_CURVE)


# -- the training loop ---------------------------------------------------------------------

V, T = 61, 16




def _setup(seed=0):
    from speclm.model.transformer import Transformer, named_shape
    from speclm.train.data import ArrayWindows, WindowSampler

    tokens = np.random.default_rng(1).integers(0, V, 3000)
    torch.manual_seed(seed)
    return Transformer(named_shape("tiny", V, max_seq_len=T)), WindowSampler(ArrayWindows(tokens, T), batch_size=2, seed=3)


def test_snapshots_at_their_steps_and_exact_after_a_resume(tmp_path):
    from speclm.core.sections import TrainConfig
    from speclm.train.checkpoint import read_meta
    from speclm.train.loop import train
    from speclm.train.snapshots import Snapshots, snapshot_dir

    cfg = TrainConfig(lr=3e-3, warmup_steps=1, batch_size=2, max_steps=8, eval_every=0, checkpoint_every=4, log_every=0)
    snaps = Snapshots((0.25, 0.75))  # steps 2 and 6
    model, sampler = _setup()
    train(model, sampler, cfg, tmp_path / "a", progress=False, snapshots=snaps, meta={"method": "x"})
    a = {f: snapshot_dir(tmp_path / "a", f) for f in snaps.fractions}
    for f, step in ((0.25, 2), (0.75, 6)):
        meta = read_meta(a[f])
        assert (meta["step"], meta["pretrain_fraction"], meta["max_steps"], meta["tokens"]) == (step, f, 8, step * 2 * T)
        assert meta["snapshot"] is True and meta["method"] == "x"
        cost = json.loads((a[f] / "cost.json").read_text())["pretrain"]
        assert cost["steps"] == step and cost["tokens"] == step * 2 * T
        assert not _equal(a[f], tmp_path / "a" / "final")
    assert not _equal(a[0.25], a[0.75])

    # killed during step 6 (after the step-2 snapshot and the step-4 checkpoint), then resumed
    model, sampler = _setup()
    with pytest.raises(Killed):
        train(model, KillAt(sampler, 5), cfg, tmp_path / "b", progress=False, snapshots=snaps, meta={"method": "x"})
    b = {f: snapshot_dir(tmp_path / "b", f) for f in snaps.fractions}
    assert b[0.25].is_dir() and not b[0.75].exists()
    kept = (b[0.25] / "model.safetensors").stat().st_mtime_ns
    model, sampler = _setup(seed=7)  # a fresh process
    train(model, sampler, cfg, tmp_path / "b", progress=False, snapshots=snaps, meta={"method": "x"})
    assert (b[0.25] / "model.safetensors").stat().st_mtime_ns == kept  # kept, not rewritten
    assert all(_equal(a[f], b[f]) for f in snaps.fractions)
    assert _equal(tmp_path / "a" / "final", tmp_path / "b" / "final")


def test_snapshots_need_a_step_count():
    from speclm.train.snapshots import Snapshots, snapshot_step

    assert [snapshot_step(f, 4) for f in (0.1, 0.5, 0.625, 0.99)] == [1, 2, 3, 4]
    with pytest.raises(SpeclmError, match="step count"):
        Snapshots((0.5,)).due(0)


# -- the grid ------------------------------------------------------------------------------

CURVES = ["methods.curve_fractions=[0.5]", "methods.curve_methods=['slm', 'slm-pn', 'slm-mix']"]
FAST = [
    *FAST_GRID_TRAIN, "train.max_steps=4", *FAST_CLUSTERS,
    "methods.sizes=['2k']", "methods.finetune_max_steps=[2]", "methods.finetune_eval_every=2",
    "methods.pn_k=2", "methods.pn_h=2", "methods.pn_m=2", "methods.mix_k=2", "methods.eval_max_windows=8",
    "methods.bootstrap=20",
    "train.logger='tensorboard'",  # live curves: every training job below writes its events
]


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory, tiny_clusters):
    from speclm.clusters.stage import build_clusters

    run = tiny_copy(tiny_clusters, tmp_path_factory.mktemp("curves") / "run", [*FAST, *CURVES])
    build_clusters(run, progress=False)  # the shared clusters (FAST_CLUSTERS): nothing to do
    return run


def test_pretraining_keys_change_only_for_curve_methods(curve_run):
    import dataclasses

    from speclm.methods.base import Context, get

    def keys(**m):
        cfg = dataclasses.replace(curve_run.config, methods=dataclasses.replace(curve_run.config.methods, **m))
        ctx = Context(run=dataclasses.replace(curve_run, config=cfg), log=lambda s: None)
        return get("slm").pretrain_key(ctx, None), get("llm-lora").pretrain_key(ctx, None), get("slm-pn").pretrain_key(ctx)

    none = keys(curve_fractions=[], curve_methods=[])
    pn_only = keys(curve_methods=["slm-pn-hist"])
    assert "snapshots" not in none[0] and none[:2] == pn_only[:2]  # slm and llm keep their keys
    assert pn_only[2] == {**none[2], "snapshots": [0.5]}  # slm-pn-hist reads slm-pn's pretraining
    lora = keys(curve_methods=["llm-lora"])
    assert lora[0] == none[0] and lora[1] == {**none[1], "snapshots": [0.5]}
    assert keys(curve_fractions=[0.25, 0.5], curve_methods=["slm"])[0]["snapshots"] == [0.25, 0.5]


def test_curve_grid_rows_costs_and_resume(curve_run):
    from speclm.core.run import fraction_label
    from speclm.grid.dryrun import dry_run
    from speclm.grid.experiment import run_grid
    from speclm.train.cost import read_cost

    lines = []
    dry_run(curve_run, echo=lines.append, methods=["slm", "slm-pn", "slm-mix"])
    assert sum("curve 0.5" in x and x.startswith("specialize") for x in lines) == 3 * 4  # methods x tiny's domains
    assert any(x.startswith("pretrain") and "snapshots at 0.5" in x for x in lines)

    grid = dict(methods=["slm", "slm-pn", "slm-mix"], domains=["kjv"], sizes=["2k"], log=lambda s: None)
    run_grid(curve_run, **grid)
    ev = curve_run.path / "eval"
    results = atomic.read_jsonl(ev / "results.jsonl")
    assert len(results) == 3 and all("pretrain_fraction" not in r for r in results)
    rows = {(r["method"], r["pretrain_fraction"]): r for r in atomic.read_jsonl(ev / "curves.jsonl")}
    assert sorted(rows) == [(m, f) for m in ("slm", "slm-mix", "slm-pn") for f in (0.5, 1.0)]
    for r in results:
        whole, half = rows[(r["method"], 1.0)], rows[(r["method"], 0.5)]
        steps = 2 if r["method"] == "slm-mix" else 4  # each of the 2 experts gets half the budget
        assert whole == {**r, "pretrain_fraction": 1.0, "pretrain_step": steps}  # the results row, as the 1.0 point
        assert set(r) <= set(half) and half["pretrain_step"] == steps // 2 and half["seed"] == 0
        assert half["config"] == r["config"] and half["stop"] in ("early", "cap", "pretrained")
        g, g1 = half["cost"]["generic"], whole["cost"]["generic"]
        assert g["flops"] == g1["flops"] / 2 and g["tokens"] == g1["tokens"] // 2
        assert g["device_hours"] == pytest.approx(g1["device_hours"] / 2) and g["wall_seconds"] == pytest.approx(g1["wall_seconds"] / 2)
        assert half["cost"]["specialization"]["flops"] > 0
        carried = read_cost(curve_run.path / half["checkpoint"])["pretrain"]  # the snapshot's measured cost
        assert carried["flops"] == pytest.approx(g["flops"]) and carried["tokens"] == g["tokens"]
        # measured on the snapshot, not on the final checkpoint
        assert half["generic_valid_nll"] != whole["generic_valid_nll"] and half["pretrained_nll"] != whole["pretrained_nll"]
        assert math.isclose(half["generic_valid_ppl"], math.exp(half["generic_valid_nll"]))
    snap = curve_run.path / "pretrain" / "slm" / "snapshots" / fraction_label(0.5)
    assert rows[("slm", 0.5)]["pretrained_checkpoint"] == str(snap.relative_to(curve_run.path))
    assert not _equal(snap, curve_run.path / "pretrain" / "slm" / "final")
    assert (curve_run.path / "pretrain" / "slm-pn" / "snapshots" / fraction_label(0.5) / "model.json").is_file()
    point = curve_run.path / "curves" / fraction_label(0.5)
    assert sorted(p.name for p in (point / "specialize").iterdir()) == ["slm", "slm-mix", "slm-pn"]
    assert (curve_run.path / "pretrain" / "slm-mix" / "expert-000" / "snapshots" / fraction_label(0.5)).is_dir()
    assert (point / "specialize" / "slm-pn" / "kjv" / "2k" / "expert" / "model.json").is_file()
    assert not (point / "pretrain").exists()  # the snapshot is read from the shared pretraining folder
    # train.logger = "tensorboard": every training job (pretrainings, each slm-mix expert, the
    # fine-tunes, curve points included) has TensorBoard events beside its metrics.jsonl
    jobs = [p.parent for p in curve_run.path.rglob("metrics.jsonl")]
    assert any("expert-001" in str(j) for j in jobs) and any("specialize" in str(j) for j in jobs)
    assert all(list((j / "tensorboard").glob("events.out.tfevents.*")) for j in jobs), jobs

    # a rerun adds nothing; a 1.0 point lost to a kill (after its results row) comes back alone
    text = (ev / "curves.jsonl").read_text()
    run_grid(curve_run, **grid)
    assert (ev / "curves.jsonl").read_text() == text
    kept = [x for x in text.splitlines() if not ('"method": "slm"' in x and '"pretrain_fraction": 1.0' in x)]
    (ev / "curves.jsonl").write_text("\n".join(kept) + "\n")
    run_grid(curve_run, **grid)
    again = atomic.read_jsonl(ev / "curves.jsonl")
    assert len(again) == 6 and again[-1] == rows[("slm", 1.0)]
    assert len(atomic.read_jsonl(ev / "results.jsonl")) == 3


def _routed_by_hand(run, method: str, f: float) -> float:
    """The routed generic model's NLL, computed apart from the grid: each cluster's generic
    valid windows through that cluster's expert (SLM-mix: the expert's own checkpoint;
    SLM-pn: the expert materialized into a plain transformer), summed NLLs pooled."""
    from speclm.core.run import fraction_label
    from speclm.grid.evaluation import eval_windows
    from speclm.methods import inputs
    from speclm.methods.base import Context
    from speclm.methods.slm_mix import expert_dir
    from speclm.train.checkpoint import load_projected, load_transformer
    from speclm.train.data import window_length
    from speclm.train.validate import window_nll

    w, idx = eval_windows(run, "generic", "valid")
    assign = np.asarray(inputs.clusters(Context(run=run)).assign(2, "generic", "valid"))[idx]
    assert sorted(set(assign.tolist())) == [0, 1]  # both experts have windows to route

    def at(folder):
        return folder / ("final" if f == 1.0 else f"snapshots/{fraction_label(f)}")

    total = 0.0
    for c in (0, 1):
        if method == "slm-mix":
            model = load_transformer(at(expert_dir(run.path / "pretrain" / "slm-mix", c)))
        else:
            pn = load_projected(at(run.path / "pretrain" / "slm-pn"))
            model = pn.materialize(pn.expert_vector(c))
        total += window_nll(model, w, idx[assign == c], batch_size=3).sum()
    return total / (len(idx) * window_length(w))


def test_routed_generic_perplexity_of_mixture_and_projected_network(curve_run):
    """SLM-mix and SLM-pn rows (and curve points) carry the routed generic model's NLL, not
    the start checkpoint's single expert on every window (issue 19 item 4b)."""
    from speclm.grid.experiment import run_grid

    run_grid(curve_run, methods=["slm", "slm-pn", "slm-mix"], domains=["kjv"], sizes=["2k"], log=lambda s: None)
    ev = curve_run.path / "eval"
    rows = {(r["method"], r["pretrain_fraction"]): r for r in atomic.read_jsonl(ev / "curves.jsonl")}
    for (m, f), r in rows.items():
        assert r["generic_valid_nll_se"] > 0  # every row: an interval on the generic validation
        if m == "slm":
            assert "generic_valid_routed" not in r and "generic_valid_nll_expert" not in r
            continue
        assert r["generic_valid_routed"] is True
        assert r["generic_valid_nll"] == pytest.approx(_routed_by_hand(curve_run, m, f), rel=1e-5)
        assert abs(r["generic_valid_nll"] - r["generic_valid_nll_expert"]) > 1e-4  # one expert is another model
        assert math.isclose(r["generic_valid_ppl"], math.exp(r["generic_valid_nll"]))
    # cached per pretraining checkpoint (or snapshot): one file per routed model, beside the start checkpoints'
    cached = [json.loads(p.read_text()) for p in (ev / "pretrained").glob("*.json")]
    assert sorted((len(c["routed"]), c["k"]) for c in cached if "routed" in c) == [(1, 2), (1, 2), (2, 2), (2, 2)]


def test_report_and_plan_read_the_grid_curve_rows(curve_run):
    """End to end: the rows the grid writes are the ones the report's curve section and the
    plan read (Figures 3-4 drawn, Table 8 at the slm's own snapshot costs equal to its rows)."""
    from speclm.grid.experiment import run_grid
    from speclm.report.plan import load_rows
    from speclm.report.page import write_report

    run_grid(curve_run, methods=["slm", "slm-pn"], domains=["kjv"], sizes=["2k"], log=lambda s: None)
    md = write_report(curve_run).read_text()
    ev = curve_run.path / "eval"
    assert "Operating curves over pretraining cost" in md
    assert (ev / "report-fig3.png").is_file() and (ev / "report-fig4.png").is_file()
    facts = json.loads((ev / "report.json").read_text())["curves"]
    on_disk = atomic.read_jsonl(ev / "curves.jsonl")  # the module's run may hold slm-mix's rows too
    assert facts["rows"] == len(on_disk) >= 4 and {"slm", "slm-pn"} <= set(facts["points"])
    rows = {r["pretrain_fraction"]: r for r in on_disk if r["method"] == "slm"}
    for t in facts["table8"]["rows"]:
        if t["method"] == "slm":  # at the slm's own snapshot costs Table 8 reads its rows exactly
            f = t["flops"] / rows[1.0]["cost"]["generic"]["flops"]
            assert t["ppl"]["2k"] == pytest.approx(rows[f]["ppl"], rel=1e-6)
    assert {r["method"] for r in load_rows(curve_run)[0]} >= {"slm", "slm-pn"}
