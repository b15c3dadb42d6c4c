"""A budget before training: ``--budget`` (FLOPs, or device-hours on a named device) sizes
the pretraining of ``speclm run``, ``grid`` and ``build`` before anything is trained.

The grid's cost is linear in the pretraining's length: every pretraining job costs
``methods.pretrain_steps`` times its cost per step, and the fine-tunes (at their step caps)
and evaluations do not depend on it (speclm.grid.dryrun.jobs). So the longest pretraining
that fits is ``floor((budget - fine-tunes - evaluations) / cost per step)`` steps; the
budget sets ``methods.pretrain_steps`` to it. A budget that cannot pay the fine-tunes, the
evaluations and a pretraining as long as its warmup is refused with that minimum.

Device-hours become FLOPs at the device's measured rate: ``h100`` at the training loop's
measured rate on one H100 (bench/RESULTS.md, as the dry run), ``cpu`` at this machine's
cached rate on the run's small model (speclm.grid.cpurate).

Two warnings before any training (stderr, ``speclm: warning: ...``): the pretraining
would read the generic train split more than :data:`MAX_PASSES` times (repeated text
teaches little), or it is less than :data:`MIN_RATIO` times the largest specialization
set (the paper's regime is 1,000x to 100,000x; below 100x the methods' differences
hardly show).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Optional

from ..core.errors import SpeclmError

MAX_PASSES = 4.0
MIN_RATIO = 100.0
DEVICES = ("h100", "cpu")
FORMS = "FLOPs (e.g. 3e15) or device-hours on a named device (e.g. 2h@h100, 0.5h@cpu)"
_FLOPS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?:flops?)?\s*$", re.I)
_HOURS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?:h|hours?|device-hours?)?\s*(?:@|\s+on\s+)\s*([a-z0-9]+)\s*$", re.I)


@dataclass
class Budget:
    text: str
    flops: float
    hours: Optional[float] = None
    device: Optional[str] = None
    rate_note: str = ""

    def describe(self) -> str:
        if self.hours is None:
            return f"{self.flops:.3g} FLOPs"
        return f"{self.hours:g} device-hours on {self.device} = {self.flops:.3g} FLOPs ({self.rate_note})"

    def in_units(self, flops: float, up: bool = False) -> str:
        """``flops`` in the budget's own unit (``up``: rounded up, so the number shown suffices)."""
        r = _up3 if up else (lambda x: x)
        if self.hours is None:
            return f"{r(flops):.3g} FLOPs"
        return f"{r(flops / self.flops * self.hours):.3g} device-hours on {self.device} ({r(flops):.3g} FLOPs)"


def _up3(x: float) -> float:
    """``x`` rounded up to 3 significant digits."""
    if x <= 0:
        return x
    e = math.floor(math.log10(x)) - 2
    return math.ceil(x / 10.0 ** e - 1e-9) * 10.0 ** e


def device_rate(run, device: str) -> tuple[float, str]:
    """FLOPs/s of a named device and where that number comes from."""
    from ..model.transformer import flops_per_token, named_shape
    from .dryrun import H100_NAME, H100_TOKENS_S, cpu_rate

    if device == "h100":
        return H100_TOKENS_S * flops_per_token(named_shape("paper-slm", 32768, max_seq_len=1024), 1024), H100_NAME
    cfg = run.config
    rate = cpu_rate(run, cfg.tokens.vocab_size, cfg.tokens.window)
    if rate is None:
        raise SpeclmError(f"the small model {cfg.model.small} is too large to time on this CPU; give the budget in FLOPs "
                          "or in device-hours on h100")
    return rate.flops_per_s, f"this CPU at {rate.describe()}"


