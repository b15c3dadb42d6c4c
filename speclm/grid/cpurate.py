"""This machine's training rate (FLOPs/s on its CPU), for the dry run and for budgets in
CPU-hours: measured once per machine and model shape, kept with the date it was taken.

One timing is a forward and backward pass of the run's small model on a batch of windows;
the rate is the *best* of several timings after a warm-up, so a measurement taken beside a
busy process reads the machine, not the neighbour (a busy machine slows some timings, it
never speeds one up). The result is cached in ``<cache>/machine/cpu-rate.json`` (the
download cache: ``corpus.cache_dir``, $SPECLM_CACHE or ~/.cache/speclm) under a key of the
machine (host name, CPU model, cores, torch version and threads, the ISA limits of the
environment) and the shape. Every call times the steps again (well under a second for the
shapes presets use) and keeps the better of that and the cached reading, so one reading
taken beside a busy process cannot stay in the cache: the next quiet call replaces it.
``SPECLM_REMEASURE_CPU=1`` ignores the cache (the new timing replaces it, better or not).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core import atomic
from ..core.manifest import hash_obj

TIMINGS = 6  # timed steps after one warm-up; the best one counts
ISA_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


@dataclass
class CpuRate:
    flops_per_s: float
    measured: str  # ISO date and time (UTC) of the measurement
    cached: bool  # read from the cache (False: measured by this call)
    what: str  # what was timed

    def describe(self) -> str:
        how = "cached" if self.cached else "measured now"
        return (f"{self.flops_per_s / 1e9:.2f} GFLOP/s, the best of {TIMINGS} timed steps of {self.what} "
                f"({how}; measured {self.measured})")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(shape_sig: dict) -> str:
    import torch

    return hash_obj({"host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "isa": {v: os.environ.get(v, "") for v in ISA_VARS},
                     "shape": shape_sig})[:16]


def cache_file(cache_dir: str = "") -> Path:
    from ..corpus.sources.fetch import cache_root

    return cache_root(cache_dir) / "machine" / "cpu-rate.json"


def _time_steps(model, x, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def measure(shape, window: int, batch: int, what: str, cache_dir: str = "") -> CpuRate:
    """The rate of training steps of ``shape`` on this CPU: one warm-up, then the best of
    :data:`TIMINGS` steps, or the cached reading when that was better (a busy machine slows
    a timing, it never speeds one up); the better one is cached with its date."""
    import torch

    from ..model.transformer import Transformer, flops_per_token

    sig = {"d_model": shape.d_model, "n_layer": shape.n_layer, "vocab": shape.vocab_size, "window": window,
           "batch": batch, "mlp": shape.mlp}
    key = machine_key(sig)
    path = cache_file(cache_dir)
    cache = {}
    if path.is_file():
        try:
            cache = atomic.read_required_json(path, "")
        except Exception:  # a damaged cache is measured again, never an error
            cache = {}
    cache = cache if isinstance(cache, dict) else {}
    hit = cache.get(key)
    model = Transformer(shape)
    x = torch.randint(0, shape.vocab_size, (batch, window + 1), generator=torch.Generator().manual_seed(0))
    times = _time_steps(model, x, TIMINGS + 1)[1:]
    rate = batch * window * flops_per_token(shape, window) / min(times)
    if (isinstance(hit, dict) and float(hit.get("flops_per_s", 0) or 0) >= rate
            and os.environ.get("SPECLM_REMEASURE_CPU") != "1"):
        return CpuRate(float(hit["flops_per_s"]), str(hit.get("measured", "?")), True, str(hit.get("what", what)))
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cache[key] = {"flops_per_s": rate, "measured": when, "what": what, "timings_s": times, "shape": sig,
                  "host": platform.node(), "cpu": _cpu_model()}
    try:
        atomic.write_json(path, cache)
    except OSError:  # a read-only cache: the rate still serves this call
        pass
    return CpuRate(rate, when, False, what)


def cached_rate(cache_dir: str = "") -> Optional[CpuRate]:
    """The most recent rate cached on this host (any shape), or None."""
    path = cache_file(cache_dir)
    try:
        cache = atomic.read_required_json(path, "") if path.is_file() else {}
    except Exception:
        return None
    mine = [v for v in cache.values() if isinstance(v, dict) and v.get("host") == platform.node() and v.get("flops_per_s")]
    if not mine:
        return None
    v = max(mine, key=lambda v: str(v.get("measured", "")))
    return CpuRate(float(v["flops_per_s"]), str(v.get("measured", "?")), True, str(v.get("what", "")))
