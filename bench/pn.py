"""Step cost of the projected network (SLM-pn) against the plain SLM, same shape, same tokens.

The paper's PN costs 1.64x the SLM per token (3.6 vs 2.2 A100-hours per 1B tokens,
docs/paper.md Table 2); our target is at most 1.3x. One training step = forward + backward +
AdamW step (the training loop's optimizer), on the same batch of windows. Configurations,
timed in turn inside every repeat (so machine load hits them alike); medians over repeats:

  slm          the plain small transformer (the peer)
  pn/1 expert  every window of the micro-batch in one cluster (methods.pn_batching=cluster)
  pn/mixed     windows drawn uniformly over k clusters (methods.pn_batching=mixed): with
               batch 16 and k 16, about 10 experts per micro-batch

Prints the medians, the ratios to the SLM and the parameter counts, including the paper's
shape (k=32, h=23: ~1,422M, docs/paper.md Table 7). Usage:

    .venv/bin/python bench/pn.py [--shape cpu-small --seq 128 --batch 16 --k 16 --h 12 --m 16 --repeats 5]

``--rules`` compares the paper's argmax instantiation with the histogram one on every
domain of a run (see :func:`compare_rules`):

    .venv/bin/python bench/pn.py --rules --run runs/pn-rules --preset tiny --set methods.pn_k=4 ...
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from speclm.model.projected import ProjectedNetwork, pn_param_counts
from speclm.model.transformer import Transformer, named_shape
from speclm.core.sections import TrainConfig
from speclm.train.loop import autocast, make_optimizer


def step_time(model, opt, x, y, dtype="fp32", **kw) -> float:
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with autocast(x.device, dtype):
        _, loss = model(x, y, **kw)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def compare_rules(args) -> None:
    """Argmax vs histogram instantiation on every domain of a run, with the plain SLM beside.

    Builds the run's missing stages, runs the grid for slm, slm-pn (most_frequent) and
    slm-pn-hist (eval/pn-rules.jsonl), and evaluates both instantiations of the pretrained
    network before fine-tuning. Prints one row per domain with its histogram entropy."""
    import math

    import numpy as np

    from speclm.core import atomic
    from speclm.train.validate import mean_nll
    from speclm.grid.experiment import config_hash, run_grid
    from speclm.methods import inputs
    from speclm.methods.base import Context
    from speclm.methods.slm_pn import entropy, load_projected
    from speclm.grid.pipeline import run_pipeline
    from speclm.core.run import open_run

    run = open_run(args.run, args.preset, args.set)
    run_pipeline(run)
    ctx = Context(run=run, log=lambda s: None)
    k = run.config.methods.pn_k
    run_grid(run, methods=["slm", "slm-pn", "slm-pn-hist"], sizes=args.sizes, name="pn-rules", log=lambda s: None)
    chash = config_hash(run)
    rows = [r for r in atomic.read_jsonl(run.path / "eval" / "pn-rules.jsonl") if r.get("config") == chash]
    by = {(r["method"], r["domain"], r["size"]): r for r in rows}
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    pn = load_projected(ctx.pretrain_dir("slm-pn") / "final")
    t = run.config.train
    print(f"run {run.path}: PN k={k} h={run.config.methods.pn_h} m={run.config.methods.pn_m}; "
          f"test perplexity; hist/argmax < 1 means the histogram helps")
    head = ["domain", "entropy", "top share", "no-FT argmax", "no-FT hist", "hist/argmax"]
    for s in sizes:
        head += [f"{s} slm", f"{s} argmax", f"{s} hist", f"{s} hist/argmax"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    nll = {"argmax": [], "hist": []}
    for d in inputs.domains(ctx):
        hist = np.asarray(inputs.clusters(ctx).histogram(k, d, "train"))
        test = inputs.shards(ctx).windows(d, "test")
        ppl = {}
        for name, vec in (("argmax", pn.expert_vector(int(np.argmax(hist)))), ("hist", pn.histogram_vector(hist))):
            with torch.no_grad():
                ppl[name] = math.exp(mean_nll(pn.materialize(vec), test, batch_size=t.batch_size)[0])
        cells = [d, f"{entropy(hist):.2f}", f"{hist.max():.2f}", f"{ppl['argmax']:.2f}", f"{ppl['hist']:.2f}",
                 f"{ppl['hist'] / ppl['argmax']:.3f}"]
        for s in sizes:
            r = {m: by.get((m, d, s)) for m in ("slm", "slm-pn", "slm-pn-hist")}
            if not all(r.values()):
                cells += ["–"] * 4
                continue
            nll["argmax"].append(r["slm-pn"]["nll"])
            nll["hist"].append(r["slm-pn-hist"]["nll"])
            cells += [f"{r['slm']['ppl']:.2f}", f"{r['slm-pn']['ppl']:.2f}", f"{r['slm-pn-hist']['ppl']:.2f}",
                      f"{r['slm-pn-hist']['ppl'] / r['slm-pn']['ppl']:.3f}"]
        print("| " + " | ".join(cells) + " |")
    if nll["argmax"]:
        a, h = (math.exp(sum(v) / len(v)) for v in (nll["argmax"], nll["hist"]))
        print(f"fine-tuned, macro over domains and sizes: argmax {a:.2f}, histogram {h:.2f}, ratio {h / a:.3f}")


class MixedExperts:
    """The loop's sampler interface with expert ids: random tokens, experts uniform in [0, k)."""

    def __init__(self, vocab, seq_len, batch, k):
        self.vocab, self.seq_len, self.batch_size, self.k = vocab, seq_len, batch, k

    def batch(self, position):
        g = torch.Generator().manual_seed(position)
        data = torch.randint(0, self.vocab, (self.batch_size, self.seq_len + 1), generator=g)
        return data[:, :-1], data[:, 1:], {"expert": torch.randint(0, self.k, (self.batch_size,), generator=g)}


