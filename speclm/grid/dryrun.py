"""``speclm run --dry-run``: validate a run's config against its corpus and print every job
of the pipeline (pretrainings, specializations, evaluations) with its tokens, FLOPs and
estimated device-hours, then the totals. Nothing is written and nothing is trained.

What is checked up front (the same checks the grid makes later, after hours of data
stages): the pretraining budget is positive, each method's settings (``Method.check``),
every clustering a method reads is in ``clusters.ks``, every size parses, and, when the
run's tokens are built and match the config, every size against every domain's train
split (one line naming the domain and its size). Without tokens, the plan says what will
be checked once they exist.

Estimates: training FLOPs are the loop's (``flops_per_token``: 6N plus attention; a
projected network adds its weight materialization); an evaluation is a forward pass, a
third of that. Fine-tuning jobs are counted at their step caps (early stopping ends them
sooner), so the totals are upper bounds. Device-hours use one measured rate:

* a named GPU: one H100 80GB at the 524,049 tokens/s the training loop measured at the
  paper's SLM shape (bench/RESULTS.md: batch 32 x 1,024, bf16, compiled, 43.3% MFU);
  other shapes at the same FLOP rate (the same MFU);
* "this CPU", for the CPU-sized presets: a rate measured here in a second (training
  steps of the run's small model, the fastest after the first), at the same FLOP rate for the other shapes.
"""

from __future__ import annotations

import math

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from ..core.errors import SpeclmError

H100_TOKENS_S = 524_049.0  # bench/RESULTS.md, "GPU: the paper's SLM shape on one H100"
H100_NAME = "one H100 80GB at the measured 524,049 tokens/s of paper-slm (bench/RESULTS.md)"
CPU_PROBE_MAX_PARAMS = 50e6  # larger small models are not probed on the CPU (a step takes too long)


@dataclass
class Job:
    kind: str  # pretrain | specialize | evaluate
    name: str
    tokens: Optional[float]  # None: not known before the tokens are built
    flops: Optional[float]
    note: str = ""


def _shapes(run, vocab: int, window: int):
    from ..model.transformer import named_shape

    m = run.config.model
    return {w: named_shape(m.small if w == "small" else m.large, vocab, max_seq_len=window, mlp=m.mlp,
                           tie_embeddings=m.tie_embeddings) for w in ("small", "large")}


def _fresh_tokens(run):
    """The run's token shards when they are built and match the config, else None."""
    from ..core import manifest
    from ..tokens import stage as tokens_stage

    try:
        inputs = tokens_stage._inputs(run)
    except SpeclmError:
        return None
    if not manifest.is_fresh(run.tokens_dir, tokens_stage.STAGE, tokens_stage._stage_config(run), inputs):
        return None
    from ..tokens.shards import TokenShards

    return TokenShards(run.tokens_dir)


def check(run, ctx, methods: list[str], sizes: list[str], shards) -> list[str]:
    """Refuse (SpeclmError, one line) what the grid would refuse; return what was checked."""
    from ..methods import base
    from ..methods.pretraining import pretrain_steps
    from ..methods.sizes import size_label, size_windows

    pretrain_steps(ctx)
    ks = set(run.config.clusters.ks)
    for m in methods:
        obj = base.get(m)
        obj.check(ctx)
        for k in obj.cluster_ks(ctx):
            if k not in ks:
                raise SpeclmError(f"{m} reads the clustering k={k}, which clusters.ks ({sorted(ks)}) does not build; add it")
    labels = [size_label(s) for s in sizes]
    if shards is None:
        return [f"sizes {', '.join(labels)}: parsed; each will be checked against every domain's train split once "
                f"the tokens are built (the grid refuses a size a domain cannot hold, naming both)"]
    out = []
    for d in shards.domains():
        n = len(shards.windows(d, "train"))
        for s in sizes:
            size_windows(s, n, shards.window, d)
        out.append(f"{d}: {n * shards.window:,} train tokens; sizes {', '.join(labels)} fit")
    return out


