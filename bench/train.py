"""Training throughput: speclm's transformer against transformers.LlamaForCausalLM.

Both models are built from the identical config (``speclm.inference.export.llama_config``), get the
same batches, the same loss code (fp32 cross-entropy), the same AdamW and the same dtype,
on the same machine in the same run; measurements alternate between the two so machine
load hits both alike. Prints tokens/s for each, and the ratio ours / theirs.

On a GPU it also runs the paper's SLM shape (7 layers, d=1024, 32k vocabulary, 1024-token
windows) in bf16 and reports tokens/s and MFU (model FLOPs utilization, PaLM's count).

    python bench/train.py                      # CPU: cpu-small and cpu-large, fp32 and bf16; then the regime
    python bench/train.py --regime-only        # CPU: cpu-regime's small shape only (bench/regime.py)
    python bench/train.py --regime-only --isa avx2   # the same with AVX2 kernels only
    python bench/train.py --shapes cpu-small --dtypes fp32 --repeats 3
    python bench/train.py --compile            # also torch.compile (slow to compile on CPU)
    python bench/train.py --shapes none --loop-steps 60   # GPU only: the peer pairs and the real loop
    python bench/train.py --shapes none --peak --threads 1  # CPU: peak ratio of the real loop
    python bench/train.py --shapes none --peak --threads 1 --isa avx2  # the same with AVX2 kernels only

``--peak`` (CPU) measures how much of the machine the real loop uses: the fp32 matrix-product
rate at this thread count (a saturating 2048x1024 @ 1024x1024 product, and the loop's own
shapes), then speclm's training loop (``speclm.train.loop.train``, fp32) and evaluation
(``speclm.train.validate.window_nll`` under ``inference_mode``) on ``--peak-shape``, and prints
their model FLOP/s and ``peak ratio`` = model FLOP/s / saturating matrix-product rate.

The regime section (on by default; ``--no-regime`` skips it, ``--regime-only`` runs it alone;
bench/regime.py says how): speclm's real training loop at the CPU regime's small shape
(regime-small: 2 layers x d=48, tied embeddings, vocabulary 1024, batch 32 x 128, one thread
per process), the same
loop from the commit before the per-step work (``--before``), and LlamaForCausalLM of the
identical config in a plain PyTorch step; tokens/s and the ratios.

``--loop-steps N`` (GPU) also runs speclm's one training loop (``speclm.train.loop.train``:
bf16 autocast, torch.compile, fused AdamW, gradient clipping, metrics, a checkpoint at the
end) on the paper-slm shape for N steps of random tokens, and reports the loop's own
tokens/s and MFU (median of its logged intervals after the first), next to the bare step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext

# --isa avx2 (CPU): torch's own kernels, MKL and oneDNN restricted to AVX2, read when torch
# loads: on an AVX-512 host, a stand-in for the 2-core AVX2 machines the targets were set on
# (a lower bound on their time: this host's clock and caches stay). Set before importing torch.
ISA_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
if "--isa" in sys.argv and sys.argv[sys.argv.index("--isa") + 1:][:1] == ["avx2"]:
    os.environ.update(ISA_AVX2)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from regime import add_arguments as regime_arguments, regime_section  # noqa: E402
from speclm.inference.export import llama_config  # noqa: E402
from speclm.model.output_loss import CHUNK_ROWS  # noqa: E402
from speclm.model.transformer import Transformer, flops_per_token, named_shape  # noqa: E402
from speclm.train.loop import PEAK_BF16  # noqa: E402


def build_peer(model: Transformer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = llama_config(model, eos_id=0)
    for k in ("architectures", "model_type", "torch_dtype"):
        cfg.pop(k)
    peer = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa"))
    return peer


def ours_loss(model, x, y):
    logits, _ = model(x)
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))


def peer_loss(model, x, y):
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))


class Runner:
    def __init__(self, name, model, loss_fn, device, dtype, compile_):
        self.name, self.device, self.dtype = name, device, dtype
        self.model = model.to(device).train()
        self.fwd = torch.compile(self.model) if compile_ else self.model
        self.loss_fn = loss_fn
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=device.type == "cuda")
        self.times: list[float] = []  # wall seconds per step
        self.cpu_times: list[float] = []  # process CPU seconds per step (insensitive to other load)

    def step(self, x, y):
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.dtype == "bf16" else nullcontext()
        with ctx:
            loss = self.loss_fn(self.fwd, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def timed(self, x, y, steps):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step(x, y)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append((time.perf_counter() - t) / steps)
        self.cpu_times.append((time.process_time() - c) / steps)


def bench_pair(shape_name, vocab, seq, batch, device, dtype, compile_, repeats, steps, warmup, peer=True, mlp=None):
    torch.manual_seed(0)
    ours = Transformer(named_shape(shape_name, vocab, max_seq_len=seq, mlp=mlp))
    runners = [Runner("speclm", ours, ours_loss, device, dtype, compile_)]
    if peer:
        runners.append(Runner("LlamaForCausalLM", build_peer(ours), peer_loss, device, dtype, compile_))
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (batch, seq + 1), generator=g).to(device)
    x, y = data[:, :-1], data[:, 1:]
    for r in runners:
        for _ in range(warmup):
            r.step(x, y)
    for _ in range(repeats):  # alternate, so machine load hits both alike
        for r in runners:
            r.timed(x, y, steps)
    tok = batch * seq
    out = {r.name: tok / statistics.median(r.times) for r in runners}
    out.update({r.name + ":cpu": tok / statistics.median(r.cpu_times) for r in runners})
    out["flops_per_token"] = ours.flops_per_token(seq)
    out["params"] = ours.param_count()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="cpu-small,cpu-large")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="training steps per timed repeat")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile for both models")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU section even if CUDA exists")
    ap.add_argument("--gpu-batch", type=int, default=16)
    ap.add_argument("--loop-steps", type=int, default=0, help="GPU: also run the training loop for N steps")
    ap.add_argument("--loop-only", action="store_true", help="GPU: only the training loop (no peer pairs)")
    ap.add_argument("--loop-batches", default="", help="GPU: batch sizes for the loop (default: --gpu-batch)")
    ap.add_argument("--peak", action="store_true", help="CPU: the loop's peak ratio (see above)")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="CPU: avx2 restricts torch, MKL and oneDNN to AVX2 kernels (an AVX2 machine's stand-in)")
    ap.add_argument("--peak-shape", default="cpu-small", help="shape for --peak (a named shape or dial:N)")
    ap.add_argument("--peak-steps", type=int, default=30, help="loop steps for --peak")
    ap.add_argument("--eval-batch", type=int, default=32, help="windows per forward pass for --peak's evaluation")
    regime_arguments(ap)
    args = ap.parse_args()
    if args.regime_only:
        regime_section(args)
        return
    shapes = [] if args.shapes in ("", "none") else args.shapes.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak:
        peak_section(args)
    cpu = torch.device("cpu")
    print(f"# CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {args.batch} x seq {args.seq}, vocab {args.vocab}; median of {args.repeats} repeats x "
          f"{args.steps} steps (fwd+bwd+clip+AdamW)")
    print("# wall: tokens per wall second; cpu: tokens per process CPU second (robust to other jobs on the machine)")
    print(f"{'shape':<10} {'mode':<12} {'speclm tok/s':>13} {'Llama tok/s':>12} {'ratio':>6} "
          f"{'speclm tok/cpu-s':>17} {'Llama tok/cpu-s':>16} {'ratio':>6}")
    modes = [(d, False) for d in args.dtypes.split(",")] + ([(d, True) for d in args.dtypes.split(",")] if args.compile else [])
    for shape in shapes:
        for dtype, comp in modes:
            r = bench_pair(shape, args.vocab, args.seq, args.batch, cpu, dtype, comp, args.repeats, args.steps, args.warmup)
            ratio = r["speclm"] / r["LlamaForCausalLM"]
            mode = dtype + ("+compile" if comp else "")
            cratio = r["speclm:cpu"] / r["LlamaForCausalLM:cpu"]
            print(f"{shape:<10} {mode:<12} {r['speclm']:>13,.0f} {r['LlamaForCausalLM']:>12,.0f} {ratio:>5.2f}x "
                  f"{r['speclm:cpu']:>17,.0f} {r['LlamaForCausalLM:cpu']:>16,.0f} {cratio:>5.2f}x", flush=True)

    if torch.cuda.is_available() and not args.no_gpu:
        dev = torch.device("cuda")
        name = torch.cuda.get_device_name(dev)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        print(f"\n# GPU: {name}; paper-slm (7 layers, d=1024, vocab 32768), seq 1024, batch {args.gpu_batch}, bf16")
        for comp in () if args.loop_only else (False, True):
            tag = "+compile" if comp else ""
            # the paper's plain MLP has no Llama twin (export adds a zero matrix), so the
            # peer comparison uses the same shape with SwiGLU; MFU is reported for both
            r = bench_pair("paper-slm", 32768, 1024, args.gpu_batch, dev, "bf16", comp, args.repeats, 5, 3, peer=False)
            line = f"paper-slm (plain MLP) bf16{tag}: speclm {r['speclm']:,.0f} tok/s"
            if peak:
                line += f", MFU {r['speclm'] * r['flops_per_token'] / peak:.1%}"
            print(line, flush=True)
            r = bench_pair("paper-slm", 32768, 1024, args.gpu_batch, dev, "bf16", comp, args.repeats, 5, 3, mlp="swiglu")
            line = f"paper-slm (SwiGLU) bf16{tag}: speclm {r['speclm']:,.0f} tok/s, " \
                   f"Llama {r['LlamaForCausalLM']:,.0f} tok/s, ratio {r['speclm'] / r['LlamaForCausalLM']:.2f}x"
            if peak:
                line += f", MFU speclm {r['speclm'] * r['flops_per_token'] / peak:.1%} " \
                        f"Llama {r['LlamaForCausalLM'] * r['flops_per_token'] / peak:.1%}"
            print(line, flush=True)
        if args.loop_steps:
            for b in [int(v) for v in args.loop_batches.split(",") if v] or [args.gpu_batch]:
                loop_bench(dev, b, args.loop_steps, peak)
    if args.regime:
        regime_section(args)


def matmul_rate(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """fp32 FLOP/s of an (m x k) @ (k x n) product at the current thread count (median of runs)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    rates = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 5:
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * m * k * n / (time.perf_counter() - t0))
    return statistics.median(rates)


