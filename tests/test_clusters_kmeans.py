"""faiss k-means (flat and nested), the embedding cache's corruption checks, and the
describe maths, on arrays the tests make."""

from __future__ import annotations

import numpy as np
import pytest

from speclm.core.errors import SpeclmError


def blobs(n_per: int, k: int, d: int = 32, seed: int = 0, spread: float = 0.05):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    x = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centers])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def purity(pred, truth):
    return sum(np.bincount(truth[pred == c]).max() for c in np.unique(pred)) / len(truth)


def test_flat_kmeans_recovers_blobs_and_is_seeded():
    from speclm.clusters.kmeans import assign_levels, fit_levels

    x, truth = blobs(50, 4)
    a = fit_levels(x, [4, 2], niter=20, seed=3)
    b = fit_levels(x, [2, 4], niter=20, seed=3)
    assert [lv.k for lv in a] == [2, 4]  # sorted
    for la, lb in zip(a, b):
        assert np.allclose(la.centroids, lb.centroids)
        assert np.allclose(np.linalg.norm(la.centroids, axis=1), 1.0, atol=1e-5)
    got = assign_levels(x, a)
    assert purity(got[4], truth) == 1.0
    assert set(np.unique(got[4])) == {0, 1, 2, 3}


def test_nested_levels_split_their_parents():
    from speclm.clusters.kmeans import assign_levels, fit_levels

    # two far-apart groups of four blobs each: the natural tree for k = 2 then 8
    rng = np.random.default_rng(1)
    x, truth = blobs(40, 8, seed=1, spread=0.02)
    x = x * 0.2 + np.repeat(rng.normal(size=(2, x.shape[1])) * 3, 160, axis=0).astype(np.float32)
    levels = fit_levels(x, [2, 8], nested=True, niter=20, seed=0)
    got = assign_levels(x, levels)
    assert levels[1].parent_k == 2
    assert np.array_equal(got[8] // 4, got[2])  # every window's child lies under its parent
    assert purity(got[8], truth) > 0.9


def test_k_larger_than_windows_and_bad_ks_are_errors():
    from speclm.clusters.kmeans import check_ks, fit_levels

    x, _ = blobs(3, 2)
    with pytest.raises(SpeclmError, match="k=16 is larger than the number of windows"):
        fit_levels(x, [2, 16])
    with pytest.raises(SpeclmError, match="multiple"):
        check_ks([4, 6], nested=True)
    with pytest.raises(SpeclmError, match="empty"):
        check_ks([], nested=False)


def test_empty_clusters_are_reported_not_fatal():
    from speclm.clusters.kmeans import assign_levels, cluster_sizes, fit_levels

    x, _ = blobs(5, 2, spread=0.0)  # only 2 distinct points, 3 clusters asked
    levels = fit_levels(x, [3], niter=5)
    sizes = cluster_sizes(assign_levels(x, levels)[3], 3)
    assert sizes.sum() == 10 and (sizes == 0).sum() >= 1


def test_embedding_cache_detects_truncated_corrupted_and_stale_shards(tmp_path):
    from speclm.clusters.store import EmbeddingCache

    cache = EmbeddingCache(tmp_path, shard_size=4)
    emb = np.random.default_rng(0).normal(size=(4, 384)).astype(np.float32)
    cache.save("generic", "train", 0, "key-a", emb)
    assert np.array_equal(cache.load("generic", "train", 0, "key-a", 4, 384), emb)
    assert cache.load("generic", "train", 0, "key-b", 4, 384) is None  # other model/rule/data
    npy, _ = cache.paths("generic", "train", 0)
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])  # truncated
    assert cache.load("generic", "train", 0, "key-a", 4, 384) is None
    npy.write_bytes(data[:-8] + b"\x00" * 8)  # same size, corrupted
    assert cache.load("generic", "train", 0, "key-a", 4, 384) is None
    cache.save("generic", "train", 0, "key-a", emb)  # recomputed
    assert cache.load("generic", "train", 0, "key-a", 4, 384) is not None


def test_resample_stats_match_a_per_window_computation():
    from speclm.clusters.describe import entropy, importance_weights, resample_stats

    counts = np.array([5, 3, 2, 0])
    p_dom = np.array([0.1, 0.6, 0.2, 0.1])  # 0.1 on a cluster with no generic window
    B = 7
    s = resample_stats(p_dom, counts, B)
    # per window: q_i = w(c_i) / sum_j w(c_j), with w = p_dom / p_gen
    labels = np.repeat(np.arange(4), counts)
    w = importance_weights(p_dom, counts / counts.sum())[labels]
    q = w / w.sum()
    assert s["ess"] == pytest.approx(1 / (q ** 2).sum())
    assert s["distinct"] == pytest.approx((1 - (1 - q) ** B).sum())
    assert s["repetition"] == pytest.approx(B / s["distinct"])
    assert s["dropped_mass"] == pytest.approx(0.1)
    assert entropy(np.array([0.5, 0.5, 0.0])) == pytest.approx(np.log(2))
    # a domain that looks exactly like generic: every window equally likely
    u = resample_stats(counts / counts.sum(), counts, B)
    assert u["ess"] == pytest.approx(10.0)


def test_histogram_of_a_set_with_no_windows_is_an_error(tmp_path):
    from speclm.clusters.store import Clusters, assign_path, k_dir

    k2 = k_dir(tmp_path, 2)
    k2.mkdir(parents=True)
    np.save(k2 / "centroids.npy", np.eye(2, dtype=np.float32))
    (k2 / "meta.json").write_text("{}")
    p = assign_path(tmp_path, 2, "law", "train")
    p.parent.mkdir(parents=True)
    np.save(p, np.zeros(0, dtype=np.int32))
    c = Clusters(tmp_path)
    assert c.ks == [2]
    with pytest.raises(SpeclmError, match="no windows"):
        c.histogram(2, "law")
    with pytest.raises(SpeclmError, match="no clustering with k=4"):
        c.assign(4, "law", "train")


class _Windows:
    """Token windows held in memory: the two members token_bags reads (batch, window)."""

    def __init__(self, tokens: np.ndarray):
        self.tokens, self.window = tokens, tokens.shape[1] - 1

    def batch(self, idx):
        return self.tokens[np.asarray(idx)]


def test_token_bag_proxy_learns_clusters_and_keeps_nesting():
    from speclm.clusters.propagate import TokenBagProxy, agreement, token_bags

    # 4 "topics", each drawing its tokens from its own part of a 40-token vocabulary
    rng = np.random.default_rng(0)
    topic = np.repeat(np.arange(4), 30)
    tokens = np.stack([rng.integers(10 * t, 10 * t + 10, size=17) for t in topic])
    bags = token_bags(_Windows(tokens), np.arange(len(topic)), 40)
    assert bags.shape == (120, 40) and bags.sum() == 120 * 16  # the window's 16 tokens, not the extra one
    labels = {2: (topic // 2).astype(np.int32), 4: topic.astype(np.int32)}
    proxy = TokenBagProxy(bags, 40).fit(bags, labels, {2: 0, 4: 2})
    pred = proxy.predict(bags)
    assert np.array_equal(pred[4], topic) and np.array_equal(pred[4] // 2, pred[2])
    agree = agreement(bags, labels, {2: 0, 4: 2}, 40)
    assert agree[4] == 1.0 and agree[2] == 1.0
    # labels unrelated to the tokens cannot be predicted well
    noise = {4: rng.integers(0, 4, size=120).astype(np.int32)}
    assert agreement(bags, noise, {}, 40)[4] < 0.6
