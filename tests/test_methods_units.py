"""Unit tests of the methods' pure parts: sizes and expert selection rules."""

from types import SimpleNamespace

import numpy as np
import pytest

from speclm.core.errors import SpeclmError
from speclm.methods import selection
from speclm.methods.sizes import parse_size, size_label, size_windows, slice_indices


def test_parse_size_units_and_all():
    assert parse_size("250k") == 250_000
    assert parse_size("1M") == 1_000_000
    assert parse_size("1.5m") == 1_500_000
    assert parse_size("4096") == 4096
    assert parse_size("all") is None
    assert size_label("1000k") == "1M"
    assert size_label("16000") == "16k"
    assert size_label("1234") == "1234"


@pytest.mark.parametrize("bad", ["", "ten", "1X", "-3k", "0"])
def test_parse_size_rejects_garbage(bad):
    with pytest.raises(SpeclmError):
        parse_size(bad)


def test_size_larger_than_split_is_refused():
    assert size_windows("all", 10, 64) == 10
    assert size_windows("640", 10, 64) == 10
    with pytest.raises(SpeclmError, match="larger than the legal train split"):
        size_windows("1k", 10, 64, "legal")


def test_slices_are_deterministic_nested_and_spread():
    small = slice_indices("640", 100, 64, seed=3)
    big = slice_indices("1280", 100, 64, seed=3)
    assert len(small) == 10 and len(big) == 20
    assert np.array_equal(small, slice_indices("640", 100, 64, seed=3))
    assert set(small) <= set(big)
    assert not np.array_equal(small, np.arange(10))  # not just the first windows
    assert not np.array_equal(small, slice_indices("640", 100, 64, seed=4))


def test_most_frequent_takes_argmax_of_histogram():
    pool = selection.ExpertPool(k=4, histogram=np.array([0.1, 0.5, 0.4, 0.0]))
    choice = selection.select("most_frequent", pool)
    assert choice.expert == 1 and choice.finetunes == 0
    pool.experts = [0, 2, 3]
    assert selection.select("most_frequent", pool).expert == 2


def test_best_pretrained_uses_loss_not_histogram():
    losses = {0: 3.0, 1: 2.5, 2: 2.0}
    pool = selection.ExpertPool(k=3, histogram=np.array([0.9, 0.05, 0.05]), pretrained_loss=losses.__getitem__)
    choice = selection.select("best_pretrained", pool)
    assert choice.expert == 2 and choice.evaluations == 3


def test_finetune_all_keeps_best_finetuned_and_counts_them():
    calls = []

    def ft(i):
        calls.append(i)
        return SimpleNamespace(best_valid_loss=[2.0, 1.5, 1.7][i], path=f"e{i}")

    pool = selection.ExpertPool(k=3, histogram=np.ones(3) / 3, finetune=ft)
    choice = selection.select("finetune_all", pool)
    assert calls == [0, 1, 2]
    assert choice.expert == 1 and choice.finetuned.path == "e1" and choice.finetunes == 3


def test_unknown_rule_lists_known_ones():
    with pytest.raises(SpeclmError, match="most_frequent"):
        selection.check_rule("random")


def test_importance_plan_draws_follow_domain_histogram():
    from speclm.methods import importance

    assign = np.array([0] * 50 + [1] * 30 + [2] * 20)
    p = importance.plan(np.array([0.7, 0.3, 0.0]), assign)
    q = p.window_probs(assign)
    assert q.sum() == pytest.approx(1.0)
    assert q[:50].sum() == pytest.approx(0.7) and q[80:].sum() == 0
    rng = np.random.default_rng(0)
    idx = importance.draw(rng, p, importance.cluster_members(assign, 3), 4000, len(assign))
    share0 = np.mean(assign[idx] == 0)
    assert 0.66 < share0 < 0.74 and not np.any(assign[idx] == 2)


