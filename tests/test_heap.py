"""speclm.train.heap: glibc keeps freed memory in its heap while training, and only then."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from speclm.train import heap


_PROBE = """
import ctypes
from speclm.train import heap
heap._LIBC.malloc.restype = ctypes.c_void_p
heap._LIBC.free.argtypes = [ctypes.c_void_p]

def from_heap(size):  # is a fresh block of this size carved from the heap (brk), not mapped on its own?
    p = heap._LIBC.malloc(size)
    lo = hi = 0
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(a, 16) for a in line.split()[0].split("-"))
    heap._LIBC.free(p)
    return lo <= p < hi

before = from_heap(8 << 20)  # mapped; freed, glibc's threshold rises to 8 MiB
with heap.training_heap():
    with heap.training_heap():  # nested: the outer one decides
        pass
    inside = from_heap(24 << 20)
after = from_heap(24 << 20)  # glibc's default thresholds are back
print(before, inside, after)
"""


@pytest.mark.skipif(heap._LIBC is None, reason="not glibc: the malloc settings do nothing")
def test_large_blocks_come_from_the_heap_while_training():
    """In a fresh process: glibc maps a block of 8 MiB on its own (freed, it goes back to the
    kernel, and glibc's threshold rises to 8 MiB); inside training_heap a 24 MiB block comes
    from the heap (kept when freed), where glibc's own rule would map it; after it, mapped again."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)}).stdout.split()
    assert out == ["False", "True", "False"]
