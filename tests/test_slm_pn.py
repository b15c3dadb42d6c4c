"""SLM-pn as a method (speclm/methods/slm_pn.py): routing by cluster through the training
loop's batches, one-cluster batches, histograms, and the pretrain -> materialize ->
fine-tune path on a tiny run."""

import math

import numpy as np
import pytest
import torch
from conftest import FAST_CLUSTERS, FAST_TRAIN, tiny_copy

from speclm.core.errors import SpeclmError
from speclm.clusters.describe import entropy
from speclm.clusters.store import histogram_of
from speclm.train.data import ClusterBatchSampler
from speclm.model.projected import ProjectedNetwork
from speclm.model.transformer import named_shape
from speclm.train.data import ArrayWindows, WindowSampler
from speclm.train.loop import default_loss
from speclm.core import manifest

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


# -- the method on the tiny preset (real corpus, tokens, clusters; a few training steps) ----

FAST = [
    *FAST_TRAIN,
    "methods.sizes=['2k', 'all']",
    "methods.finetune_max_steps=[3, 4]",
    "methods.finetune_eval_every=2",
    "methods.pn_k=2",
    "methods.pn_h=2",
    "methods.pn_m=2",
    # the suite's shared clusters (k=2 and 4; Sentence-BERT on a sample, the rest propagated)
    *FAST_CLUSTERS,
]


def _has_clusters_stage() -> bool:
    try:
        import speclm.clusters.stage  # noqa: F401
    except ImportError:
        return False
    return True


needs_clusters = pytest.mark.skipif(not _has_clusters_stage(), reason="the clusters stage is not in this checkout")


@pytest.fixture(scope="module")
def pn_run(tmp_path_factory, tiny_clusters):
    from speclm.grid.pipeline import run_pipeline

    torch.set_num_threads(1)
    run = tiny_copy(tiny_clusters, tmp_path_factory.mktemp("pn") / "run", FAST)
    run_pipeline(run)  # every stage is the shared copy's: nothing to do
    if not (run.clusters_dir / "manifest.json").exists():
        from speclm.clusters.stage import build_clusters

        build_clusters(run)
    return run


def _ctx(run, **methods):
    import dataclasses

    from speclm.methods.base import Context

    cfg = dataclasses.replace(run.config, methods=dataclasses.replace(run.config.methods, **methods))
    return Context(run=dataclasses.replace(run, config=cfg), log=lambda s: None)


def _domain_windows(ctx, domain, n=3):
    from speclm.methods import inputs

    w = inputs.shards(ctx).windows(domain, "valid")
    return torch.from_numpy(w.batch(np.arange(min(n, len(w)))))[:, :-1]


@needs_clusters
@pytest.mark.parametrize("method", ["slm-pn", "slm-pn-hist"])
def test_pretrain_materialize_and_finetune(pn_run, method):
    import json

    from speclm.methods import inputs
    from speclm.methods.base import get
    from speclm.train.checkpoint import load_projected
    from speclm.methods.sizes import slice_indices
    from speclm.train.checkpoint import load_transformer, read_meta
    from speclm.train.cost import read_cost

    ctx = _ctx(pn_run)
    m = get(method)
    domain = inputs.domains(ctx)[0]
    pre = m.pretrain(ctx)
    assert read_meta(pre)["projected"]["k"] == 2
    out = m.specialize(ctx, domain, "2k")
    info = json.loads((out / "method.json").read_text())
    # the histogram is the specialization set's (the 2k slice of the domain train split)
    s = inputs.shards(ctx)
    idx = slice_indices("2k", len(s.windows(domain, "train")), s.window, seed=ctx.config.seed, domain=domain)
    hist = np.bincount(inputs.clusters(ctx).assign(2, domain, "train")[idx], minlength=2) / len(idx)
    assert np.allclose(info["histogram"], hist, atol=1e-6)
    assert info["histogram_entropy"] == pytest.approx(entropy(hist))
    pn = load_projected(pre)
    if method == "slm-pn":
        assert info["rule"] == "most_frequent" and info["expert"] == int(np.argmax(hist))
        vector = pn.expert_vector(info["expert"])
    else:
        assert info["rule"] == "histogram"
        vector = torch.from_numpy(hist).float() @ pn.E
    # the materialized expert on disk is a plain small model computing the network's expert
    expert = load_transformer(out.parent / "expert")
    assert expert.shape == inputs.shape(ctx, "small")
    x = _domain_windows(ctx, domain)
    with torch.no_grad():
        torch.testing.assert_close(expert(x)[0], pn(x, vector=vector)[0], rtol=1e-4, atol=1e-4)
    # then fine-tuned like an SLM: a plain checkpoint with pretraining + specialization costs
    final = load_transformer(out)
    assert any(not torch.equal(a, b) for a, b in zip(final.state_dict().values(), expert.state_dict().values()))
    cost = read_cost(out)
    assert cost["pretrain"]["tokens"] == read_cost(pre)["pretrain"]["tokens"] > 0
    assert cost["specialize"]["tokens"] > 0
    assert m.specialize(ctx, domain, "2k") == out  # finished: reused
    if method == "slm-pn-hist":
        # the expert folder stands alone (weights + tokenizer): it exports to Hugging Face
        # and computes the network's expert there too
        import transformers

        from speclm.inference.export import export_checkpoint

        hf_dir = export_checkpoint(out.parent / "expert", out.parent.parent / "hf-expert")
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), torch_dtype=torch.float32).eval()
        with torch.no_grad():
            torch.testing.assert_close(hf(x).logits, pn(x, vector=vector)[0], rtol=1e-4, atol=1e-4)