def parse_budget(text: str, run) -> Budget:
    """``3e15`` / ``3e15flops`` (FLOPs) or ``2h@h100`` / ``0.5h@cpu`` (device-hours)."""
    m = _FLOPS.match(text or "")
    if m:
        value = float(m.group(1))
        if not (value > 0 and math.isfinite(value)):
            raise SpeclmError(f"--budget must be positive, got {text!r}")
        return Budget(text, value)
    m = _HOURS.match(text or "")
    if not m:
        raise SpeclmError(f"--budget {text!r} is not a budget; give {FORMS}")
    hours, device = float(m.group(1)), m.group(2).lower()
    if device not in DEVICES:
        raise SpeclmError(f"--budget {text!r}: unknown device {device!r}; named devices: {', '.join(DEVICES)} "
                          f"(or give FLOPs)")
    if not (hours > 0 and math.isfinite(hours)):
        raise SpeclmError(f"--budget must be positive, got {text!r}")
    rate, note = device_rate(run, device)
    return Budget(text, hours * 3600.0 * rate, hours, device, note)


@dataclass
class Sizing:
    budget: Budget
    steps: int  # methods.pretrain_steps that fits
    per_step: float  # FLOPs of every pretraining job, per step of methods.pretrain_steps
    rest: float  # fine-tunes (at their caps) and evaluations
    unknown: int  # jobs without an estimate (none once the tokens exist)
    pretrain_tokens: float  # tokens of the longest single pretraining at ``steps``

    @property
    def total(self) -> float:
        return self.steps * self.per_step + self.rest

    def lines(self) -> list[str]:
        b = self.budget
        out = [f"budget {b.describe()}: pretraining sized to {self.steps:,} steps (methods.pretrain_steps; "
               f"{self.pretrain_tokens:,.0f} tokens for the small model), {self.steps * self.per_step:.3g} FLOPs; "
               f"fine-tunes (at their caps) and evaluations {self.rest:.3g}; total at most {b.in_units(self.total)}"]
        if self.unknown:
            out.append(f"budget: {self.unknown} jobs have no estimate until the tokens exist; they are not counted")
        return out


def grid_shape(run, shards):
    """(vocab, window, domains, test tokens, train tokens) as the dry run reads them."""
    from .dryrun import _planned_domains

    cfg = run.config
    if shards is None:
        return cfg.tokens.vocab_size, cfg.tokens.window, _planned_domains(run), {}, {}
    window, domains = shards.window, shards.domains()
    train = {d: len(shards.windows(d, "train")) * window for d in domains}
    test = {}
    for d in domains:
        n = len(shards.windows(d, "test"))
        test[d] = (min(n, cfg.methods.eval_max_windows) if cfg.methods.eval_max_windows else n) * window
    return shards.vocab_size, window, domains, test, train


def _with_steps(run, steps: int):
    from ..core.run import Run

    cfg = run.config
    return Run(path=run.path, config=dataclasses.replace(cfg, methods=dataclasses.replace(cfg.methods, pretrain_steps=steps)))


