"""Which recipe ``speclm build`` trains and ships: the run's own evidence where the run is
in the paper's regime (its measured premises hold: speclm.report.premises and the gates of
speclm.report.regime), else the paper's Figure 1 for the number of domains the user will
serve; every choice says which of the two it is.

The paper's Figure 1 (small model at inference): with few domains a per-domain pretraining
is affordable, so importance sampling (``slm-is``); beyond the crossing of its costs with
the projected network's (``paper_crossover``, about 5 domains with the paper's Table 3
GPU-hours) a shared pretraining wins (``slm-pn``).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    from ..report.plan import PAPER_IS_PER_DOMAIN, PAPER_PN_GENERIC, PAPER_PN_PER_DOMAIN, paper_crossover

    x = paper_crossover()
    is_cost, pn_cost = n_domains * PAPER_IS_PER_DOMAIN, PAPER_PN_GENERIC + n_domains * PAPER_PN_PER_DOMAIN
    if n_domains < x:
        return Recipe("slm-is", "paper", f"N={n_domains} domain{'s' * (n_domains != 1)} is below the crossing at "
                      f"N≈{x:.1f}: a per-domain pretraining with importance sampling is affordable "
                      f"({is_cost:.0f} vs {pn_cost:.0f} GPU-hours for slm-pn in the paper's Table 3)")
    return Recipe("slm-pn", "paper", f"N={n_domains} domains is beyond the crossing at N≈{x:.1f}: a shared "
                  f"pretraining (the projected network) wins ({pn_cost:.0f} vs {is_cost:.0f} GPU-hours for slm-is "
                  "in the paper's Table 3)")


def premises(run) -> tuple[bool, str]:
    """(hold, why): whether the run is in the paper's regime, from its measured premises
    (speclm.report.premises, the gates the plan's caveat uses: speclm.report.regime). A
    premise the run cannot measure (no large model to compare with, say) does not hold."""
    from ..report.regime import GATES, run_premises

    prem = run_premises(run)
    if not prem:
        return False, "no grid results to judge"
    by = {p["key"]: p for p in prem.get("table", [])}
    failed = [f"{by[k]['label']}: {by[k]['text']} (want {by[k]['threshold']})" for k in GATES if k in by and not by[k]["met"]]
    failed += [f"{k}: not measured" for k in GATES if k not in by]
    if failed:
        return False, "; ".join(failed)
    return True, "the run is in the paper's regime (" + ", ".join(by[k]["label"] for k in GATES) + ")"


def from_evidence(run, n_domains: int, size: str, budget_flops: Optional[float]) -> Optional[Recipe]:
    """The run's own recommendation (speclm plan's logic) when its grid has rows and its
    report's premises hold; None otherwise."""
    from ..report.plan import load_rows, recommend

    hold, why = premises(run)
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
