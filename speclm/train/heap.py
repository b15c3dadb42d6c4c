"""The process's heaps while a training loop runs: two settings that change no result.

A small model's step (the ``tiny`` shape, batch 32 x 128, one thread) lasts ~0.1 s and
allocates and frees a few hundred tensors, some of them megabytes. Two costs of the
process's memory management then show in its profile (docs/LOG.md, "Per-step work at the
regime's shapes"):

- Python's cycle collector: the step's short-lived objects start a full collection about
  every dozen steps, and each walks the whole heap (torch, numpy, speclm: ~290k objects):
  3-5% of the step. :func:`training_heap` freezes what exists when training starts
  (``gc.freeze``: skipped by every collection, still freed by reference counting) and thaws
  it when training ends.
- glibc's malloc gives large freed blocks back to the kernel (its heap is trimmed above
  2x the largest block seen, or the block was mapped on its own), so the next step's
  tensors fault their pages in again: ~7% of the step's wall time in this VM. During
  training :func:`training_heap` keeps freed memory in the heap (``mallopt``: blocks up
  to 32 MiB from the heap, no trimming); when it ends, the free memory goes back to the
  kernel (``malloc_trim``) and glibc's default thresholds return.

Neither changes what is computed; elsewhere than glibc the malloc part does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from typing import Iterator, Optional

# mallopt parameters (glibc's malloc.h) and the values speclm sets during training
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_MMAP_THRESHOLD = 32 << 20  # glibc's largest (64-bit): blocks up to 32 MiB come from the heap
KEEP_TRIM_THRESHOLD = (1 << 31) - 1  # never trim while training (an int argument)
DEFAULT_THRESHOLD = 128 << 10  # glibc's default for both


def _glibc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (musl and others: no)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def _keep_freed_memory(libc: ctypes.CDLL) -> bool:
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))


def _return_freed_memory(libc: ctypes.CDLL) -> None:
    libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_THRESHOLD)
    libc.malloc_trim(0)


@contextlib.contextmanager
def training_heap() -> Iterator[None]:
    """Inside it: objects that exist now are frozen out of garbage collection (unless someone
    froze objects before: then theirs stay as they are) and, on glibc, freed memory stays in
    the heap. Nested uses leave the settings to the outermost one."""
    freeze = not gc.get_freeze_count()
    keep = _LIBC is not None and not _ACTIVE and _keep_freed_memory(_LIBC)
    if freeze:
        gc.freeze()
    _ACTIVE.append(True)
    try:
        yield
    finally:
        _ACTIVE.pop()
        if freeze:
            gc.unfreeze()
        if keep:
            _return_freed_memory(_LIBC)


_ACTIVE: list[bool] = []
