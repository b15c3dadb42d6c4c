"""Operating curves over pretraining cost, the methods' side (docs/paper.md Table 8, Figs. 3-4).

``methods.curve_methods`` names methods with one shared generic pretraining, and
``methods.curve_fractions`` the fractions f of it at which the curve is drawn. Then:

* every pretraining such a method reads (its "unit": ``slm``, ``llm`` for llm and
  llm-lora, ``slm-mix`` with one training per expert, ``slm-pn`` for slm-pn and
  slm-pn-hist) also saves ``snapshots/f-<f>/`` in each of its training folders
  (:mod:`speclm.train.snapshots`), and its job key says which (:func:`key_part`): an old
  pretraining without them is rerun; a pretraining that no curve reads keeps its key;
* under a curve view of the run (:meth:`speclm.core.run.Run.with_curve`) the method's
  specialization starts from the snapshot instead of ``final/`` (:func:`start`), with the
  same fine-tuning protocol, in ``curves/f-<f>/specialize/<method>/<domain>/<size>/``.

Seed 0 only: seed views (``Run.with_seed``) pretrain without snapshots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..core.errors import SpeclmError
from ..train.snapshots import SNAPSHOTS, Snapshots, snapshot_dir
from .base import Context, get


def units(method: str) -> tuple[str, ...]:
    """The methods whose pretraining ``method`` reads (``Method.pretrains``, else its own or
    its ``pretrain_from``), as the grid schedules them."""
    obj = get(method)
    uses = getattr(obj, "pretrains", None)
    return tuple(uses) if uses is not None else (getattr(obj, "pretrain_from", None) or method,)


def fractions_for(ctx: Context, unit: str) -> list[float]:
    """The snapshot fractions of pretraining ``unit``: the curve fractions when a curve
    method reads it (seed 0 only), else none."""
    m = ctx.config.methods
    if not m.curve_fractions or ctx.run.seed_offset:
        return []
    return list(m.curve_fractions) if any(unit in units(name) for name in m.curve_methods) else []


def key_part(ctx: Context, unit: str) -> dict:
    """What the job key of pretraining ``unit`` adds for its snapshots: nothing without them,
    so pretrainings that no curve reads (and every run without curves) keep their keys."""
    fr = fractions_for(ctx, unit)
    return {"snapshots": fr} if fr else {}


def snapshots_for(ctx: Context, unit: str) -> Optional[Snapshots]:
    """What the training loop of pretraining ``unit`` snapshots (None: nothing)."""
    fr = fractions_for(ctx, unit)
    return Snapshots(tuple(fr)) if fr else None


def start(ctx: Context, folder: Path) -> Path:
    """The checkpoint a specialization starts from in the training folder ``folder`` of a
    finished pretraining: ``final/``, or under a curve view its snapshot at the view's fraction."""
    f = ctx.run.curve
    if f is None:
        return Path(folder) / "final"
    path = snapshot_dir(folder, f)
    if not (path / "model.json").is_file():
        raise SpeclmError(f"{folder} has no snapshot at {f!r} of its pretraining ({path}); put {f!r} in "
                          f"methods.curve_fractions and the method in methods.curve_methods, then rerun")
    return path


def loop_folder(checkpoint: Path) -> Path:
    """The training folder a pretrained checkpoint (``final/`` or ``snapshots/f-<f>/``) belongs to."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == SNAPSHOTS else checkpoint.parent


def spec_key(ctx: Context) -> dict:
    """What a specialization's job key adds under a curve view: the fraction it starts from."""
    return {} if ctx.run.curve is None else {"pretrain_fraction": ctx.run.curve}


def final_steps(folder: Path) -> int:
    """The steps a finished training folder ran (its ``train.json``)."""
    path = Path(folder) / "train.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["result"]["steps"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SpeclmError(f"{path}: not a finished training ({type(e).__name__}: {e})") from None


def point(ctx: Context, method: str) -> dict:
    """Where ``method``'s pretraining stands at the view's curve point: ``pretrain_fraction``,
    ``pretrain_step`` (of one training: an SLM-mix expert's), ``max_steps`` (that training's
    whole run) and ``share`` = pretrain_step / max_steps, the share of the pretraining's cost
    spent by then. Outside a curve view: the finished pretraining (fraction 1.0)."""
    folder = get(method).curve_loops(ctx)[0]
    total = final_steps(folder)
    if ctx.run.curve is None:
        return {"pretrain_fraction": 1.0, "pretrain_step": total, "max_steps": total, "share": 1.0}
    from ..train.checkpoint import read_meta

    step = int(read_meta(start(ctx, folder))["step"])
    return {"pretrain_fraction": ctx.run.curve, "pretrain_step": step, "max_steps": total, "share": step / total}
