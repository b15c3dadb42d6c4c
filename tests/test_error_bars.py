"""Issue 11 items 1, 5, 6: the histogram of the specialization set, bootstrap error bars over
test documents, seeds, the no-FT column, and `speclm eval` on a projected network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tiny_copy
from speclm.core import atomic
from speclm.core.errors import SpeclmError

FAST = [
    "train.max_steps=2",
    "train.warmup_steps=1",
    "train.eval_every=2",
    "train.eval_batches=1",
    "train.checkpoint_every=2",
    "methods.sizes=['2k', 'all']",
    "methods.finetune_max_steps=[2, 2]",
    "methods.finetune_eval_every=2",
    "methods.eval_max_windows=12",
    "methods.bootstrap=200",
]


# -- the bootstrap over documents ---------------------------------------------------------


def test_bootstrap_resamples_documents_not_windows():
    from speclm.report import stats

    # windows 0 and 1 share document 7: one unit of the bootstrap, not two
    docs = np.array([7, 7, 3, 5])
    sums = np.array([10.0, 2.0, 4.0, 8.0])
    tokens = np.array([4, 4, 4, 4])
    se = stats.bootstrap_se(docs, sums, tokens, 500, "d")

    # by hand: documents 3, 5, 7 (sorted) with NLL 4, 8, 12 over 4, 4, 8 tokens
    counts = stats.replicate_draws(3, 500, "d")
    assert counts.shape == (500, 3) and (counts.sum(axis=1) == 3).all()
    means = [(c[0] * 4 + c[1] * 8 + c[2] * 12) / (c[0] * 4 + c[1] * 4 + c[2] * 8) for c in counts]
    assert se == pytest.approx(float(np.std(means, ddof=1)), rel=1e-12)

    # the same windows as four independent documents: another (window-level) bootstrap
    window_level = stats.bootstrap_se(np.arange(4), sums, tokens, 500, "d")
    assert abs(window_level - se) > 1e-3


def test_bootstrap_refuses_one_document_and_maps_the_interval():
    from speclm.report import stats

    with pytest.raises(SpeclmError, match="notes: the test split has 1 document"):
        stats.bootstrap_se(np.array([0, 0]), np.array([1.0, 2.0]), np.array([4, 4]), 100, "notes")
    with pytest.raises(SpeclmError, match="at least 2 replicates"):
        stats.replicate_draws(5, 1, "d")
    lo, hi, h = stats.ppl_interval(2.0, 0.1)
    assert lo == pytest.approx(math.exp(2.0 - 1.96 * 0.1), rel=1e-3) and h == pytest.approx((hi - lo) / 2)


def test_paired_difference_on_the_same_windows(tmp_path):
    from speclm.report import stats

    docs, tok = np.array([0, 0, 1, 2, 3]), np.full(5, 8)
    a, b = np.array([8.0, 9, 10, 7, 12]), np.array([7.0, 9, 9, 7, 11])
    for name, s in (("a", a), ("b", b)):
        stats.save_windows(tmp_path / f"{name}.npy", np.arange(5), docs, tok, s)
    ra = {"method": "x", "domain": "d", "windows": "a.npy"}
    rb = {"method": "y", "domain": "d", "windows": "b.npy"}
    d = stats.paired_difference(ra, rb, tmp_path, replicates=300)
    assert d["nll_diff"] == pytest.approx((a.sum() - b.sum()) / 40)
    assert d["documents"] == 4 and 0 < d["se"] < stats.paired_difference(ra, {**rb, "windows": "a.npy"}, tmp_path)["se"] + 1
    assert stats.paired_difference(ra, ra, tmp_path)["se"] == 0.0


# -- a real run: tokens of the tiny corpus --------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tokens):
    torch.set_num_threads(1)
    return tiny_copy(tiny_tokens, tmp_path_factory.mktemp("bars") / "run", FAST)


class FakeClusters:
    """Cluster ids per (set, split) for the methods' histogram code (no embedding needed)."""

    def __init__(self, assigns):
        self.assigns = assigns
        self.ks = [4]

    def assign(self, k, set_name, split):
        return self.assigns[(set_name, split)]


