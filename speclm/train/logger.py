"""Where the training loop's rows go besides ``metrics.jsonl``: live curves (``train.logger``).

``train.logger = "jsonl"`` (the default) keeps only ``OUT/metrics.jsonl``, which the grid,
the report and resume read. ``train.logger = "tensorboard"`` also writes every row as
TensorBoard scalars under ``OUT/tensorboard/`` (the ``tensorboard`` extra), so
``tensorboard --logdir RUN`` shows every job of a run (the pretraining, each expert, each
fine-tune) live, named by its folder:

    train/loss          the training loss at each logged step
    train/lr            the learning rate
    train/tokens_per_s  throughput since the previous logged step
    train/grad_norm     the gradient norm before clipping
    train/mfu           model FLOPs utilization (GPUs we know the peak of)
    valid/loss          each validation loss
    valid/best          the best validation loss so far

The x axis is the optimizer step. A resumed job purges the events a killed run wrote after
its checkpoint, as it cuts ``metrics.jsonl`` back (TensorBoard's ``purge_step``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from ..core.errors import SpeclmError

LOGGERS = ("jsonl", "tensorboard")
TENSORBOARD_DIR = "tensorboard"
# metrics.jsonl key -> TensorBoard tag
TAGS = {"loss": "train/loss", "lr": "train/lr", "tok_s": "train/tokens_per_s", "grad_norm": "train/grad_norm",
        "mfu": "train/mfu", "valid_loss": "valid/loss", "best_valid": "valid/best"}


def check_logger(kind: str) -> None:
    """Refuse an unknown ``train.logger``, or ``tensorboard`` without its package (before any work)."""
    if kind not in LOGGERS:
        raise SpeclmError(f"train.logger must be one of {', '.join(LOGGERS)}, got {kind!r}")
    if kind == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise SpeclmError("train.logger = 'tensorboard' needs the tensorboard package: pip install -e '.[tensorboard]' "
                          "(or --set train.logger=jsonl)")


class CurveLogger:
    """The rows of one training job as TensorBoard scalars (nothing with ``kind="jsonl"``
    or on a rank that does not write). The loop calls :meth:`start` once it knows the step
    it resumes from; :meth:`close` (also on an error) flushes what was logged."""

    def __init__(self, kind: str, out: Path):
        check_logger(kind)
        self.kind, self.out, self.writer = kind, Path(out), None

    def start(self, step: int = 0, enabled: bool = True) -> None:
        if self.kind != "tensorboard" or not enabled or self.writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard drops what a killed run logged after the checkpoint we resume from
        self.writer = SummaryWriter(log_dir=str(self.out / TENSORBOARD_DIR),
                                    purge_step=step + 1 if step > 0 else None, flush_secs=10)

    def log(self, row: dict) -> None:
        """One metrics.jsonl row (a logged step or a validation) as scalars at its step."""
        if self.writer is None:
            return
        step = int(row["step"])
        for key, tag in TAGS.items():
            value: Optional[float] = row.get(key)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
