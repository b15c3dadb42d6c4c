"""scripts/gpu_experiment.sh in its CPU dry-run mode (the tiny preset, a few steps): every
step runs under its own time limit and OUT gets the plan, the step times and the results
of slm and slm-is on two domains. The GPU run is the same script without DRY_RUN."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_experiment_dry_run(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out"
    p = subprocess.run(["bash", "scripts/gpu_experiment.sh", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    steps = (out / "steps.txt").read_text().splitlines()
    assert [s.split(":")[0] for s in steps] == ["plan", "corpus", "tokens", "clusters", "grid"]
    assert all("rc=0" in s for s in steps)
    assert "total all:" in (out / "plan.txt").read_text()
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["domain"]) for r in rows) == [
        ("slm", "kjv"), ("slm", "legal"), ("slm-is", "kjv"), ("slm-is", "legal")]
    assert all(r["size"] == "4k" and r["ppl"] > 1 for r in rows)
    assert "| slm-is |" in (out / "results.md").read_text()


def test_gpu_experiment_refuses_without_a_gpu_or_out(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    env.pop("DRY_RUN", None)
    p = subprocess.run(["bash", "scripts/gpu_experiment.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "usage" in p.stderr
    import torch
    if not torch.cuda.is_available():
        p = subprocess.run(["bash", "scripts/gpu_experiment.sh", str(tmp_path / "o")], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        assert p.returncode == 2 and "no CUDA GPU here" in p.stderr
        assert not (tmp_path / "o" / "run").exists()