def jobs(run, methods: list[str], sizes: list[str], domains: list[str], test_tokens: dict, vocab: int, window: int,
         train_tokens: Optional[dict] = None):
    """Every job of the grid for ``methods`` x ``domains`` x ``sizes``, each once.

    A fine-tune is counted at its cap: ``methods.finetune_max_epochs`` passes over the size's
    tokens (slm-nopt: ``nopt_max_epochs``), bounded by ``methods.finetune_max_steps`` when
    given; a size "all" needs the domain's train tokens (known once the tokens exist). With
    operating curves (methods.curve_fractions, curve_methods) every point is one more
    specialization and evaluation, named "curve <f>"."""
    from ..methods.curves import units
    from ..methods.sizes import parse_size, size_label
    from ..model.transformer import flops_per_token, param_breakdown

    cfg = run.config
    t, m = cfg.train, cfg.methods
    shape = _shapes(run, vocab, window)
    fpt = {w: flops_per_token(s, window) for w, s in shape.items()}
    fpt["pn"] = fpt["small"] + 6.0 * m.pn_h * param_breakdown(shape["small"])["mlp"] / window
    per_step = t.batch_size * t.grad_accum * window
    steps = m.pretrain_steps or t.max_steps
    out: dict[tuple, Job] = {}

    snapped = {u for x in methods if m.curve_fractions and x in m.curve_methods for u in units(x)}

    def pretrain(key, which, share=1.0, note=""):
        if key[0] in snapped and not any(str(k).startswith("seed ") for k in key):
            note = "; ".join(x for x in (note, f"snapshots at {', '.join(map(repr, m.curve_fractions))}") if x)
        if m.budget == "flops":
            flops = steps * share * per_step * fpt["small"]
            tokens = flops / fpt[which]
        else:
            tokens = steps * share * per_step
            flops = tokens * fpt[which]
        out.setdefault(("pretrain",) + key, Job("pretrain", " / ".join(key), tokens, flops, note))

    def train_job(kind, key, which, n_steps, batch, extra_fpt=0.0, note=""):
        tokens = n_steps * batch * window
        out.setdefault((kind,) + key, Job(kind, " / ".join(key), tokens, tokens * (fpt[which] + extra_fpt), note))

    ft_batch = m.finetune_batch_size or t.batch_size
    bounds = dict(zip([size_label(s) for s in sizes], m.finetune_max_steps))

    def cap_of(size: str, domain: str, epochs: float) -> int:
        tokens = parse_size(size) or (train_tokens or {}).get(domain)
        bound = bounds.get(size, 0)
        if tokens is None:
            return bound
        steps = math.ceil(epochs * tokens / (ft_batch * t.grad_accum * window))
        return min(steps, bound) if bound > 0 else steps

    def specialize(meth: str, d: str, s: str, sd: tuple) -> None:
        cap = cap_of(s, d, m.finetune_max_epochs)
        which = "large" if meth in ("llm", "llm-lora") else "small"
        if meth == "slm-nopt":
            n = cap_of(s, d, m.nopt_max_epochs or m.finetune_max_epochs)
            train_job("specialize", (meth, d, s, *sd), "small", n, ft_batch, note="from scratch, cap")
        elif meth == "llm-lora":
            train_job("specialize", (meth, d, s, *sd), "large", int(cap * m.lora_steps_factor), ft_batch, note="cap")
        elif meth == "slm-d":
            train_job("specialize", ("llm", d, s, *sd), "large", cap, ft_batch, note="teacher, cap")
            train_job("specialize", (meth, d, s, *sd), "small", cap, ft_batch, fpt["large"] / 3, "student + teacher forward, cap")
        else:
            train_job("specialize", (meth, d, s, *sd), which, cap, ft_batch, note="cap")
        tt = test_tokens.get(d)
        out.setdefault(("evaluate", meth, d, s, *sd), Job("evaluate", " / ".join((meth, d, s, *sd)), tt,
                                                    None if tt is None else tt * fpt[which] / 3))

    from ..methods import base

    ctx = base.Context(run=run, log=lambda s: None)
    obj = {meth: base.get(meth) for meth in methods}
    seeded = m.seed_methods
    for meth in methods:
        for i in range(m.seeds if (not seeded or meth in seeded) else 1):
            sd = (f"seed {i}",) if i else ()  # each seed pretrains and fine-tunes again
            for d in domains:
                if meth in ("slm", "slm-d"):
                    pretrain(("slm", *sd), "small")
                if meth in ("llm", "llm-lora", "slm-d"):
                    pretrain(("llm", *sd), "large", note="large shape")
                if obj[meth].needs_domain_for_pretrain:  # per domain and specialization set (its histogram)
                    share = obj[meth].budget_share(ctx)  # slm-is, slm-dsir: methods.per_domain_budget; slm-is-full: 1
                    for sz in [size_label(x) for x in sizes]:
                        pretrain((meth, d, sz, *sd), "small", share, note="per domain and set"
                                 + (f", {share:g} of the budget" if share != 1 else ", the full budget"))
                if meth == "slm-mix":
                    for e in range(m.mix_k):
                        pretrain(("slm-mix", f"expert {e}", *sd), "small", 1.0 / m.mix_k)
                if meth in ("slm-pn", "slm-pn-hist"):
                    pretrain(("slm-pn", *sd), "pn", note=f"k={m.pn_k} h={m.pn_h}; by FLOPs, the measured PN time is in bench/RESULTS.md")
                for s in [size_label(x) for x in sizes]:
                    specialize(meth, d, s, sd)
    for f in m.curve_fractions:  # operating curves: every point specialized from its snapshot and evaluated
        for meth in [x for x in methods if x in m.curve_methods]:
            for d in domains:
                for s in [size_label(x) for x in sizes]:
                    specialize(meth, d, s, (f"curve {f!r}",))
    return list(out.values())


