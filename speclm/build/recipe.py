"""Which recipe ``speclm build`` trains and ships: the run's own evidence where its report
says the run can tell the methods apart (its premises hold), else the paper's Figure 1
for the number of domains the user will serve; every choice says which of the two it is.

The paper's Figure 1 (small model at inference): with few domains a per-domain pretraining
is affordable, so importance sampling (``slm-is``); beyond the crossing of its costs with
the projected network's (``paper_crossover``, about 5 domains with the paper's Table 3
GPU-hours) a shared pretraining wins (``slm-pn``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core.errors import SpeclmError


@dataclass
class Recipe:
    method: str
    source: str  # "paper" | "run"
    why: str  # one sentence, shown to the user and in the model card

    def line(self) -> str:
        where = "the paper's Figure 1" if self.source == "paper" else "this run's own evidence"
        return f"{self.method}, from {where}: {self.why}"


def paper_recipe(n_domains: int) -> Recipe:
    from ..grid.plan import PAPER_IS_PER_DOMAIN, PAPER_PN_GENERIC, PAPER_PN_PER_DOMAIN, paper_crossover

    x = paper_crossover()
    is_cost, pn_cost = n_domains * PAPER_IS_PER_DOMAIN, PAPER_PN_GENERIC + n_domains * PAPER_PN_PER_DOMAIN
    if n_domains < x:
        return Recipe("slm-is", "paper", f"N={n_domains} domain{'s' * (n_domains != 1)} is below the crossing at "
                      f"N≈{x:.1f}: a per-domain pretraining with importance sampling is affordable "
                      f"({is_cost:.0f} vs {pn_cost:.0f} GPU-hours for slm-pn in the paper's Table 3)")
    return Recipe("slm-pn", "paper", f"N={n_domains} domains is beyond the crossing at N≈{x:.1f}: a shared "
                  f"pretraining (the projected network) wins ({pn_cost:.0f} vs {is_cost:.0f} GPU-hours for slm-is "
                  "in the paper's Table 3)")


def premises(report_json: Path) -> tuple[bool, str]:
    """(hold, why) from the run's ``eval/report.json``: its ``premises`` where the report
    has them (each premise met), else its evidence gate (no problem listed)."""
    try:
        facts = json.loads(Path(report_json).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, f"no readable report at {report_json}"
    prem = facts.get("premises")
    if isinstance(prem, dict) and prem:
        failed = [k for k, v in prem.items() if v is False or (isinstance(v, dict) and v.get("met") is False)]
        if isinstance(prem.get("items"), list):
            failed += [str(i.get("name", "?")) for i in prem["items"] if isinstance(i, dict) and i.get("met") is False]
        if failed:
            return False, "premises not met: " + ", ".join(failed)
        return True, "every premise of the report is met"
    problems = (facts.get("evidence") or {}).get("problems") or []
    if problems:
        return False, "; ".join(problems)
    return True, "the report's evidence gate passes"


def from_evidence(run, n_domains: int, size: str, budget_flops: Optional[float]) -> Optional[Recipe]:
    """The run's own recommendation (speclm plan's logic) when its grid has rows and its
    report's premises hold; None otherwise."""
    from ..grid.plan import load_rows, recommend

    report = run.eval_dir / "report.json"
    if not report.is_file():
        return None
    hold, why = premises(report)
    if not hold:
        return None
    try:
        rows, _ = load_rows(run)
        rec = recommend(rows, size, n_domains, "small", budget_flops, "flops")
    except SpeclmError:
        return None
    if rec.share < 1:
        return None  # a snapshot is not what build trains
    return Recipe(rec.method, "run", f"{why}; {rec.reason}")
