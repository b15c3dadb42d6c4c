"""The projected network (speclm/model/projected.py): the paper's formula, grouped routing,
materialization into a plain transformer, the SLM-mix special case, sizes, bad input."""

import pytest
import torch

from speclm.core.errors import SpeclmError
from speclm.model.projected import ProjectedNetwork, pn_param_counts
from speclm.model.transformer import Transformer, named_shape, param_breakdown

V = 61


def shape(mlp="swiglu", **kw):
    return named_shape("tiny", V, max_seq_len=16, mlp=mlp, **kw)


def make(k=4, h=3, m=2, mlp="swiglu", seed=0, **kw):
    torch.manual_seed(seed)
    return ProjectedNetwork(shape(mlp), k=k, h=h, m=m, **kw)


def tokens(b=5, t=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, t + 1), generator=g)


def test_weights_follow_the_paper_formula():
    pn = make(k=5, h=4, m=3)
    with torch.no_grad():  # move away from the init so no structure hides a bug
        for p in pn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for layer, mlp in enumerate(pn.projected_mlps()):
        W = mlp.weights(pn.E)
        for name in mlp.names:
            T = mlp.T[name.replace(".", "__")]  # [h, out, in]: T[r] is the paper's T[:, :, r]
            for i in range(pn.k):
                # W(l,i)[a,b] = sum_q E[i,q] sum_r M(l)[q,r] T(l)[a,b,r], written out as loops over q and r
                expected = torch.zeros_like(T[0])
                for q in range(pn.m):
                    for r in range(pn.h):
                        expected += pn.E[i, q] * mlp.M[q, r] * T[r]
                torch.testing.assert_close(W[name][i], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mlp", ["swiglu", "plain"])
def test_materialized_expert_equals_the_projected_network(mlp):
    pn = make(mlp=mlp)
    x = tokens()
    experts = torch.tensor([2, 0, 2, 3, 1])  # several groups, out of order
    logits, loss = pn(x[:, :-1], x[:, 1:], expert=experts)
    assert loss is not None and torch.isfinite(loss)
    for i in range(pn.k):
        plain = pn.materialize(pn.expert_vector(i))
        assert isinstance(plain, Transformer)
        assert plain.param_count() == param_breakdown(shape(mlp))["total"]
        rows = (experts == i).nonzero().flatten()
        plain_logits, _ = plain(x[rows, :-1])
        torch.testing.assert_close(plain_logits, logits[rows], rtol=1e-5, atol=1e-5)


def test_histogram_vector_is_the_histogram_mix_of_experts():
    pn = make(k=4, h=3, m=5)
    p = torch.tensor([0.5, 0.0, 0.3, 0.2])
    e = pn.histogram_vector(p * 10)  # normalized inside
    torch.testing.assert_close(e, p @ pn.E)
    torch.testing.assert_close(pn.histogram_vector(torch.eye(4)[2]), pn.E[2])
    # weights are linear in e: the mix's weights are the histogram-weighted experts' weights
    mlp = pn.projected_mlps()[1]
    W_all, W_mix = mlp.weights(pn.E), mlp.weights(e.reshape(1, -1))
    for name in mlp.names:
        torch.testing.assert_close(W_mix[name][0], torch.einsum("c,c...->...", p, W_all[name]), rtol=1e-5, atol=1e-6)
    # and the materialized mix computes what the network computes with vector=e
    x = tokens(b=2)
    logits, _ = pn(x[:, :-1], vector=e)
    plain_logits, _ = pn.materialize(e)(x[:, :-1])
    torch.testing.assert_close(plain_logits, logits, rtol=1e-5, atol=1e-5)


def test_each_example_is_routed_to_its_own_expert():
    pn = make(k=4)
    x = tokens(b=4)
    base = torch.tensor([0, 1, 2, 3])
    logits, _ = pn(x[:, :-1], expert=base)
    moved = base.clone()
    moved[2] = 0  # only example 2 changes expert
    logits2, _ = pn(x[:, :-1], expert=moved)
    for b in (0, 1, 3):
        torch.testing.assert_close(logits2[b], logits[b], rtol=1e-5, atol=1e-5)
    assert (logits2[2] - logits[2]).abs().max() > 1e-4


def test_grouped_gradients_equal_per_example_gradients():
    pn = make(k=3, h=2, m=2)
    x = tokens(b=4)
    experts = torch.tensor([1, 0, 1, 2])
    _, loss = pn(x[:, :-1], x[:, 1:], expert=experts)
    loss.backward()
    grouped = {n: p.grad.clone() for n, p in pn.named_parameters()}
    pn.zero_grad()
    for b in range(4):  # one example at a time; the batch loss is the mean of the per-example means
        _, lb = pn(x[b : b + 1, :-1], x[b : b + 1, 1:], expert=experts[b : b + 1])
        (lb / 4).backward()
    for n, p in pn.named_parameters():
        torch.testing.assert_close(p.grad, grouped[n], rtol=1e-4, atol=1e-6, msg=n)
    # an expert that no example uses gets no gradient on its vector
    pn.zero_grad()
    _, loss = pn(x[:, :-1], x[:, 1:], expert=torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert pn.E.grad[2].abs().max() == 0 and pn.E.grad[:2].abs().max() > 0


@pytest.mark.parametrize("mlp", ["swiglu", "plain"])
def test_mixture_is_the_special_case_h_eq_k_with_identity_projections(mlp):
    k = 3
    pn = make(k=k, h=k, m=k, mlp=mlp, init="mixture")
    torch.testing.assert_close(pn.E, torch.eye(k))
    pn.E.requires_grad_(False)  # SLM-mix: E and M are fixed, not learned
    for mlp_l in pn.projected_mlps():
        torch.testing.assert_close(mlp_l.M, torch.eye(k))
        mlp_l.M.requires_grad_(False)
    x = tokens(b=3)
    experts = torch.tensor([2, 0, 1])
    logits, _ = pn(x[:, :-1], expert=experts)
    for i in range(k):
        # expert i is an ordinary small model whose MLPs are the basis slices T[i]
        plain = Transformer(shape(mlp))
        state = pn.materialize_state(pn.E[i])
        for l, mlp_l in enumerate(pn.projected_mlps()):
            for name in mlp_l.names:
                state[f"blocks.{l}.mlp.{name}"] = mlp_l.T[name.replace(".", "__")][i].detach().clone()
        plain.load_state_dict(state)
        row = int((experts == i).nonzero())
        torch.testing.assert_close(plain(x[row : row + 1, :-1])[0][0], logits[row], rtol=1e-5, atol=1e-5)
    # independence: a loss on expert 1's examples only touches expert 1's slice of every T
    _, loss = pn(x[:, :-1], x[:, 1:], expert=torch.tensor([1, 1, 1]))
    loss.backward()
    for mlp_l in pn.projected_mlps():
        for T in mlp_l.T.values():
            assert T.grad[1].abs().max() > 0
            assert T.grad[0].abs().max() == 0 and T.grad[2].abs().max() == 0


@pytest.mark.parametrize("mlp", ["swiglu", "plain"])
def test_param_count_matches_the_formula(mlp):
    pn = make(k=5, h=3, m=4, mlp=mlp)
    counts = pn.param_counts()
    assert pn.param_count() == counts["total"]
    b = param_breakdown(shape(mlp))
    assert counts["total"] == b["total"] + (3 - 1) * b["mlp"] + 5 * 4 + 2 * 4 * 3  # E, and M for each of 2 layers
    assert counts["inference"] == b["total"]


def test_paper_shape_gives_the_papers_totals():
    """Table 7: 16 / 32 / 64 experts -> 756M / 1,422M / 2,770M, with h ~ 0.72 k (docs/paper.md)."""
    slm = named_shape("paper-slm", 32768)
    with torch.device("meta"):  # count the real module without allocating 5.7 GB
        pn = ProjectedNetwork(slm, k=32, h=23, m=32)
    assert pn.param_count() == pn_param_counts(slm, 32, 23, 32)["total"]
    assert abs(pn.param_count() - 1422e6) / 1422e6 < 0.01
    for k, h, paper in ((16, 12, 756e6), (64, 46, 2770e6)):
        assert abs(pn_param_counts(slm, k, h, 32)["total"] - paper) / paper < 0.03


@pytest.mark.parametrize("bad", [dict(h=0), dict(m=0), dict(k=0), dict(h=-1), dict(m=1.5)])
def test_bad_sizes_are_refused(bad):
    kw = dict(k=4, h=3, m=2) | bad
    with pytest.raises(SpeclmError, match="positive integer"):
        ProjectedNetwork(shape(), **kw)
    with pytest.raises(SpeclmError):
        pn_param_counts(shape(), **kw)


def test_bad_expert_indices_are_refused():
    pn = make(k=4)
    x = tokens(b=2)
    for ids in ([0, 4], [-1, 0]):
        with pytest.raises(SpeclmError, match="out of range"):
            pn(x[:, :-1], expert=torch.tensor(ids))
    with pytest.raises(SpeclmError, match="one per example"):
        pn(x[:, :-1], expert=torch.tensor([0, 1, 2]))
    with pytest.raises(SpeclmError, match="out of range"):
        pn.expert_vector(4)
    with pytest.raises(SpeclmError, match="no expert"):
        pn.transformer(x[:, :-1])
    with pytest.raises(SpeclmError, match="exactly one"):
        pn(x[:, :-1])
    with pytest.raises(SpeclmError, match="clusters"):
        pn.histogram_vector([0.5, 0.5])
    with pytest.raises(SpeclmError, match="non-negative"):
        pn.histogram_vector([0.5, -0.5, 0.0, 0.0])
    with pytest.raises(SpeclmError, match="h == k == m"):
        make(k=4, h=3, m=4, init="mixture")