def product_ceiling(shape, batch: int, seq: int, sat: float) -> tuple[float, float]:
    """An upper bound on the loop's peak ratio at this shape: the time of the step's matrix
    products alone (each linear layer's forward, input-gradient and weight-gradient products
    and the output layer's, timed at their own shapes) plus attention's forward and backward,
    as if norms, activations, the loss's softmax and AdamW took no time. Returns (products'
    share of saturating speed, ceiling ratio = model FLOPs / that time / saturating rate)."""
    rows, d = batch * seq, shape.d_model
    n_up = (2 if shape.mlp == "swiglu" else 1) * shape.d_mlp
    layers = [(d, 3 * d), (d, d), (d, n_up), (shape.d_mlp, d)]
    seconds = flops = 0.0
    chunk = min(rows, CHUNK_ROWS)  # the output layer runs in chunks of rows (speclm.model.output_loss)
    for k, n, m, times in [(k, n, rows, shape.n_layer) for k, n in layers] + [(d, shape.vocab_size, chunk, rows / chunk)]:
        for m_, k_, n_ in ((m, k, n), (m, n, k), (k, m, n)):  # forward, dX, dW
            f = 2.0 * m_ * k_ * n_
            seconds += times * f / matmul_rate(m_, k_, n_, seconds=0.3)
            flops += times * f
    q = torch.randn(batch, shape.n_head, seq, shape.head_dim, requires_grad=True)
    k, v = torch.randn_like(q, requires_grad=True), torch.randn_like(q, requires_grad=True)
    took = []
    for _ in range(7):
        t0 = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        took.append(time.perf_counter() - t0)
    seconds += shape.n_layer * statistics.median(took[2:])
    model_flops = flops_per_token(shape, seq) * rows
    return flops / seconds / sat, model_flops / seconds / sat


