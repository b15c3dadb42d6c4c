"""The plan's caveat: whether the run's own recommendation stands in the paper's regime.

When a run is out of the paper's regime (its small model not capacity-bound, or pretraining
too small next to the specialization sets: speclm.report.premises), the ranking of its
recipes reflects that scale, not the paper's: ``speclm plan`` and the last lines of
``speclm run`` say so in one sentence and show the paper's Figure 1 advice beside it.
"""

from __future__ import annotations

from typing import Optional

GATES = ("slm_saturated", "pretrain_to_spec")  # what the plan's ranking stands on


def run_premises(run, name: str = "results") -> Optional[dict]:
    """The run's premises (speclm.report.premises.measure), or None without rows: read from
    ``eval/report.json`` when the report is newer than the rows, the curves and the config
    (``speclm run`` has just written it), else measured."""
    import json

    from ..core.errors import SpeclmError

    report, results = run.eval_dir / "report.json", run.eval_dir / f"{name}.jsonl"
    inputs = [results, run.eval_dir / "curves.jsonl", run.path / "config.toml"]
    try:
        if report.is_file() and all(report.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in inputs if p.exists()):
            doc = json.loads(report.read_text(encoding="utf-8"))
            if isinstance(doc, dict) and doc.get("results") == str(results) and isinstance(doc.get("premises"), dict):
                return doc["premises"]
    except (OSError, ValueError):
        pass  # a damaged or unreadable report: measure again
    from .evidence import Evidence
    from .premises import measure
    from .run_results import RunResults

    try:
        res = RunResults.open(run, name)
    except SpeclmError:
        return None
    ev = Evidence(res.groups, res.domains, run.path, min(run.config.methods.bootstrap, 400))
    return measure(res.groups, res.curves, run.config, res.clusters, ev, res.sizes, res.domains)


def regime_lines(premises: Optional[dict], n_domains: int, inference: str = "small") -> list[str]:
    """One sentence when the run is out of the paper's regime, then the paper's advice for
    ``n_domains``; nothing when the run is in it."""
    from .plan import paper_advice

    if not premises:
        return []
    by = {p["key"]: p for p in premises["table"]}
    failed = [by[k] for k in GATES if k in by and not by[k]["met"]]
    if not failed:
        return []
    why = "; ".join(f"{p['label']}: {p['text']} (want {p['threshold']})" for p in failed)
    return ([f"regime: this run is outside the paper's regime ({why}), so its ranking reflects this scale; "
             "the paper's own recommendation, for comparison:"]
            + [f"  {line}" for line in paper_advice(n_domains, inference)])
