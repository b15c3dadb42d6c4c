"""The CPU regime's small shape: speclm's real training loop against LlamaForCausalLM.

The ``cpu-regime`` preset pretrains a very small model (the ``regime-small`` shape: 2 layers,
d=48, 3 heads, SwiGLU 192, tied embeddings, a 1,024-token vocabulary: 0.12M parameters) on
batches of 32 windows of 128 tokens, one thread per process; that is the default here.
Here each measurement is a fresh process with one torch thread (``OMP_NUM_THREADS=1``) that
trains for ``--regime-steps`` steps on random tokens and reports its tokens/s (median of its
10-step intervals after the first):

- ``speclm loop``: ``speclm.train.loop.train`` exactly as the methods call it (fp32, AdamW,
  warmup + cosine, gradient clipping, metrics every 10 steps; the end's checkpoint is not
  timed), from this tree;
- ``speclm loop, before``: the same loop from the commit named by ``--before`` (default: the
  last one before issue 23 item 2's per-step work), exported with ``git archive``; skipped
  outside a git checkout or when the commit is missing;
- ``LlamaForCausalLM``: transformers' model built from the identical config
  (``speclm.inference.export.llama_config``), the same random batches, in a plain PyTorch
  step: forward, fp32 ``F.cross_entropy`` on its logits, backward, ``clip_grad_norm_``,
  ``torch.optim.AdamW`` with torch's defaults for the CPU, ``zero_grad``.

The variants alternate within each repeat (the machine's load hits all alike); the table
gives medians over repeats and the ratios. ``--isa avx2`` (bench/train.py) reaches the
workers through the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE_REV = "74ef813"  # main before the per-step work (issue 23 item 2)
LOG_EVERY = 10


def _worker(args: argparse.Namespace) -> None:
    """One measurement in this process; prints one JSON line."""
    sys.path.insert(0, args.speclm_root)
    import torch

    torch.set_num_threads(1)
    from speclm.model.transformer import ModelShape, Transformer

    torch.manual_seed(0)
    # the shape comes resolved by this tree, so an older tree trains the same tensors
    model = Transformer(ModelShape(**json.loads(args.shape_json)))
    sampler = _RandomTokens(args.vocab, args.seq, args.batch)
    if args.kind == "llama":
        rates, loss = _plain_llama(model, sampler, args.steps)
    else:
        rates, loss = _speclm_loop(model, sampler, args)
    import speclm

    print(json.dumps({"tok_s": statistics.median(rates[1:] or rates), "loss": loss, "speclm": speclm.__file__}),
          flush=True)


class _RandomTokens:
    """The loop's sampler interface: batch(position) -> (x, y), seeded by position."""

    def __init__(self, vocab: int, seq_len: int, batch: int):
        self.vocab, self.seq_len, self.batch_size = vocab, seq_len, batch

    def batch(self, position: int):
        import torch

        g = torch.Generator().manual_seed(position)
        data = torch.randint(0, self.vocab, (self.batch_size, self.seq_len + 1), generator=g)
        return data[:, :-1], data[:, 1:]


def _speclm_loop(model, sampler, args) -> tuple[list[float], float]:
    from speclm.core.sections import TrainConfig
    from speclm.train.loop import train

    cfg = TrainConfig(lr=3e-4, warmup_steps=5, batch_size=args.batch, dtype="fp32", max_steps=args.steps,
                      log_every=LOG_EVERY, eval_every=0, checkpoint_every=0, compile=args.compile)
    with tempfile.TemporaryDirectory() as tmp:
        train(model, sampler, cfg, tmp, device="cpu", progress=False)
        rows = [json.loads(x) for x in open(os.path.join(tmp, "metrics.jsonl")) if '"tok_s"' in x]
    return [r["tok_s"] for r in rows], rows[-1]["loss"]


