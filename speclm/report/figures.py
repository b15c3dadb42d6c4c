"""The report's own pictures (the grid's plots are drawn by speclm.report.plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def figure6(totals: dict[str, list[float] | tuple[float, float]], ns: tuple[int, ...], out: Path,
            small: dict[str, bool]) -> Optional[Path]:
    """The paper's Figure 6: total training cost C_generic + N x C_spec of serving N domains,
    one group of bars per N, one bar per method (log scale). None when there is nothing to draw."""
    if not totals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .plots import method_styles, save_figure

    methods = list(totals)
    styles = method_styles(methods)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(methods)
    x = np.arange(len(ns))
    for i, m in enumerate(methods):
        g, c = totals[m]
        vals = [max(g + n * c, 1.0) for n in ns]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, color=styles[m]["color"],
               label=m if small.get(m, True) else f"{m} (large)", hatch=None if small.get(m, True) else "//")
    ax.set_yscale("log")
    ax.set_xticks(x, [f"N = {n}" for n in ns])
    ax.set_ylabel("total training FLOPs (log)")
    ax.set_title("C_total(N) = C_generic + N x C_spec (docs/paper.md Eq. 1)", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out)
    return out
