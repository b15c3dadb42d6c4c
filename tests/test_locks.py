"""Folder locks: a second process waits for, or is refused by, the first."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from speclm.core.errors import SpeclmError
from speclm.core.locks import hold, lock_path

HOLDER = """
import sys, time
from speclm.core.locks import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(folder, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_is_refused_or_waits(tmp_path):
    folder = tmp_path / "pretrain" / "slm"
    p = _holder(folder, 1.5)
    try:
        with pytest.raises(SpeclmError, match="another speclm process"):
            with hold(folder, "pretrain/slm", wait=False):
                pass
        said = []
        t0 = time.monotonic()
        with hold(folder, "pretrain/slm", log=said.append):
            waited = time.monotonic() - t0
        assert waited > 0.3 and len(said) == 1 and "waiting" in said[0]
    finally:
        p.wait(timeout=30)
    assert lock_path(folder).parent == folder.parent  # beside the folder: wiping it keeps the lock


def test_a_dead_holder_releases_the_lock(tmp_path):
    p = _holder(tmp_path / "job", 60)
    p.kill()
    p.wait(timeout=30)
    with hold(tmp_path / "job", wait=False):  # the OS released it with the process
        pass