def _plain_llama(model, sampler, steps: int) -> tuple[list[float], float]:
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from speclm.inference.export import llama_config

    cfg = llama_config(model, eos_id=0)
    for k in ("architectures", "model_type", "torch_dtype"):
        cfg.pop(k)
    peer = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa")).train()
    opt = torch.optim.AdamW(peer.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    rates, t0 = [], time.perf_counter()
    for step in range(steps):
        x, y = sampler.batch(step)
        logits = peer(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if (step + 1) % LOG_EVERY == 0:
            now = time.perf_counter()
            rates.append(LOG_EVERY * x.numel() / (now - t0))
            t0 = now
    return rates, value


def _export(rev: str, into: str) -> str | None:
    """The tree of commit ``rev`` under ``into``; None outside a git checkout or without it."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", rev + "^{commit}"],
                             capture_output=True, text=True, check=True).stdout.strip()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "speclm"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return into


def _shape_json(name: str, vocab: int, seq: int) -> str:
    """The named shape resolved by this tree, as ModelShape's fields."""
    import dataclasses

    sys.path.insert(0, str(ROOT))
    from speclm.model.transformer import named_shape

    return json.dumps(dataclasses.asdict(named_shape(name, vocab, max_seq_len=seq)))


def _measure(root: str, kind: str, vocab: int, args, compile_: bool = False) -> float:
    cmd = [sys.executable, __file__, "--worker", kind, "--speclm-root", root, "--vocab", str(vocab),
           "--shape-json", _shape_json(args.regime_shape, vocab, args.regime_seq), "--batch", str(args.regime_batch), "--seq", str(args.regime_seq),
           "--steps", str(args.regime_steps)] + (["--compile"] if compile_ else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"bench/regime.py: the {kind} worker failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["speclm"].startswith(root):
        raise SystemExit(f"bench/regime.py: the worker imported {got['speclm']}, not speclm under {root}")
    return got["tok_s"]


def regime_section(args) -> None:
    """Print the regime table (called by bench/train.py)."""
    sys.path.insert(0, str(ROOT))
    import torch

    variants = [("speclm loop", str(ROOT), "speclm", False)]
    if args.regime_compile:
        variants.append(("speclm loop, compiled", str(ROOT), "speclm", True))
    tmp = tempfile.TemporaryDirectory()
    before = None if args.before in ("", "none") else _export(args.before, tmp.name)
    if before:
        variants.append((f"speclm loop, before ({args.before})", before, "speclm", False))
    variants.append(("LlamaForCausalLM", str(ROOT), "llama", False))
    from speclm.model.transformer import Transformer, named_shape

    params = {v: sum(p.numel() for p in Transformer(named_shape(args.regime_shape, int(v))).parameters())
              for v in args.regime_vocabs.split(",") if v}
    print(f"\n# regime: {args.regime_shape} shape ({', '.join(f'{n / 1e6:.2f}M parameters at vocab {v}' for v, n in params.items())}), batch {args.regime_batch} x {args.regime_seq}, fp32, 1 thread per "
          f"process, {torch.backends.cpu.get_cpu_capability()} kernels; {args.regime_steps} steps per measurement, "
          f"median of {args.regime_repeats} alternated repeats (tokens per wall second)"
          + ("" if before or args.before in ("", "none") else f"; no 'before': commit {args.before} not found"))
    peer_name = variants[-1][0]
    for vocab in [int(v) for v in args.regime_vocabs.split(",") if v]:
        runs: dict[str, list[float]] = {v[0]: [] for v in variants}
        for rep in range(args.regime_repeats):
            order = variants if rep % 2 == 0 else variants[::-1]
            for name, root, kind, comp in order:
                runs[name].append(_measure(root, kind, vocab, args, comp))
        med = {k: statistics.median(v) for k, v in runs.items()}
        for name in med:
            line = f"vocab {vocab:>5}  {name:<34} {med[name]:>8,.0f} tok/s  {med[name] / med[peer_name]:5.2f}x {peer_name}"
            if before and name != f"speclm loop, before ({args.before})" and "speclm" in name:
                line += f"  {med[name] / med[f'speclm loop, before ({args.before})']:5.2f}x before"
            print(line + f"   (runs: {', '.join(f'{r:,.0f}' for r in runs[name])})", flush=True)
    tmp.cleanup()


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--no-regime", dest="regime", action="store_false",
                    help="skip the regime section (speclm's loop at cpu-regime's small shape against Llama, 1 thread)")
    ap.add_argument("--regime-only", action="store_true", help="only the regime section")
    ap.add_argument("--regime-shape", default="regime-small", help="a named shape (cpu-regime: regime-small)")
    ap.add_argument("--regime-vocabs", default="1024", help="comma-separated vocabulary sizes (cpu-regime: 1024)")
    ap.add_argument("--regime-batch", type=int, default=32)
    ap.add_argument("--regime-seq", type=int, default=128)
    ap.add_argument("--regime-steps", type=int, default=60)
    ap.add_argument("--regime-repeats", type=int, default=3)
    ap.add_argument("--regime-compile", action="store_true", help="also the loop with train.compile")
    ap.add_argument("--before", default=BEFORE_REV,
                    help=f"commit whose loop is the 'before' row (default {BEFORE_REV}; none = skip)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["speclm", "llama"], help=argparse.SUPPRESS)
    ap.add_argument("--speclm-root", default=str(ROOT), help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--shape-json", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--compile", action="store_true")
    add_arguments(ap)
    a = ap.parse_args()
    if a.worker:
        a.kind = a.worker
        _worker(a)
    else:
        regime_section(a)
