"""Cost accounting: ``cost.json`` with tokens, FLOPs, wall seconds, device kind and
device-hours, kept apart per phase.

A run's own numbers go under its phase (``pretrain`` or ``specialize``). A run that starts
from another run's checkpoint passes that run's costs as ``prior``; they are carried over
(and added when the phase is the same), so the ``cost.json`` of a fine-tuned model holds
the generic cost it was built on and its own specialization cost, ready for the paper's
``C_total(N) = C_generic + N * C_specialization``::

    {"phase": "specialize",
     "pretrain":   {"tokens": ..., "flops": ..., "wall_seconds": ..., "device_hours": ..., ...},
     "specialize": {"tokens": ..., ...}}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional

import torch

from ..core import atomic
from ..core.errors import SpeclmError

PHASES = ("pretrain", "specialize")
COST_FILE = "cost.json"


def device_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores)" if device.type == "cpu" else device.type


@dataclass
class PhaseCost:
    tokens: int = 0
    flops: float = 0.0
    wall_seconds: float = 0.0
    device_hours: float = 0.0
    steps: int = 0
    device_kind: str = ""
    n_devices: int = 1

    def plus(self, other: "PhaseCost") -> "PhaseCost":
        kinds = [k for k in (self.device_kind, other.device_kind) if k]
        return PhaseCost(
            tokens=self.tokens + other.tokens,
            flops=self.flops + other.flops,
            wall_seconds=self.wall_seconds + other.wall_seconds,
            device_hours=self.device_hours + other.device_hours,
            steps=self.steps + other.steps,
            device_kind=" + ".join(dict.fromkeys(kinds)),
            n_devices=max(self.n_devices, other.n_devices),
        )


def check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise SpeclmError(f"training phase must be one of {', '.join(PHASES)}, got {phase!r}")


def combine(phase: str, own: PhaseCost, prior: Optional[Mapping] = None) -> dict:
    """The cost.json document: ``prior``'s phases plus this run's ``own`` under ``phase``."""
    check_phase(phase)
    doc: dict = {"phase": phase}
    for p in PHASES:
        if prior and p in prior:
            doc[p] = dict(prior[p])
    base = PhaseCost(**doc[phase]) if phase in doc else PhaseCost()
    doc[phase] = asdict(base.plus(own))
    return doc


def write_cost(out_dir: str | Path, doc: Mapping) -> None:
    atomic.write_json(Path(out_dir) / COST_FILE, dict(doc))


def read_cost(path: str | Path) -> dict:
    """Read ``cost.json`` from a run folder or a checkpoint folder (or its parent)."""
    path = Path(path)
    for cand in (path if path.suffix == ".json" else path / COST_FILE, path.parent / COST_FILE):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise SpeclmError(f"{cand} is not valid JSON: {e}")
    raise SpeclmError(f"no {COST_FILE} found at {path}")
