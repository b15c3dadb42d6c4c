"""Every stage's line in ``speclm run``'s summary gives its wall time and the CPU time it used."""

from __future__ import annotations

import re


def test_each_stage_reports_wall_and_cpu_time(tmp_path):
    from speclm.core.run import open_run
    from speclm.grid.pipeline import run_pipeline

    run = open_run(tmp_path / "run", "tiny", [])
    lines: list[str] = []
    summary = run_pipeline(run, echo=lines.append, until="tokens")
    times = [ln for ln in lines if ln.startswith("time: ")]
    assert [ln.split()[1] for ln in times] == ["corpus", "overlap", "tokens"]
    for ln in times:
        m = re.fullmatch(r"time: \w+ ([\d.]+) s wall, ([\d.]+) s CPU \(([\d.]+) of (\d+) cores busy\)", ln)
        assert m, ln
    t = summary["times"]["tokens"]
    assert t["wall_s"] > 0 and t["cpu_s"] > 0  # the tokenizer really ran and was measured
