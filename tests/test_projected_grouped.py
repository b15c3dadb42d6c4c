"""The grouped projected MLP (kernel="grouped", one code path with static shapes) computes
what the per-expert loop computes: logits, loss and every gradient, for mixed micro-batches
with fewer, as many and more experts than examples, through torch._grouped_mm where it runs
and through the gathered batched product otherwise."""

import pytest
import torch

from speclm.model import projected
from speclm.model.projected import ProjectedNetwork, Route
from speclm.model.transformer import named_shape

V = 61


def pair(k, mlp, h=3, m=4):
    shape = named_shape("tiny", V, max_seq_len=16, mlp=mlp)
    nets = []
    for kernel in ("loop", "grouped"):
        torch.manual_seed(0)
        pn = ProjectedNetwork(shape, k=k, h=h, m=m, kernel=kernel)
        with torch.no_grad():  # away from the init, so no structure hides a bug
            for p in pn.parameters():
                p.add_(0.05 * torch.randn_like(p))
        nets.append(pn)
    nets[1].load_state_dict(nets[0].state_dict())
    return nets


def run(pn, x, experts):
    pn.zero_grad(set_to_none=True)
    logits, loss = pn(x[:, :-1], x[:, 1:], expert=experts)
    (loss + 0.1 * logits.pow(2).mean()).backward()  # a gradient on every logit, not only the loss's
    return logits.detach(), loss.detach(), {n: p.grad for n, p in pn.named_parameters()}


@pytest.mark.parametrize("static", [True, False], ids=["fixed-groups", "present-groups"])
@pytest.mark.parametrize("gmm", [True, False], ids=["grouped_mm", "gather-bmm"])
@pytest.mark.parametrize("k,experts,mlp", [
    (4, [2, 0, 2, 3, 0, 2], "swiglu"),   # k <= B: every expert a group, expert 1 empty
    (9, [7, 1, 7, 4], "plain"),          # k > B: the experts present padded to B groups
    (3, [1, 1, 1, 1, 1], "swiglu"),      # one expert: the plain MLP
])
def test_grouped_equals_per_expert_loop(monkeypatch, static, gmm, k, experts, mlp):
    if gmm and not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch build has no torch._grouped_mm")
    if not gmm:
        monkeypatch.setattr(projected, "grouped_mm_usable", lambda x, w: False)
    route = ProjectedNetwork.route  # static: the fixed number of groups a compiled graph gets
    monkeypatch.setattr(ProjectedNetwork, "route", lambda self, b, e=None, v=None, **_: route(self, b, e, v, static))
    calls = []
    real = projected.grouped_linear
    monkeypatch.setattr(projected, "grouped_linear", lambda *a: calls.append(1) or real(*a))
    loop, grouped = pair(k, mlp)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (len(experts), 13), generator=g)
    ids = torch.tensor(experts)
    la, sa, ga = run(loop, x, ids)
    lb, sb, gb = run(grouped, x, ids)
    assert bool(calls) == (len(set(experts)) > 1)  # the grouped product ran for mixed batches
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sb, sa, atol=1e-5, rtol=1e-5)
    assert ga.keys() == gb.keys()
    for n in ga:
        if ga[n] is None:
            assert gb[n] is None or not gb[n].any(), n
        else:
            torch.testing.assert_close(gb[n], ga[n], atol=1e-5, rtol=1e-4, msg=n)


def test_route_has_a_fixed_number_of_groups_whatever_the_mix():
    E = torch.randn(6, 2)
    shapes = set()
    for experts in ([0, 1, 2, 3, 4, 5, 0, 1], [5, 5, 2, 2, 2, 2, 2, 0], [3, 1, 3, 1, 3, 1, 3, 1]):
        r = Route.from_experts(torch.tensor(experts), E)
        shapes.add((tuple(r.vectors.shape), tuple(r.ends.shape), tuple(r.group.shape)))
        assert r.ends[-1] == len(experts) and sum(r.counts) == len(experts)
        # grouped order: each example's group holds its expert's vector
        ordered = torch.tensor(experts)[r.order]
        torch.testing.assert_close(r.vectors[r.group], E[ordered])
    assert shapes == {((6, 2), (6,), (8,))}
    small = Route.from_experts(torch.tensor([4, 1, 4]), E)  # k > B: B groups, two empty
    assert small.vectors.shape == (3, 2) and small.counts == [1, 2, 0]


def test_unknown_kernel_is_refused():
    from speclm.core.errors import SpeclmError
    with pytest.raises(SpeclmError, match="kernel must be one of grouped, loop"):
        ProjectedNetwork(named_shape("tiny", V, max_seq_len=16), k=2, h=2, m=2, kernel="fast")