def test_is_histogram_comes_from_the_size_slice(run):
    from speclm.clusters.store import histogram_of
    from speclm.methods import base, inputs
    from speclm.methods.sizes import slice_indices

    ctx = base.Context(run=run, log=lambda s: None)
    s = inputs.shards(ctx)
    n = len(s.windows("kjv", "train"))
    small = slice_indices("2k", n, s.window, seed=run.config.seed, domain="kjv")
    assign = np.full(n, 3, dtype=np.int32)
    assign[small] = 1  # the 2k slice lives in cluster 1, the rest of the split in cluster 3
    generic = np.arange(len(s.windows(inputs.GENERIC, "train"))) % 4
    ctx.__dict__["clusters"] = FakeClusters({("kjv", "train"): assign, (inputs.GENERIC, "train"): generic})
    slm_is = base.get("slm-is")

    t_small, t_all = slm_is.pretrain_target(ctx, "kjv", "2k"), slm_is.pretrain_target(ctx, "kjv", "all")
    np.testing.assert_array_equal(t_small.histogram, [0, 1, 0, 0])
    np.testing.assert_allclose(t_all.histogram, histogram_of(assign, 4))
    assert t_small.hash != t_all.hash
    assert slm_is.pretrain_folder(ctx, "kjv", t_small) != slm_is.pretrain_folder(ctx, "kjv", t_all)
    assert t_small.tv == pytest.approx(1 - len(small) / n) and t_all.tv == 0.0

    # the resample follows the slice's histogram: every draw from generic cluster 1
    idx, report = slm_is.pretrain_indices(ctx, "kjv", t_small)
    assert (generic[idx] == 1).all() and report["importance"]["domain_histogram"] == [0, 1, 0, 0]

    # equal histograms share one job
    ctx.__dict__["clusters"] = FakeClusters({("kjv", "train"): np.zeros(n, np.int32), (inputs.GENERIC, "train"): generic})
    a, b = slm_is.pretrain_target(ctx, "kjv", "2k"), slm_is.pretrain_target(ctx, "kjv", "all")
    assert a.hash == b.hash and slm_is.pretrain_folder(ctx, "kjv", a) == slm_is.pretrain_folder(ctx, "kjv", b)


def test_grid_seeds_error_bars_and_no_ft(run):
    from speclm.grid.experiment import run_grid
    from speclm.report.results import grid_rows
    from speclm.report.stats import load_windows

    results = run.path / "eval" / "results.jsonl"
    with pytest.raises(SpeclmError, match="seed count must be at least 1"):
        run_grid(run, methods=["slm"], domains=["kjv"], sizes=["2k"], seeds=0, log=lambda s: None)
    assert not results.exists()

    table = run_grid(run, methods=["slm"], domains=["kjv", "legal"], sizes=["2k"], seeds=2, log=lambda s: None)
    rows = atomic.read_jsonl(results)
    assert sorted((r["domain"], r["seed"]) for r in rows) == [("kjv", 0), ("kjv", 1), ("legal", 0), ("legal", 1)]
    for r in rows:
        assert r["nll_se"] > 0 and r["ppl_lo"] < r["ppl"] < r["ppl_hi"] and r["eval_documents"] >= 2
        assert r["pretrained_nll"] > r["nll"] - 1.0 and r["generic_valid_nll"] > 0  # the no-FT column
        w = load_windows(run.path / r["windows"])
        assert w.shape[1] == 4 and math.isclose(w[:, 3].sum() / w[:, 2].sum(), r["nll"], rel_tol=1e-9)
    s0 = {r["domain"]: r for r in rows if r["seed"] == 0}
    s1 = {r["domain"]: r for r in rows if r["seed"] == 1}
    assert s1["kjv"]["train_seed"] == s0["kjv"]["train_seed"] + 1
    assert s1["kjv"]["checkpoint"].startswith("seed-1/") and s0["kjv"]["nll"] != s1["kjv"]["nll"]
    agg = grid_rows(results, rows[0]["config"])[("slm", "kjv", "2k")]
    assert agg["seeds"] == 2 and agg["nll"] == pytest.approx((s0["kjv"]["nll"] + s1["kjv"]["nll"]) / 2)
    text = table.read_text()
    assert " ± " in text and "2 seeds" in text and "Before fine-tuning" in text
    assert f"{math.exp(s0['kjv']['pretrained_nll']):.2f}" in text
    # the pretrained checkpoint was evaluated once per (checkpoint, set): cached
    assert len(list((run.path / "eval" / "pretrained").glob("*.json"))) == 2  # seed 0's and seed 1's pretraining


