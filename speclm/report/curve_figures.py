"""The report's pictures of the operating curves (speclm.report.curves_report): the analogues
of the paper's Figure 3 (generic valid perplexity against pretraining FLOPs) and Figure 4
(specialized macro perplexity against pretraining FLOPs: before fine-tuning, then one panel
per size). They draw the numbers of ``report.json``'s ``curves`` (plain dicts), nothing else."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from .evidence import Estimate


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(methods: list[str]) -> dict:
    from .plots import method_styles

    return method_styles(methods)


def _axes(ax, log_y: bool = True) -> None:
    """Round FLOPs on the x axis (2e12, 5e12) and, on a log y axis, plain numbers."""
    from .plots import _flops_axis, _number_axis

    _flops_axis(ax)
    if log_y:
        _number_axis(ax)


def figure3(points: dict[str, list[dict]], out: Path, label) -> Optional[Path]:
    """Generic valid perplexity (log) against pretraining FLOPs (log), one line per curve
    method, a marker at each snapshot. None when no snapshot has a generic valid NLL."""
    lines = {m: [(p["flops"], math.exp(p["generic_nll"])) for p in ps if p["generic_nll"] is not None]
             for m, ps in points.items()}
    lines = {m: xy for m, xy in lines.items() if xy}
    if not lines:
        return None
    from .plots import save_figure

    plt = _plt()
    styles = _style(list(lines))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, xy in lines.items():
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker=styles[m]["marker"], color=styles[m]["color"],
                label=label(m), linestyle="-" if label(m) == m else "--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pretraining FLOPs (log)")
    ax.set_ylabel("generic valid perplexity (log)")
    ax.set_title("Generic perplexity against pretraining cost (the paper's Fig. 3)", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    _axes(ax)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, Path(out))
    return Path(out)


def _yerr(ests: list[dict]) -> list[list[float]]:
    lo, hi = [], []
    for e in ests:
        est = Estimate(**e)
        lo.append(est.ppl - math.exp(est.nll - 1.96 * est.se))
        hi.append(math.exp(est.nll + 1.96 * est.se) - est.ppl)
    return [lo, hi]


def figure4(points: dict[str, list[dict]], flat: dict[str, dict], sizes: list[str], out: Path, label) -> Optional[Path]:
    """Specialized macro perplexity against pretraining FLOPs: a panel before fine-tuning,
    then one per size; 95% error bars; ``flat`` methods (no generic cost) as labelled
    horizontal lines. None when no panel has a point."""
    panels = [("no_ft", "before fine-tuning")] + [(s, f"fine-tuned on {s}") for s in sizes]

    def est(p: dict, what: str) -> Optional[dict]:
        return p["no_ft"] if what == "no_ft" else p["ft"].get(what)

    if not any(est(p, w) for ps in points.values() for p in ps for w, _ in panels):
        return None
    from .plots import save_figure

    plt = _plt()
    styles = _style(list(points) + list(flat))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.8), squeeze=False)
    for ax, (what, title) in zip(axes[0], panels):
        for m, ps in points.items():
            have = [(p["flops"], est(p, what)) for p in ps if est(p, what)]
            if not have:
                continue
            xs, es = [x for x, _ in have], [e for _, e in have]
            ax.errorbar(xs, [math.exp(e["nll"]) for e in es], yerr=_yerr(es), marker=styles[m]["marker"],
                        color=styles[m]["color"], capsize=2, label=label(m), linestyle="-" if label(m) == m else "--")
        for m, f in flat.items():
            e = f.get(what)
            if e:
                ax.axhline(math.exp(e["nll"]), color=styles[m]["color"], linestyle=":", linewidth=1.5,
                           label=f"{label(m)} (no generic cost)")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("pretraining FLOPs (log)", fontsize=8)
        ax.grid(True, which="both", alpha=0.2)
        if ax.has_data():
            _axes(ax, log_y=False)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("macro perplexity (domain test)")
    handles, labels = {}, []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    labels = list(handles)
    fig.legend([handles[x] for x in labels], labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8,
               frameon=False)
    fig.suptitle("Specialized perplexity against pretraining cost (the paper's Fig. 4)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    save_figure(fig, Path(out))
    return Path(out)
