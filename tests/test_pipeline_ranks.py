"""`speclm run` under torchrun: rank 0 builds the data stages while the other ranks wait,
only rank 0 prints, and the method grid (one process) is refused before any work."""

from __future__ import annotations

import os
import subprocess
import sys


def test_two_ranks_build_the_data_stages_once(tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "run_ranks.py"  # torchrun would take the CLI's --run for its own option
    script.write_text(
        "from speclm.cli import main\n"
        f"main(['run', '--preset', 'tiny', '--run', {str(run)!r}, '--until', 'tokens'])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # every rank would print "run folder: ..." (the CLI's last line); the stage summaries only once
    assert proc.stdout.count(f"run folder: {run}") == 2, proc.stdout[-2000:]
    heads = [line for line in proc.stdout.splitlines() if line.startswith(("corpus (", "tokens: "))]
    assert len(heads) == 2 and heads[0].startswith("corpus (") and heads[1].startswith("tokens: "), heads
    for stage in ("corpus", "tokens"):
        assert (run / stage / "manifest.json").exists()
    assert not list(run.rglob("*.tmp")), "a rank left a temporary file behind"


def test_the_grid_is_refused_under_torchrun(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    run = tmp_path / "run"
    code, _, err = cli("run", "--preset", "tiny", "--run", run)
    assert code == 2 and "--until clusters" in err and len(err.strip().splitlines()) == 1
    assert not (run / "corpus").exists()
    code, _, err = cli("grid", "--preset", "tiny", "--run", run)
    assert code == 2 and "one process" in err
