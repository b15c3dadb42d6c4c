"""Locks on run folders: two processes (or two nodes on a shared file system) never build
the same stage or train the same job at once.

A lock is a real OS file lock (``filelock``) on ``<folder>.lock`` beside the folder it
guards, so wiping or replacing the folder never touches the lock. The second process
waits for the first (saying so once) or, with ``wait=False``, gets a one-line error naming
what is held. A lock held by a process that died is released by the OS.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from filelock import FileLock, Timeout

from .errors import SpeclmError


def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def hold(
    folder: str | os.PathLike,
    what: str = "",
    wait: bool = True,
    timeout: Optional[float] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Iterator[None]:
    """Hold the lock of ``folder`` for the ``with`` block (re-entrant in one process).

    ``wait=True``: block until the lock is free, logging once that another process holds
    it; ``timeout`` (seconds) bounds the wait. ``wait=False``: a one-line SpeclmError at
    once when another process holds it."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True)  # one instance per path: nested holds in one process re-enter
    name = what or str(folder)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise SpeclmError(f"{name} is being written by another speclm process (lock {path}); "
                              f"wait for it to finish, or stop it") from None
        if log:
            log(f"{name}: another speclm process is writing it; waiting for its lock ({path})")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise SpeclmError(f"{name}: still locked by another speclm process after {timeout:g} s (lock {path})") from None
    try:
        yield
    finally:
        lock.release()



@contextlib.contextmanager
def hold_stage(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """The lock of a stage folder for a build: a second process waits, saying so on stderr
    once, then finds the stage fresh (and reads it) or builds it itself. A build that fails
    in a run folder it had to create leaves no folder behind (bad input writes nothing)."""
    import shutil
    import sys

    parent = Path(folder).parent
    created = not parent.exists()
    try:
        with hold(folder, what, log=lambda m: print(f"speclm: {m}", file=sys.stderr, flush=True)):
            yield
    except BaseException:
        if created and parent.is_dir() and {p.name for p in parent.iterdir()} <= {lock_path(folder).name}:
            shutil.rmtree(parent, ignore_errors=True)
        raise
