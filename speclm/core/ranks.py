"""Ranks and processes, as a service to every layer: the only module that reads torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK).

Under ``torchrun`` (WORLD_SIZE > 1) the training loop wraps the model in
DistributedDataParallel (:func:`wrap`); the model code never knows. The data stages use
:func:`env_rank_world` and :func:`wait_all` to split or order their work. gloo on CPU,
NCCL on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as td


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_rank_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def env_local_rank(default: int = 0) -> int:
    """This process's rank on its node (torchrun's LOCAL_RANK), ``default`` outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", default))


def wait_all(world: int) -> None:
    """A barrier of every rank, for stages outside the training loop (one rank builds, the
    others wait); joins the process group first if nothing has (NCCL on GPU, gloo on CPU,
    as the loop would)."""
    if world <= 1:
        return
    if not td.is_initialized():
        setup()
    td.barrier()


def default_device(local_rank: int = 0) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def check_device(device: Optional[str | torch.device]) -> None:
    """A one-line error for a device speclm cannot use (``--device tpu``, ``cuda`` without CUDA)."""
    from .errors import SpeclmError

    if device is None or isinstance(device, torch.device):
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise SpeclmError(f"--device {device!r} is not one speclm can use: cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpeclmError(f"--device {device!r}: no CUDA device is available here; use --device cpu")


def setup(device: Optional[str | torch.device] = None) -> Dist:
    """Read torchrun's environment and join the process group (once)."""
    check_device(device)
    rank, world = env_rank_world()
    local = env_local_rank(rank)
    dev = torch.device(device) if device is not None else default_device(local)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local % max(1, torch.cuda.device_count()))
    if world > 1 and not td.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        td.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if td.is_initialized():
        world, rank = td.get_world_size(), td.get_rank()
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def local(device: Optional[str | torch.device] = None) -> Dist:
    """This process alone, even under torchrun (independent jobs spread over ranks)."""
    check_device(device)
    local_rank = env_local_rank()
    dev = torch.device(device) if device is not None else default_device(local_rank)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return Dist(rank=0, world_size=1, local_rank=local_rank, device=dev)


def wrap(model: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def mean(value: float, dist: Dist) -> float:
    """The mean of a float over ranks (for logging)."""
    if not dist.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=dist.device if dist.device.type == "cuda" else "cpu")
    td.all_reduce(t)
    return float(t.item()) / dist.world_size


def barrier(dist: Dist) -> None:
    if dist.enabled:
        td.barrier()


# ---- a worker's parent: a grid worker stops when the grid process that started it dies ----

PARENT_GONE_EXIT = 3
_PARENT = {"gone": False}


class ParentGone(SystemExit):
    """Raised between training steps in a worker whose parent died: the job stops where a
    kill would have stopped it (resumable from its last checkpoint), its locks released."""


def watch_parent(grace: float = 5.0, interval: float = 0.5) -> None:
    """Watch this process's parent from a daemon thread. When it dies (this process is
    re-parented), :func:`check_parent` raises at the next training step; a job that reaches no
    step within ``grace`` seconds (data, evaluation) is ended by the thread itself. Either way
    the OS releases the file locks, and the job resumes like any killed one."""
    import threading
    import time

    ppid = os.getppid()

    def run() -> None:
        while os.getppid() == ppid:
            time.sleep(interval)
        _PARENT["gone"] = True
        time.sleep(grace)
        quiet_exit(PARENT_GONE_EXIT)

    threading.Thread(target=run, name="speclm-parent-watch", daemon=True).start()


def parent_gone() -> bool:
    return _PARENT["gone"]


def check_parent() -> None:
    """Between training steps: stop this worker when its parent died (see :func:`watch_parent`)."""
    if _PARENT["gone"]:
        raise ParentGone(PARENT_GONE_EXIT)


def quiet_exit(code: int) -> None:
    """End the process now, without flushing into a pipe nobody reads (no BrokenPipeError)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the reader is gone: nothing to say, nowhere to say it
            pass
    os._exit(code)
