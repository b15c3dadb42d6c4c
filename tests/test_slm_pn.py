"""SLM-pn as a method (speclm/methods/slm_pn.py): routing by cluster through the training
loop's batches, one-cluster batches, histograms, and the pretrain -> materialize ->
fine-tune path on a tiny run."""

import math

import numpy as np
import pytest
import torch

from speclm.errors import SpeclmError
from speclm.methods.slm_pn import ClusterBatchSampler, entropy, histogram_of
from speclm.model.projected import ProjectedNetwork
from speclm.model.transformer import named_shape
from speclm.train.data import ArrayWindows, WindowSampler
from speclm.train.loop import default_loss

V, WIN = 53, 8


def windows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayWindows(rng.integers(0, V, n * WIN + 1), WIN)


def test_each_window_is_routed_to_its_clusters_expert():
    """A batch from the loop's sampler carries the windows' cluster ids; the loop's loss
    is then the mean of each window's loss under the plain model of its cluster's expert."""
    torch.manual_seed(0)
    w = windows()
    assign = np.random.default_rng(1).integers(0, 3, len(w))
    sampler = WindowSampler(w, 6, seed=0, extras={"expert": assign})
    batch = sampler.batch(0)
    ids = sampler.window_ids(0)
    assert torch.equal(batch[2]["expert"], torch.from_numpy(assign[ids]))
    pn = ProjectedNetwork(named_shape("tiny", V, max_seq_len=WIN), k=3, h=2, m=2)
    with torch.no_grad():
        loss = default_loss(pn, batch)
    experts = [pn.materialize(pn.expert_vector(c)) for c in range(3)]
    per_window = [experts[int(assign[i])](batch[0][j : j + 1], batch[1][j : j + 1])[1] for j, i in enumerate(ids)]
    torch.testing.assert_close(loss, torch.stack(per_window).mean(), rtol=1e-5, atol=1e-6)
    # routing to the wrong experts gives another loss
    wrong = dict(batch[2], expert=(batch[2]["expert"] + 1) % 3)
    assert abs(default_loss(pn, (batch[0], batch[1], wrong)).item() - loss.item()) > 1e-4


def test_cluster_batches_hold_one_cluster_and_cover_every_window():
    w = windows(n=37)
    assign = np.array([i % 3 if i < 30 else 1 for i in range(37)])
    s = ClusterBatchSampler(w, 4, assign, seed=5)
    seen = []
    for pos in range(s.n_batches):  # one epoch
        x, y, extras = s.batch(pos)
        ids = s.window_ids(pos)
        assert len(set(assign[ids].tolist())) == 1
        assert torch.equal(extras["expert"], torch.from_numpy(assign[ids]))
        assert torch.equal(x, torch.from_numpy(w.batch(ids)[:, :-1]))
        seen += ids.tolist()
    assert set(seen) == set(range(37))
    # a pure function of (seed, position): a resumed run sees the same stream
    s2 = ClusterBatchSampler(w, 4, assign, seed=5)
    for pos in (0, 3, s.n_batches + 2):
        assert np.array_equal(s.window_ids(pos), s2.window_ids(pos))
    # the next epoch is another order
    assert not all(np.array_equal(s.window_ids(p), s.window_ids(p + s.n_batches)) for p in range(s.n_batches))
    with pytest.raises(SpeclmError):
        ClusterBatchSampler(w, 4, assign[:-1])


def test_histogram_and_entropy():
    h = histogram_of(np.array([0, 0, 1, 3]), 4)
    assert np.allclose(h, [0.5, 0.25, 0, 0.25])
    assert math.isclose(entropy(h), -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert entropy(np.eye(4)[1]) == 0
    assert math.isclose(entropy(np.full(16, 1 / 16)), math.log(16))
    with pytest.raises(SpeclmError, match="k=4"):
        histogram_of(np.array([0, 4]), 4)
    with pytest.raises(SpeclmError):
        histogram_of(np.array([], dtype=np.int64), 4)