def test_grid_refuses_a_test_split_of_one_document(run, monkeypatch):
    from speclm.grid import evaluation
    from speclm.grid.experiment import run_grid

    real = evaluation.eval_windows

    def one_doc(r, set_name, split="test"):
        w, idx = real(r, set_name, split)
        return w, idx[np.asarray(w.index[idx, 1]) == w.index[idx[0], 1]]

    monkeypatch.setattr(evaluation, "eval_windows", one_doc)
    before = sorted(p.name for p in run.path.rglob("*"))
    with pytest.raises(SpeclmError, match="kjv: the test split has 1 document"):
        run_grid(run, methods=["slm"], domains=["kjv"], sizes=["2k"], name="one", log=lambda s: None)
    assert sorted(p.name for p in run.path.rglob("*")) == before


def test_eval_projected_network_needs_an_expert(run, cli, tmp_path):
    from speclm.model.projected import ProjectedNetwork
    from speclm.model.transformer import named_shape
    from speclm.tokens.shards import TokenShards
    from speclm.train.checkpoint import save_checkpoint

    s = TokenShards(run.tokens_dir)
    pn = ProjectedNetwork(named_shape("tiny", s.vocab_size, max_seq_len=s.window), 2, 2, 2)
    ckpt = save_checkpoint(tmp_path / "pn", pn, meta={"method": "slm-pn", **pn.meta()},  # as slm-pn saves it
                           files={"tokenizer.json": run.tokens_dir / "tokenizer.json"})
    code, out, err = cli("eval", "--checkpoint", ckpt, "--run", run.path, "--on", "kjv", "--max-windows", "2")
    assert code == 2 and "--expert" in err and len(err.strip().splitlines()) == 1
    assert not (ckpt / "eval-test.json").exists()
    code, out, err = cli("eval", "--checkpoint", ckpt, "--run", run.path, "--on", "kjv", "--max-windows", "2", "--expert", "1")
    assert code == 0, err
    assert "kjv" in out and (ckpt / "eval-test.json").exists()


def test_macro_se_averages_the_same_replicate_over_domains(tmp_path):
    from speclm.report import stats
    from speclm.report.results import macro_rows

    rows = []
    for j, d in enumerate(["a", "b"]):
        docs = np.array([0, 0, 1, 2, 3, 4])
        sums = np.arange(6, dtype=np.float64) * (j + 1) + 5
        stats.save_windows(tmp_path / f"{d}.npy", np.arange(6), docs, np.full(6, 4), sums)
        rows.append({"method": "m", "size": "1k", "domain": d, "nll": sums.sum() / 24, "windows": f"{d}.npy"})
    mac = macro_rows(rows, tmp_path, 300)[("m", "1k")]
    reps = [stats.row_replicates(tmp_path, r, 300) for r in rows]
    assert mac["nll_se"] == pytest.approx(float(np.std((reps[0] + reps[1]) / 2, ddof=1)))
    assert mac["ppl_lo"] < mac["ppl"] < mac["ppl_hi"] and mac["ppl_pm"] > 0
    assert "nll_se" not in macro_rows(rows)[("m", "1k")]  # without the run folder: no error bar


def test_grid_cli_refuses_zero_seeds(run, cli):
    before = sorted(p.name for p in run.path.rglob("*"))
    code, _, err = cli("grid", "--run", run.path, "--methods", "slm", "--seeds", "0", "--name", "zero")
    assert code == 2 and "seed count must be at least 1" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in run.path.rglob("*")) == before


def test_table_shows_the_sets_total_variation(tmp_path):
    from speclm.report.results import write_table

    cost = {k: {"tokens": 0, "flops": 1.0, "device_hours": 0.0, "wall_seconds": 0} for k in ("generic", "specialization")}
    rows = [{"method": "slm-is", "domain": "a", "size": "2k", "config": "c", "nll": 2.0, "ppl": math.exp(2.0),
             "nll_se": 0.05, "cost": cost, "extra": {"specialization_set": {"tv_to_split": 0.4375}}}]
    results = tmp_path / "eval" / "results.jsonl"
    for r in rows:
        atomic.append_jsonl(results, r)
    write_table(results, tmp_path / "eval" / "results.md", "c")
    text = (tmp_path / "eval" / "results.md").read_text()
    assert "| slm-is | 2k | 0.438 |" in text and "7.39 ± 0.73" in text