def test_importance_cycle_draw_reads_each_window_in_passes():
    from speclm.core.errors import SpeclmError
    from speclm.methods import importance

    assign = np.array([0] * 40 + [1] * 7 + [2] * 53)
    p = importance.plan(np.array([0.2, 0.8, 0.0]), assign)
    members = importance.cluster_members(assign, 3)
    idx = importance.draw(np.random.default_rng(0), p, members, 1000, len(assign), within="cycle")
    counts = np.bincount(idx, minlength=len(assign))
    for c in (0, 1):  # inside a cluster every window is read floor or ceil of draws / windows
        drawn = counts[assign == c]
        assert drawn.max() - drawn.min() <= 1 and drawn.max() == -(-drawn.sum() // len(drawn))
    assert counts[assign == 2].sum() == 0 and 0.76 < np.mean(assign[idx] == 1) < 0.84
    iid = importance.draw(np.random.default_rng(0), p, members, 1000, len(assign))
    assert np.bincount(iid).max() > counts.max()  # with replacement the most-drawn window is read more
    with pytest.raises(SpeclmError, match="is_draw"):
        importance.draw(np.random.default_rng(0), p, members, 10, len(assign), within="stratified")


def test_importance_smoothing_uniform_share_and_empty_clusters():
    from speclm.methods import importance

    assign = np.array([0] * 10 + [1] * 10)  # cluster 2 has no generic window
    p = importance.plan(np.array([0.5, 0.0, 0.5]), assign, smoothing=0.0)
    assert p.dropped_mass == pytest.approx(0.5) and p.cluster_probs[0] == pytest.approx(1.0)
    smooth = importance.plan(np.array([1.0, 0.0, 0.0]), assign, smoothing=1.0)
    assert 0 < smooth.cluster_probs[1] < smooth.cluster_probs[0]
    mixed = importance.plan(np.array([1.0, 0.0, 0.0]), assign, uniform_share=0.5)
    q = mixed.window_probs(assign)
    assert q[10:].sum() == pytest.approx(0.25)
    with pytest.raises(SpeclmError):
        importance.plan(np.array([0.0, 0.0, 1.0]), assign)


def test_effective_sample_size_measures_repeats():
    from speclm.methods import importance

    uniform = importance.effective_sample_size(np.full(100, 0.01), draws=100)
    assert uniform["kish_ess"] == pytest.approx(100)
    concentrated = importance.effective_sample_size(np.r_[np.full(10, 0.1), np.zeros(90)], draws=100)
    assert concentrated["kish_ess"] == pytest.approx(10)
    assert concentrated["repeat_factor"] > 5 > uniform["repeat_factor"] > 1


def test_dsir_weights_equal_the_data_selection_package(tmp_path):
    """Our cached featurization + estimator gives the package's HashedNgramDSIR weights."""
    from data_selection import HashedNgramDSIR

    from conftest import stdlib_texts
    from speclm.methods import dsir

    class Texts:
        def __init__(self, texts):
            self.texts = texts

        def __len__(self):
            return len(self.texts)

        def text(self, i):
            return self.texts[i]

    generic, domain = Texts(stdlib_texts(30, 0, 600)), Texts(stdlib_texts(8, 40, 600))
    sets = {"g": generic, "d": domain}
    load = lambda name: ({"text": t} for t in sets[name].texts)  # noqa: E731
    ref = HashedNgramDSIR(["g"], ["d"], cache_dir=str(tmp_path / "c"), raw_load_dataset_fn=load,
                          target_load_dataset_fn=load, num_proc=1, ngrams=2, num_buckets=500, min_example_length=0)
    ref.fit_importance_estimator(num_tokens_to_fit="all")
    ref.compute_importance_weights()
    expected = np.load(tmp_path / "c" / "log_importance_weights" / "0.npy")
    key = {"t": 1}
    pool, feats, _ = dsir.generic_pool(tmp_path / "pool", generic, key, 0, 0, 2, 500)
    got = dsir.log_weights(feats, dsir.featurize(domain, np.arange(8), 2, 500))
    assert np.array_equal(pool, np.arange(30))
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6)
    again, feats2, _ = dsir.generic_pool(tmp_path / "pool", generic, key, 0, 0, 2, 500)  # from the cache
    assert (feats2 != feats).nnz == 0
    rng = np.random.default_rng(0)
    picked = dsir.resample(got, 5, rng)
    assert len(set(picked)) == 5  # without replacement while the pool is large enough
    assert len(dsir.resample(got, 60, rng)) == 60
    assert len(dsir.pool_indices(30, 10, 0)) == 10


def test_is_draw_is_keyed_only_away_from_iid(tmp_path):
    """Runs from before methods.is_draw keep their rows' config hash and slm-is's job keys."""
    from speclm.core.run import open_run
    from speclm.methods.base import Context
    from speclm.methods.jobs import config_part
    from speclm.report.rows import config_hash

    def keys(draw):
        r = open_run(tmp_path / "r", "tiny", [f"methods.is_draw='{draw}'"], save=False)
        return config_hash(r), config_part(Context(run=r, log=print), ("is_",))["methods"]

    (h_iid, part_iid), (h_cycle, part_cycle) = keys("iid"), keys("cycle")
    assert "is_draw" not in part_iid and part_cycle["is_draw"] == "cycle" and h_iid != h_cycle