def cpu_rate(run, vocab: int, window: int):
    """This CPU's rate on training steps of the run's small model (speclm.grid.cpurate: the
    best of several timings, cached per machine with its date), or None when the model is
    too large to time here."""
    from ..model.transformer import param_breakdown
    from .cpurate import measure

    import torch

    shape = _shapes(run, vocab, window)["small"]
    if param_breakdown(shape)["total"] > CPU_PROBE_MAX_PARAMS:
        return None
    batch = max(1, min(run.config.train.batch_size, 8))
    before = torch.get_num_threads()
    torch.set_num_threads(worker_threads(run))  # one grid worker's threads (speclm.grid.executor)
    try:
        return measure(shape, window, batch, f"{run.config.model.small} (batch {batch} x {window}, "
                       f"{torch.get_num_threads()} thread(s))", run.config.corpus.cache_dir)
    finally:
        torch.set_num_threads(before)


def worker_threads(run) -> int:
    """Torch threads of one local grid worker: the cores shared out (speclm.grid.executor)."""
    import os

    return max(1, (os.cpu_count() or 1) // max(1, run.config.methods.grid_workers))


def _duration(flops: Optional[float], rate: float) -> str:
    if flops is None:
        return "?"
    sec = flops / rate
    for scale, unit in ((3600.0, "h"), (60.0, "min"), (1.0, "s")):
        if sec >= scale:
            return f"{sec / scale:,.3g} {unit}"
    return f"{sec * 1e3:.3g} ms"


def _fmt(v: Optional[float], unit: str = "") -> str:
    if v is None:
        return "?"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.1f}{suffix}{unit}"
    return f"{v:.0f}{unit}"


def grid_methods(run, methods: Optional[list[str]] = None) -> list[str]:
    """The methods the grid computes: ``methods``, else methods.grid_methods, else every known
    one but the ablations (speclm.methods.base.default_methods)."""
    from ..methods import base
    from ..report.results import order_methods

    return order_methods(methods or run.config.methods.grid_methods or base.default_methods())