def peak_section(args) -> None:
    """The real loop's and evaluation's model FLOP/s against the machine's fp32 matmul rate."""
    import json
    import tempfile

    from speclm.core.sections import TrainConfig
    from speclm.train.loop import train
    from speclm.train.validate import window_nll

    shape = named_shape(args.peak_shape, args.vocab, max_seq_len=args.seq)
    rows = args.batch * args.seq
    sat = matmul_rate(2048, 1024, 1024)
    own = {f"{rows}x{shape.d_model} @ {shape.d_model}x{shape.d_mlp}": matmul_rate(rows, shape.d_model, shape.d_mlp),
           f"{rows}x{shape.d_model} @ {shape.d_model}x{args.vocab} (output)": matmul_rate(rows, shape.d_model, args.vocab)}
    print(f"# peak: {torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} thread(s); fp32 matmul 2048x1024 @ 1024x1024: {sat / 1e9:.1f} GFLOP/s")
    for k, v in own.items():
        print(f"#   loop shape {k}: {v / 1e9:.1f} GFLOP/s ({v / sat:.2f} of saturating)")
    share, ceiling = product_ceiling(shape, args.batch, args.seq, sat)
    print(f"#   the step's matrix products at their own shapes: {share:.2f} of saturating; ceiling for the loop "
          f"(products and attention only, all else free): peak ratio {ceiling:.2f}")
    torch.manual_seed(0)
    model = Transformer(shape)
    fpt = model.flops_per_token(args.seq)
    cfg = TrainConfig(lr=3e-4, warmup_steps=5, batch_size=args.batch, dtype="fp32", max_steps=args.peak_steps,
                      log_every=5, eval_every=0, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        train(model, RandomTokens(args.vocab, args.seq, args.batch), cfg, tmp, device="cpu", progress=False)
        logged = [json.loads(x) for x in open(os.path.join(tmp, "metrics.jsonl")) if '"tok_s"' in x]
    rates = [r["tok_s"] for r in logged[1:]] or [r["tok_s"] for r in logged]
    tok_s = statistics.median(rates)
    print(f"train {args.peak_shape} fp32 batch {args.batch} x {args.seq}: {tok_s:,.0f} tok/s, model "
          f"{tok_s * fpt / 1e9:.1f} GFLOP/s, peak ratio {tok_s * fpt / sat:.2f}")

    class Win:  # windows of random tokens, the evaluation's interface
        window = args.seq

        def __len__(self):
            return 256

        def batch(self, idx):
            g = torch.Generator().manual_seed(int(idx[0]))
            return torch.randint(0, args.vocab, (len(idx), args.seq + 1), generator=g).numpy()

    window_nll(model, Win(), batch_size=args.eval_batch)  # warm-up
    t0 = time.perf_counter()
    window_nll(model, Win(), batch_size=args.eval_batch)
    ev_tok = 256 * args.seq / (time.perf_counter() - t0)
    ev_flops = ev_tok * fpt / 3  # forward only: a third of the training FLOPs per token
    print(f"eval {args.peak_shape} fp32 batch {args.eval_batch} x {args.seq}: {ev_tok:,.0f} tok/s, model "
          f"{ev_flops / 1e9:.1f} GFLOP/s, peak ratio {ev_flops / sat:.2f}", flush=True)


class RandomTokens:
    """A sampler of the loop's interface: batch(position) -> (x, y), seeded by position."""

    def __init__(self, vocab, seq_len, batch):
        self.vocab, self.seq_len, self.batch_size = vocab, seq_len, batch

    def batch(self, position):
        g = torch.Generator().manual_seed(position)
        data = torch.randint(0, self.vocab, (self.batch_size, self.seq_len + 1), generator=g)
        return data[:, :-1], data[:, 1:]


def loop_bench(dev, batch, steps, peak, shape="paper-slm", vocab=32768, seq=1024, dtype="bf16"):
    import json
    import tempfile

    from speclm.core.sections import TrainConfig
    from speclm.train.loop import train

    torch.manual_seed(0)
    model = Transformer(named_shape(shape, vocab, max_seq_len=seq))
    cfg = TrainConfig(lr=3e-4, warmup_steps=10, batch_size=batch, dtype=dtype, compile=True, max_steps=steps,
                      log_every=5, eval_every=0, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train(model, RandomTokens(vocab, seq, batch), cfg, tmp, device=dev, progress=False)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in open(os.path.join(tmp, "metrics.jsonl")) if '"tok_s"' in x]
    rates = [r["tok_s"] for r in rows[1:]] or [r["tok_s"] for r in rows]
    tok_s = statistics.median(rates)
    line = (f"speclm training loop, {shape} {dtype}+compile, batch {batch} x {seq}: {tok_s:,.0f} tok/s "
            f"(median of {len(rates)} intervals of 5 steps), {res.steps} steps, loss {rows[-1]['loss']:.3f}, "
            f"{wall:.0f} s with compile and checkpoint")
    if peak:
        line += f", MFU {tok_s * model.flops_per_token(seq) / peak:.1%}"
    print(line, flush=True)


if __name__ == "__main__":
    main()