@needs_clusters
def test_bad_settings_are_refused(pn_run):
    from speclm.methods import inputs
    from speclm.methods.base import get

    domain = inputs.domains(_ctx(pn_run))[0]
    with pytest.raises(SpeclmError, match="k=3"):  # the clustering has no k=3
        inputs.check_domain(_ctx(pn_run, pn_k=3), get("slm-pn"), domain)
    with pytest.raises(SpeclmError, match="clustering has k="):
        get("slm-pn").pretrain(_ctx(pn_run, pn_k=3))
    for bad in (dict(pn_h=0), dict(pn_m=0), dict(pn_batching="random"), dict(expert_rule="coin_flip")):
        with pytest.raises(SpeclmError):
            get("slm-pn").check(_ctx(pn_run, **bad))


@needs_clusters
def test_finetune_all_counts_every_finetune(pn_run):
    """PN's finetune_all pays the k fine-tunes it runs, as SLM-mix does; the grid reads that cost."""
    from speclm.methods import inputs
    from speclm.methods.base import get
    from speclm.train.cost import read_cost

    ctx = _ctx(pn_run, expert_rule="finetune_all")
    domain = inputs.domains(ctx)[0]
    out = get("slm-pn").specialize(ctx, domain, "2k")
    info = manifest.job_summary(out.parent)
    assert info["rule"] == "finetune_all" and info["finetunes"] == 2
    each = [read_cost(out.parent / "experts" / str(i))["specialize"]["flops"] for i in range(2)]
    cost = read_cost(out)  # what the grid reads for the row
    assert cost["specialize"]["flops"] == pytest.approx(sum(each)) and min(each) > 0
    assert cost["pretrain"] == read_cost(get("slm-pn").pretrain(ctx))["pretrain"]
    assert info["stop"] in ("early", "cap", "pretrained") and "epochs" in info


def test_pn_flops_count_routing_materialization_and_grouping():
    from speclm.model.projected import ProjectedNetwork, tokens_per_expert_mixed
    from speclm.model.transformer import flops_per_token, named_shape, param_breakdown

    shape = named_shape("tiny", 300, mlp="plain")
    pn = ProjectedNetwork(shape, 2, 3, 4)
    T = 16
    once = 6 * 3 * param_breakdown(shape)["mlp"] + 6 * shape.n_layer * 4 * 3
    assert pn.flops_per_token(T, 64) == pytest.approx(flops_per_token(shape, T) + once / 64)
    # a uniform batch of 8 windows: one cluster -> one materialization per batch; two equal -> ~2
    assert tokens_per_expert_mixed([10, 0], 8, T) == pytest.approx(8 * T)
    assert tokens_per_expert_mixed([5, 5], 8, T) == pytest.approx(8 * T / (2 * (1 - 0.5 ** 8)))


@pytest.mark.parametrize("groups", [1, 2])
def test_pn_flops_per_token_equals_counted_training_flops(groups):
    """The formula against torch's FLOP counter on one forward+backward of a micro-batch
    routed to ``groups`` experts (each materialized once)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from speclm.model.projected import ProjectedNetwork
    from speclm.model.transformer import named_shape

    torch.manual_seed(0)
    # the per-expert loop: torch's FLOP counter does not count torch._grouped_mm (the grouped kernel)
    pn = ProjectedNetwork(named_shape("tiny", 97, max_seq_len=32, mlp="plain"), 2, 3, 4, kernel="loop")
    x = torch.randint(0, 97, (4, 32))
    experts = torch.tensor([0, 0, 0, 0]) if groups == 1 else torch.tensor([0, 1, 0, 1])
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        pn(x, x, expert=experts)[1].backward()
    assert counter.get_total_flops() == pytest.approx(pn.flops_per_token(32, x.numel() // groups) * x.numel())