def size_pretraining(run, budget: Budget, methods: list[str], shards, domains: Optional[list[str]] = None) -> Sizing:
    """The longest pretraining (in steps) that fits ``budget`` with every other job of the
    grid; a one-line error with the minimum budget when nothing fits."""
    from .dryrun import jobs

    vocab, window, all_domains, test, train = grid_shape(run, shards)
    domains = domains or all_domains
    sizes = run.config.methods.sizes
    one = jobs(_with_steps(run, 1), methods, sizes, domains, test, vocab, window, train)
    per_step = sum(j.flops for j in one if j.kind == "pretrain" and j.flops is not None)
    rest = sum(j.flops for j in one if j.kind != "pretrain" and j.flops is not None)
    unknown = sum(1 for j in one if j.flops is None)
    min_steps = max(1, run.config.train.warmup_steps)
    steps = int((budget.flops - rest) // per_step) if per_step > 0 else 0
    if steps < min_steps:
        need = rest + min_steps * per_step
        raise SpeclmError(
            f"--budget {budget.text} ({budget.flops:.3g} FLOPs) fits nothing: the fine-tunes and evaluations need "
            f"{rest:.3g} FLOPs and the shortest pretraining ({min_steps} steps, its warmup) {min_steps * per_step:.3g} "
            f"more; give at least {budget.in_units(need, up=True)}")
    t = run.config.train
    tokens = steps * t.batch_size * t.grad_accum * window
    return Sizing(budget, steps, per_step, rest, unknown, float(tokens))


def data_warnings(run, shards, pretrain_tokens: Optional[float] = None) -> list[str]:
    """The pretraining against the data: generic passes and the ratio to the specialization
    set (empty when the tokens are not built yet)."""
    from ..corpus.store import GENERIC
    from ..methods.sizes import parse_size

    if shards is None:
        return []
    cfg = run.config
    t = cfg.train
    if pretrain_tokens is None:
        steps = cfg.methods.pretrain_steps or t.max_steps
        pretrain_tokens = float(steps * t.batch_size * t.grad_accum * shards.window)
    generic = len(shards.windows(GENERIC, "train")) * shards.window
    out = []
    if generic and pretrain_tokens / generic > MAX_PASSES:
        out.append(f"the pretraining reads the generic train split {pretrain_tokens / generic:.1f} times "
                   f"({pretrain_tokens:,.0f} tokens over {generic:,} generic train tokens; more than about "
                   f"{MAX_PASSES:g} passes teaches little): give a larger generic set or a smaller budget")
    spec = 0
    for d in shards.domains():
        n = len(shards.windows(d, "train")) * shards.window
        for s in cfg.methods.sizes:
            spec = max(spec, min(parse_size(s) or n, n))
    if spec and pretrain_tokens / spec < MIN_RATIO:
        out.append(f"the pretraining ({pretrain_tokens:,.0f} tokens) is only {_times(pretrain_tokens / spec)}x the largest "
                   f"specialization set ({spec:,} tokens); the paper works at 1,000x to 100,000x and below "
                   f"{MIN_RATIO:g}x the methods' differences hardly show: raise the budget or use less domain text")
    return out


def _times(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.2g}"


def fresh_shards(run):
    from .dryrun import _fresh_tokens

    return _fresh_tokens(run)


def budget_override(run, budget_text: str, methods: list[str], domains: Optional[list[str]] = None,
                    echo=print, warn: bool = True) -> tuple[str, Sizing]:
    """Size the pretraining of ``run`` (its tokens built) to ``budget_text``: the
    ``methods.pretrain_steps=N`` override and the sizing (its lines echoed, warnings on stderr)."""
    import sys

    shards = fresh_shards(run)
    if shards is None:
        raise SpeclmError(f"--budget is sized against the run's tokens, which are not built at {run.tokens_dir}: "
                          f"run `speclm run --run {run.path} --until tokens` first")
    sizing = size_pretraining(run, parse_budget(budget_text, run), methods, shards, domains)
    for line in sizing.lines():
        echo(line)
    for w in data_warnings(run, shards, sizing.pretrain_tokens) if warn else []:
        print(f"speclm: warning: {w}", file=sys.stderr)
    return f"methods.pretrain_steps={sizing.steps}", sizing


def plan_with_budget(run, echo=print, methods: Optional[list[str]] = None, budget: Optional[str] = None,
                     domains: Optional[list[str]] = None):
    """The dry run (speclm.grid.dryrun.dry_run), its pretraining first sized to ``budget``
    when one is given, with the data warnings; writes nothing. Returns its jobs."""
    from .dryrun import dry_run, grid_methods

    methods = grid_methods(run, methods)
    shards = fresh_shards(run)
    sizing = None
    if budget:
        sizing = size_pretraining(run, parse_budget(budget, run), methods, shards, domains)
        run = _with_steps(run, sizing.steps)
    warnings = data_warnings(run, shards, sizing.pretrain_tokens if sizing else None)
    return dry_run(run, echo, methods, domains, sizing, warnings)
