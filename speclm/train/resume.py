"""The training loop's folder bookkeeping: resume, restart and every checkpoint it writes.

What a killed, restarted or finished run left in the output folder (its layout is in
speclm.train.loop), and the checkpoints the loop writes (resumable, best, snapshots, final)
with what goes beside them (cost.json, the validation rows of metrics.jsonl, the summary).

The loop keeps the arithmetic of training; this module keeps what lets a second call on the
same folder resume exactly where the first stopped, or return at once when it had finished.
Only the main rank writes; the others wait at the same barriers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..core import atomic
from ..core import ranks as distributed
from ..core.errors import SpeclmError
from . import checkpoint as ckpt
from .cost import COST_FILE, PhaseCost, combine, write_cost
from .logger import TENSORBOARD_DIR
from .snapshots import SNAPSHOTS, Snapshots

CHECKPOINT, BEST, FINAL = "checkpoint", "best", "final"
METRICS, SUMMARY = "metrics.jsonl", "train.json"


def new_state() -> dict:
    """The loop's counters before its first step (what a resumable checkpoint's state.json keeps)."""
    return {"step": 0, "position": 0, "tokens": 0, "flops": 0.0, "wall_seconds": 0.0, "best_valid": None,
            "best_step": None, "last_valid": None, "bad_evals": 0, "last_eval_step": -1}


def prepare_folder(out: Path, dist, restart: bool) -> None:
    """Clear what a killed run of this job left in ``out`` (temp files removed, a checkpoint
    cut between renames put back); with ``restart`` (``--restart``) also its state and
    results, so training starts over. Every rank waits for it."""
    if dist.is_main:
        for name in (CHECKPOINT, BEST, FINAL, METRICS, SUMMARY, COST_FILE):
            atomic.remove_stale_temps(out / name)
    if restart and dist.is_main:
        for name in (CHECKPOINT, BEST, FINAL, METRICS, COST_FILE, SUMMARY, SNAPSHOTS, TENSORBOARD_DIR):
            atomic.remove_path(out / name)
    distributed.barrier(dist)


def finished_result(out: Path, run_id: str, model: torch.nn.Module) -> Optional[dict]:
    """The saved result of a finished run with these settings (``run_id``) in ``out``, its
    final weights loaded into ``model``; None when there is none yet. A summary written with
    other settings is an error: the folder belongs to another run."""
    summary_path = out / SUMMARY
    if summary_path.is_file():
        done = atomic.read_json_file(summary_path, f"delete it, or rerun with --restart to train {out} over")
        if done.get("run_id") != run_id:
            raise SpeclmError(f"{out} holds a finished run with other settings; use another output folder")
        if done.get("done") and (out / FINAL).is_dir():
            ckpt.load_weights(model, out / FINAL)
            return done["result"]
    return None


@dataclass
class Saver:
    """Writes one training's checkpoints from its live counters ``st`` (:func:`new_state`),
    which the loop updates in place."""

    out: Path
    dist: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    st: dict
    run_id: str
    schedule: Any
    tokens_per_step: int
    meta: dict
    files: Optional[Mapping[str, str | Path]]
    phase: str
    prior_cost: Optional[Mapping]
    device_kind: str

    @property
    def resume_dir(self) -> Path:
        return self.out / CHECKPOINT

    def resume_or_seed(self, seed: int) -> None:
        """Load ``OUT/checkpoint`` (weights, optimizer, counters) and cut metrics.jsonl back to
        its step, so the rows a killed run logged after it are not doubled; without a
        checkpoint, seed torch for a fresh start."""
        if not ckpt.is_resumable(self.resume_dir):
            torch.manual_seed(seed)
            return
        saved = ckpt.load_resume(self.resume_dir, self.model, self.optimizer)
        if saved.get("run_id") != self.run_id:
            raise SpeclmError(f"{self.resume_dir} was written by a run with other settings; use another output folder")
        self.st.update({k: saved[k] for k in self.st})
        if self.dist.is_main:
            rows = [r for r in atomic.read_jsonl(self.out / METRICS) if r.get("step", 0) <= self.st["step"]]
            atomic.write_text(self.out / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def own_cost(self) -> PhaseCost:
        st, n = self.st, self.dist.world_size
        return PhaseCost(tokens=st["tokens"], flops=st["flops"], wall_seconds=st["wall_seconds"],
                         device_hours=st["wall_seconds"] * n / 3600, steps=st["step"],
                         device_kind=self.device_kind, n_devices=n)

    def cost(self) -> dict:
        """The cost.json document now: the prior runs' phases plus this run's own."""
        return combine(self.phase, self.own_cost(), self.prior_cost)

    def save_resumable(self) -> None:
        """``OUT/checkpoint`` (weights, optimizer, counters) and cost.json at this step; every rank waits."""
        if self.dist.is_main:
            state = {**self.st, "run_id": self.run_id, "schedule": asdict(self.schedule),
                     "tokens_per_step": self.tokens_per_step}
            ckpt.save_checkpoint(self.resume_dir, self.model, meta={**self.meta, "step": self.st["step"]},
                                 optimizer=self.optimizer, state=state, files=self.files)
            write_cost(self.out, self.cost())
        distributed.barrier(self.dist)

    def record_valid(self, v: float) -> None:
        """A validation loss ``v`` at this step: the counters (best so far, validations without
        improvement), ``OUT/best`` when it improves, and its metrics row."""
        st = self.st
        st["last_valid"], st["last_eval_step"] = v, st["step"]
        if st["best_valid"] is None or v < st["best_valid"]:
            st["best_valid"], st["best_step"], st["bad_evals"] = v, st["step"], 0
            if self.dist.is_main:
                ckpt.save_checkpoint(self.out / BEST, self.model, files=self.files,
                                     meta={**self.meta, "step": st["step"], "valid_loss": v})
        else:
            st["bad_evals"] += 1
        if self.dist.is_main:
            atomic.append_jsonl(self.out / METRICS, {"step": st["step"], "valid_loss": v,
                                                     "best_valid": st["best_valid"], "tokens": st["tokens"]})

    def restore_best(self) -> int:
        """Early stopping's result: the best validated weights back in the model (from
        ``OUT/best`` when training went on past them); their step, or this step without one."""
        st = self.st
        if st["best_step"] is not None and st["best_step"] != st["step"]:
            ckpt.load_weights(self.model, self.out / BEST)
        return st["best_step"] if st["best_step"] is not None else st["step"]

    def save_snapshots(self, snapshots: Snapshots, fractions: list[float]) -> None:
        """The snapshots due after this step (before its resumable checkpoint: a resumed run never skips one)."""
        if self.dist.is_main:
            snapshots.save(self.out, self.model, fractions,
                           {**self.meta, **{k: self.st[k] for k in ("step", "tokens", "flops")}},
                           self.schedule.total_steps, self.files, self.cost())

    def last_good(self) -> str:
        """The last resumable checkpoint and its step, for an error that stops training."""
        if not ckpt.is_resumable(self.resume_dir):
            return "none written yet"
        return f"{self.resume_dir} (step {ckpt.read_meta(self.resume_dir).get('step')})"

    def save_final(self, result, final_step: int) -> None:
        """``OUT/final`` (the weights now, recorded as of ``final_step``), cost.json, then the
        summary that marks the run done; every rank waits."""
        if self.dist.is_main:
            ckpt.save_checkpoint(self.out / FINAL, self.model, meta={**self.meta, "step": final_step}, files=self.files)
            write_cost(self.out, result.cost)
            res = result.to_dict()
            res.pop("out_dir"), res.pop("final_dir")
            atomic.write_json(self.out / SUMMARY, {"done": True, "run_id": self.run_id, "result": res})
        distributed.barrier(self.dist)