def dry_run(run, echo: Callable[[str], None] = print, methods: Optional[list[str]] = None,
            domains: Optional[list[str]] = None, sizing=None, warnings: Iterable[str] = ()) -> list[Job]:
    """Validate ``run``'s config against its corpus and print the plan; writes nothing.
    ``domains``: only these domains' jobs; ``sizing`` (speclm.grid.budgeting.Sizing: the
    pretraining already sized to a budget) and ``warnings`` are printed after the totals
    (speclm.grid.budgeting.plan_with_budget computes both)."""
    from ..methods import base
    from ..model.transformer import flops_per_token, named_shape

    cfg, only = run.config, domains
    notes: list[str] = []  # what the methods' checks log (e.g. an ablation that repeats its method)
    ctx = base.Context(run=run, log=notes.append)
    methods = grid_methods(run, methods)
    shards = _fresh_tokens(run)
    checked = check(run, ctx, methods, cfg.methods.sizes, shards)
    if shards is not None:
        vocab, window, domains = shards.vocab_size, shards.window, shards.domains()
        test, train = {}, {d: len(shards.windows(d, "train")) * window for d in domains}
        for d in domains:
            n = len(shards.windows(d, "test"))
            test[d] = (min(n, cfg.methods.eval_max_windows) if cfg.methods.eval_max_windows else n) * window
        where = f"tokens built at {run.tokens_dir}"
    else:
        vocab, window = cfg.tokens.vocab_size, cfg.tokens.window
        domains, test, train = _planned_domains(run), {}, {}
        where = f"tokens not built yet at {run.tokens_dir}: the domains are the corpus config's; test tokens unknown"
    domains = [d for d in domains if d in (only or domains)]
    echo(f"dry run of {run.path} (preset {cfg.name}): nothing will be written; {where}")
    for line in checked:
        echo(f"  checked: {line}")
    all_jobs = jobs(run, methods, cfg.methods.sizes, domains, test, vocab, window, train)
    ref = H100_TOKENS_S * flops_per_token(named_shape("paper-slm", 32768, max_seq_len=1024), 1024)
    rates = [("H100", ref, H100_NAME)]
    cpu = cpu_rate(run, vocab, window)
    if cpu is not None:
        rates.append(("this CPU", cpu.flops_per_s, f"this CPU at {cpu.describe()}"))
    for label, _, name in rates:
        echo(f"  {label}: {name}; other shapes at the same FLOP rate (a shape smaller than the measured one "
             f"reaches a lower MFU: its hours are lower bounds)")
    echo(f"{'job':10s} {'what':44s} {'tokens':>9s} {'FLOPs':>9s} " + " ".join(f"{lb:>11s}" for lb, _, _ in rates))
    order = {"pretrain": 0, "specialize": 1, "evaluate": 2}
    all_jobs.sort(key=lambda j: order[j.kind])  # stable: the grid's order within a kind
    for j in all_jobs:
        hours = " ".join(f"{_duration(j.flops, r):>11s}" for _, r, _ in rates)
        echo(f"{j.kind:10s} {j.name[:44]:44s} {_fmt(j.tokens):>9s} {'?' if j.flops is None else f'{j.flops:.3g}':>9s} {hours}"
             + (f"  ({j.note})" if j.note else ""))
    for kind in ("pretrain", "specialize", "evaluate", None):
        sel = [j for j in all_jobs if kind in (None, j.kind) and j.flops is not None]
        flops = sum(j.flops for j in sel)
        unknown = sum(1 for j in all_jobs if kind in (None, j.kind) and j.flops is None)
        hours = ", ".join(f"{_duration(flops, r)} on {lb}" for lb, r, _ in rates)
        echo(f"total {kind or 'all'}: {len([j for j in all_jobs if kind in (None, j.kind)])} jobs, {flops:.3g} FLOPs, "
             f"{hours}" + (f" ({unknown} without an estimate until the tokens exist)" if unknown else ""))
    workers = max(1, cfg.methods.grid_workers)
    if cpu is not None and workers > 1:
        flops = sum(j.flops for j in all_jobs if j.flops is not None)
        echo(f"this CPU with methods.grid_workers = {workers} local workers of {worker_threads(run)} thread(s) each: "
             f"about {_duration(flops / workers, cpu.flops_per_s)} of grid wall if the jobs pack evenly (the data "
             f"stages not counted)")
    echo("fine-tuning jobs are counted at their step caps (early stopping ends them sooner): totals are upper bounds")
    for line in sizing.lines() if sizing else []:
        echo(line)
    for w in [*notes, *warnings]:
        echo(f"warning: {w}")
    return all_jobs


def _planned_domains(run) -> list[str]:
    """The domains the corpus will hold (before the tokens exist)."""
    from ..corpus import store

    try:
        return store.list_domains(run.corpus_dir)
    except (SpeclmError, OSError):
        pass
    cfg = run.config.corpus
    if cfg.source == "default":
        from ..corpus.sources.catalog import DOMAIN_NAMES

        return [d for d in DOMAIN_NAMES if not cfg.domains or d in cfg.domains]
    if cfg.source == "tiny":
        from ..corpus.default import TINY_DIR

        return sorted(f.name[: -len(".jsonl.gz")] for f in TINY_DIR.glob("*.jsonl.gz") if f.name != "generic.jsonl.gz")
    return [f"(the domains of {cfg.source})"]