def loop_compare(args) -> None:
    """PN through the real training loop, eager and with train.compile (the paper preset's
    setting): tokens/s (median of the logged intervals after the first) and total seconds."""
    import json
    import os
    import tempfile

    from speclm.train.loop import train

    shape = named_shape(args.shape, args.vocab, max_seq_len=args.seq, mlp=args.mlp)
    for comp in (False, True):
        torch.manual_seed(args.seed)
        pn = ProjectedNetwork(shape, args.k, args.h, args.m, kernel=args.kernel)
        cfg = TrainConfig(lr=3e-4, warmup_steps=5, batch_size=args.batch, dtype=args.dtype, compile=comp,
                          max_steps=args.loop_steps, log_every=5, eval_every=0, checkpoint_every=0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train(pn, MixedExperts(args.vocab, args.seq, args.batch, args.k), cfg, tmp, device=args.device, progress=False)
            wall = time.perf_counter() - t0
            rows = [json.loads(x) for x in open(os.path.join(tmp, "metrics.jsonl")) if '"tok_s"' in x]
        rates = [r["tok_s"] for r in rows[1:]] or [r["tok_s"] for r in rows]
        print(f"PN loop ({args.shape}, kernel {args.kernel}, k={args.k}, batch {args.batch} x {args.seq}, {args.dtype}), "
              f"compile={comp}: {statistics.median(rates):,.0f} tok/s (median of {len(rates)} intervals), "
              f"{wall:.0f} s in all, loss {rows[-1]['loss']:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", action="store_true", help="compare argmax and histogram instantiation on a run instead")
    ap.add_argument("--run", default="runs/pn-rules", help="--rules: the run folder (built if missing)")
    ap.add_argument("--preset", default=None, help="--rules: preset of a new run")
    ap.add_argument("--set", action="append", default=[], help="--rules: config override section.key=value")
    ap.add_argument("--sizes", nargs="*", default=None, help="--rules: specialization sizes (default methods.sizes)")
    ap.add_argument("--shape", default="cpu-small", help="named model shape (transformer.py)")
    ap.add_argument("--mlp", default="swiglu", choices=["swiglu", "plain"])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--h", type=int, default=12, help="capacity (paper ~0.72 k)")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast, as train.dtype")
    ap.add_argument("--kernel", default="grouped", choices=["grouped", "loop"], help="--loop-steps: PN's MLP kernel")
    ap.add_argument("--loop-steps", type=int, default=0,
                    help="instead: the training loop on PN with mixed micro-batches, eager then compiled, N steps each")
    args = ap.parse_args()
    if args.rules:
        return compare_rules(args)
    if args.loop_steps:
        return loop_compare(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    shape = named_shape(args.shape, args.vocab, max_seq_len=args.seq, mlp=args.mlp)
    cfg = TrainConfig(lr=1e-3)
    dev = torch.device(args.device)
    slm = Transformer(shape).to(dev)
    pn = ProjectedNetwork(shape, args.k, args.h, args.m).to(dev)
    pn_loop = ProjectedNetwork(shape, args.k, args.h, args.m, kernel="loop").to(dev)
    pn_loop.load_state_dict(pn.state_dict())
    opt_slm = make_optimizer(list(slm.parameters()), cfg, dev)
    opt_pn = make_optimizer(list(pn.parameters()), cfg, dev)
    opt_loop = make_optimizer(list(pn_loop.parameters()), cfg, dev)

    g = torch.Generator().manual_seed(args.seed)
    data = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
    x, y = data[:, :-1].to(dev), data[:, 1:].to(dev)
    one = torch.full((args.batch,), 3 % args.k)
    mixed = torch.randint(0, args.k, (args.batch,), generator=g)
    groups = int(mixed.unique().numel())
    one, mixed = one.to(dev), mixed.to(dev)
    dt = args.dtype

    runs = {
        "slm": lambda: step_time(slm, opt_slm, x, y, dt),
        "pn/1 expert": lambda: step_time(pn, opt_pn, x, y, dt, expert=one),
        f"pn/mixed ({groups} experts)": lambda: step_time(pn, opt_pn, x, y, dt, expert=mixed),
        "pn/mixed, kernel=loop": lambda: step_time(pn_loop, opt_loop, x, y, dt, expert=mixed),
    }
    for fn in runs.values():  # warm-up (allocator, optimizer state)
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(fn())

    tokens = args.batch * args.seq
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"shape {args.shape} ({args.mlp} MLP), seq {args.seq}, batch {args.batch} = {tokens} tokens/step; "
          f"PN k={args.k} h={args.h} m={args.m}; {where}, {args.dtype}; {args.repeats} repeats")
    c = pn.param_counts()
    print(f"parameters: SLM {slm.param_count() / 1e6:.2f}M, PN {c['total'] / 1e6:.2f}M "
          f"(bases {c['bases'] / 1e6:.2f}M, mixing {c['mixing']}), {c['total'] / slm.param_count():.2f}x")
    base = statistics.median(times["slm"])
    print(f"{'config':28s} {'median s/step':>14s} {'tokens/s':>10s} {'ratio to slm':>13s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} {med:14.3f} {tokens / med:10.0f} {med / base:13.2f}x")
    paper = pn_param_counts(named_shape("paper-slm", 32768), 32, 23, 32)
    print(f"paper shape (k=32, h=23, m=32): {paper['total'] / 1e6:,.0f}M total, {paper['inference'] / 1e6:.0f}M per "
          f"expert (docs/paper.md Table 7: 1,422M / 126M); paper's PN/SLM step cost: 3.6/2.2 = 1.64x")


if __name__ == "__main__":
    main()
