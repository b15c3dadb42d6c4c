"""The projected network under torch.compile (train.compile=true, as the paper preset
trains): the expert routing runs outside the compiled graph and the grouped projected MLPs
inside it with static shapes (a fixed number of groups), so a new mix of experts in a
micro-batch does not recompile (before the routing left the graph, every new grouping did,
until dynamo's recompile limit sent the model back to eager). The one compile test of the
suite: a 1-layer model and dynamo with the eager backend (recompiles are decided by
dynamo's guards, not by inductor), a few seconds."""

import dataclasses


from speclm.model.projected import ProjectedNetwork
from speclm.model.transformer import named_shape


def test_new_expert_mixes_do_not_recompile():
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    shape = dataclasses.replace(named_shape("tiny", 64, max_seq_len=8), n_layer=1)
    pn = ProjectedNetwork(shape, 4, 3, 4)
    graphs = []

    def record(gm, example_inputs):  # dynamo only: guards and recompiles are decided there
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(pn, backend=record)
    x = torch.randint(0, 64, (6, 8))
    # the first two calls compile the one-group and the several-groups paths; after
    # that, new groupings (other experts, other group sizes) must reuse them
    groupings = [[0, 0, 0, 0, 0, 0], [0, 1, 1, 2, 2, 2], [3, 3, 1, 0, 2, 2], [1, 1, 1, 1, 1, 3], [2, 0, 1, 3, 0, 1],
                 [0, 0, 0, 3, 3, 3]]
    torch._dynamo.utils.counters.clear()
    compiled_frames = []
    for ids in groupings:
        experts = torch.tensor(ids)
        logits, loss = compiled(x, x, expert=experts)
        eager_logits, _ = pn(x, x, expert=experts)
        torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-4)
        loss.backward()
        compiled_frames.append(torch._dynamo.utils.counters["frames"]["total"])
    assert compiled_frames[0] > 0, "nothing was compiled"
    assert compiled_frames[2:] == [compiled_frames[1]] * (len(groupings) - 2), \
        f"new expert mixes compiled new frames: {compiled_frames}"
    # the grouped MLP product runs inside a compiled graph (fp32 on CPU: the batched product)
    grouped = {torch.bmm, getattr(torch, "_grouped_mm", torch.bmm)}
    assert any(n.target in grouped for gm in graphs for n in gm.graph.nodes), "the projected MLPs ran outside the graph"
