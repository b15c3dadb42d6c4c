"""Pictures of the experiment grid: what ``eval/<name>.md`` says, as two PNGs.

``eval/<name>.png``
    left: macro perplexity (log) against the specialization-set size (log, token order),
    one line per method; right: macro perplexity against the total FLOPs of serving every
    domain of the grid at the largest size present, ``generic + N x specialization per
    domain`` (docs/paper.md Eq. 1 with N = the grid's domains), one labelled point per method.
``eval/<name>-domains.png``
    one small panel per domain: perplexity against size, one line per method.

Conventions shared by both: a method keeps its color (and marker) in every figure and
every run (its place in the grid's method order); methods whose specialized model is the
large shape are dashed and labelled "(large)"; a macro average over fewer domains than
the grid has is drawn with a hollow marker. Both files are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..core import atomic
from .results import METHOD_ORDER, grid_rows, macro_rows, order_methods
from ..methods.sizes import parse_size

DPI = 90
_MARKERS = "osD^vP*Xhp<>"


def _palette() -> list:
    import matplotlib

    return list(matplotlib.colormaps["tab10"].colors) + list(matplotlib.colormaps["Dark2"].colors)


def method_styles(methods: list[str]) -> dict[str, dict]:
    """Color and marker per method: known methods by their place in the grid order (the
    same in every run), others after them in name order."""
    colors = _palette()
    unknown = sorted(m for m in methods if m not in METHOD_ORDER)
    out = {}
    for m in methods:
        i = METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER) + unknown.index(m)
        out[m] = {"color": colors[i % len(colors)], "marker": _MARKERS[i % len(_MARKERS)]}
    return out


def size_positions(rows: list[dict], sizes: list[str]) -> dict[str, float]:
    """x of each size: its token count; "all" sits at the mean train tokens its rows used
    (their plan), else at twice the largest numbered size."""
    xs: dict[str, float] = {}
    for s in sizes:
        t = parse_size(s)
        if t is not None:
            xs[s] = float(t)
    for s in sizes:
        if s in xs:
            continue
        used = [r.get("extra", {}).get("plan", {}).get("train_tokens") for r in rows if r["size"] == s]
        used = [u for u in used if isinstance(u, (int, float)) and u > 0]
        if used:
            xs[s] = float(sum(used) / len(used))
        else:
            xs[s] = 2.0 * max(xs.values()) if xs else 1.0
    return xs


def _is_large(method: str, rows: list[dict]) -> bool:
    return any(not r.get("small_at_inference", True) for r in rows if r["method"] == method)


def _label(method: str, rows: list[dict]) -> str:
    return f"{method} (large)" if _is_large(method, rows) else method


def _bars(ax, xs, points: list[dict], style) -> None:
    """Vertical error bars (``ppl_lo`` .. ``ppl_hi``: the bootstrap interval, or one sd over
    seeds) at the points that have them."""
    have = [(x, p) for x, p in zip(xs, points) if p.get("ppl_lo") is not None and p.get("ppl_hi") is not None]
    if have:
        ys = [p["ppl"] for _, p in have]
        err = [[max(p["ppl"] - p["ppl_lo"], 0.0) for _, p in have], [max(p["ppl_hi"] - p["ppl"], 0.0) for _, p in have]]
        ax.errorbar([x for x, _ in have], ys, yerr=err, fmt="none", ecolor=style["color"], elinewidth=1.0, capsize=3)


def _line(ax, xs, ys, complete, style, large):
    """A line through the points, filled markers where complete, hollow where not."""
    ax.plot(xs, ys, color=style["color"], linestyle="--" if large else "-", linewidth=1.4)
    for x, y, ok in zip(xs, ys, complete):
        ax.plot([x], [y], linestyle="none", marker=style["marker"], markersize=6, color=style["color"],
                markerfacecolor=style["color"] if ok else "white", markeredgewidth=1.3)


def _size_axis(ax, xs: dict[str, float]) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_xticks([xs[s] for s in xs], list(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    lo, hi = min(xs.values()), max(xs.values())
    ax.set_xlim(lo / 1.6, hi * 1.6)


def _spread_labels(ax, points: list[tuple[float, float, str, dict]]) -> None:
    """Label the points, nudging labels apart vertically where they would overlap."""
    fig = ax.figure
    fig.canvas.draw()
    trans = ax.transData
    placed: list[tuple[float, float]] = []  # display coords of placed labels
    gap = 11.0  # pixels between label baselines
    for x, y, text, style in sorted(points, key=lambda p: p[1]):
        px, py = trans.transform((x, y))
        ly = py
        for _ in range(len(placed) + 1):
            clash = [q for q in placed if abs(q[0] - px) < 90 and abs(q[1] - ly) < gap]
            if not clash:
                break
            ly = max(q[1] for q in clash) + gap
        placed.append((px, ly))
        a = ax.annotate(text, (x, y), xytext=(7, ly - py), textcoords="offset pixels", fontsize=7,
                        color=style["color"], va="center",
                        arrowprops={"arrowstyle": "-", "color": style["color"], "lw": 0.5} if ly != py else None)
        a.set_in_layout(False)


def _legend_below(fig, methods: list[str], styles: dict, rows: list[dict], hollow: bool) -> None:
    """One legend for the whole figure, under the panels: line style and marker per method."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=styles[m]["color"], marker=styles[m]["marker"], markersize=6,
                      linestyle="--" if _is_large(m, rows) else "-") for m in methods]
    labels = [_label(m, rows) for m in methods]
    if hollow:
        handles.append(Line2D([], [], linestyle="none", marker="o", color="gray", markerfacecolor="white"))
        labels.append("hollow: not every domain yet")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Round tick values for a log axis from lo to hi: a few per decade, more when the
    axis spans less than a decade, evenly spaced ones when it spans almost nothing."""
    from matplotlib.ticker import MaxNLocator

    ticks: list[float] = []
    for subs in ((1,), (1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 4, 5, 6, 8), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in subs if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 4:
            break
    if len(ticks) < 3:  # less than a factor 1.3 across
        ticks = [t for t in MaxNLocator(nbins=4).tick_values(lo, hi) if lo <= t <= hi]
    return ticks


def _number_axis(ax) -> None:
    """Plain numbers on a log y axis (250, 400, 600 rather than 6 x 10^2). Call once the
    data is drawn."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.yaxis.set_major_locator(FixedLocator(_log_ticks(*ax.get_ylim())))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _flops_axis(ax) -> None:
    """FLOPs on a log x axis as 2e12, 5e12, 1e13. Call once the limits are set."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    def fmt(v, _):
        mant, exp = f"{v:.1e}".split("e")
        return f"{float(mant):g}e{int(exp)}"

    ax.xaxis.set_major_locator(FixedLocator(_log_ticks(*ax.get_xlim())))
    ax.xaxis.set_major_formatter(FuncFormatter(fmt))
    ax.xaxis.set_minor_formatter(NullFormatter())


def cost_size(rows: list[dict], methods: list[str], sizes: list[str]) -> str:
    """The size the cost panel shows: the largest at which every method has a row (a grid
    runs size-major, so mid-grid the largest size holds only the first methods), else the
    largest size present."""
    have = {(r["method"], r["size"]) for r in rows}
    full = [s for s in sizes if all((m, s) in have for m in methods)]
    return full[-1] if full else sizes[-1]


def plot_rows(rows: list[dict], macro_png: Path, domains_png: Path, title: str,
              macro: Optional[dict] = None) -> tuple[Path, Path]:
    """Draw both figures from grid rows of one config (see the module doc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no grid rows to plot")
    methods = order_methods(list(dict.fromkeys(r["method"] for r in rows)))
    domains = sorted({r["domain"] for r in rows})
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    sizes.sort(key=lambda s: parse_size(s) or math.inf)
    xs = size_positions(rows, sizes)
    styles = method_styles(methods)
    macro = macro if macro is not None else macro_rows(rows)
    n_dom = len(domains)

    # --- macro figure
    legend_rows = math.ceil((len(methods) + 1) / 5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4 + 0.2 * legend_rows), layout="constrained")
    hollow = False
    for m in methods:
        ss = [s for s in sizes if (m, s) in macro]
        complete = [len(macro[(m, s)]["domains"]) == n_dom for s in ss]
        hollow |= not all(complete)
        _line(left, [xs[s] for s in ss], [macro[(m, s)]["ppl"] for s in ss], complete, styles[m], _is_large(m, rows))
        _bars(left, [xs[s] for s in ss], [macro[(m, s)] for s in ss], styles[m])
    left.set_yscale("log")
    _number_axis(left)
    _size_axis(left, xs)
    left.set_xlabel("specialization set (train tokens per domain)")
    left.set_ylabel("macro perplexity (test)")
    left.set_title("macro perplexity vs specialization size", fontsize=10)
    left.grid(True, which="both", alpha=0.3)

    top = cost_size(rows, methods, sizes)
    points = []
    for m in methods:
        rs = [r for r in rows if r["method"] == m and r["size"] == top]
        if not rs:
            continue
        gen = max(r["cost"]["generic"]["flops"] for r in rs)
        spec = sum(r["cost"]["specialization"]["flops"] for r in rs) / len(rs)
        total = gen + n_dom * spec
        mac = macro[(m, top)]
        ok = len(mac["domains"]) == n_dom
        st = styles[m]
        right.plot([total], [mac["ppl"]], linestyle="none", marker=st["marker"], markersize=7, color=st["color"],
                   markerfacecolor=st["color"] if ok else "white", markeredgewidth=1.3)
        _bars(right, [total], [mac], st)
        points.append((total, mac["ppl"], _label(m, rows), st))
    right.set_yscale("log")
    _number_axis(right)
    if points and all(p[0] > 0 for p in points):
        right.set_xscale("log")
        lo, hi = min(p[0] for p in points), max(p[0] for p in points)
        right.set_xlim(lo / 1.5, hi * 3.0)  # room on the right for the labels
        _flops_axis(right)
    right.set_xlabel(f"total FLOPs to serve {n_dom} domain{'s' * (n_dom != 1)} (generic + {n_dom} x spec.)")
    right.set_ylabel("macro perplexity (test)")
    right.set_title(f"macro perplexity vs cost, size {top}", fontsize=10)
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    _legend_below(fig, methods, styles, rows, hollow)
    _spread_labels(right, points)
    save_figure(fig, macro_png)

    # --- one panel per domain
    cols = min(3, n_dom)
    nrows = math.ceil(n_dom / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols, 2.7 * nrows + 0.5 + 0.2 * legend_rows),
                             squeeze=False, layout="constrained")
    by = {(r["method"], r["domain"], r["size"]): r for r in rows}
    for ax, d in zip(axes.flat, domains):
        for m in methods:
            ss = [s for s in sizes if (m, d, s) in by]
            if not ss:
                continue
            _line(ax, [xs[s] for s in ss], [by[(m, d, s)]["ppl"] for s in ss], [True] * len(ss), styles[m],
                  _is_large(m, rows))
            _bars(ax, [xs[s] for s in ss], [by[(m, d, s)] for s in ss], styles[m])
        ax.set_yscale("log")
        _number_axis(ax)
        _size_axis(ax, xs)
        ax.set_title(d, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[n_dom:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("perplexity (test)", fontsize=9)
    for ax in axes[-1, :]:
        ax.set_xlabel("train tokens per domain", fontsize=9)
    fig.suptitle(f"{title}: per domain", fontsize=11)
    _legend_below(fig, methods, styles, rows, False)
    save_figure(fig, domains_png)
    return macro_png, domains_png


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def run_title(results: Path) -> str:
    """"<preset> preset, run <folder>: <name>" when the run's config.toml says, else the file name."""
    cfg = results.parent.parent / "config.toml"
    try:
        import tomllib

        preset = tomllib.loads(cfg.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError):
        preset = None
    if preset:
        return f"{preset} preset, run {results.parent.parent.name}: {results.stem}"
    return results.name


def plot_grid(
    results: str | Path,
    chash: Optional[str] = None,
    out_dir: Optional[str | Path] = None,
    title: Optional[str] = None,
) -> Optional[tuple[Path, Path]]:
    """Write ``<name>.png`` and ``<name>-domains.png`` for the rows of ``results``
    (``eval/<name>.jsonl``) with config hash ``chash`` (default: that of the last row),
    next to it or in ``out_dir``. Returns the two paths, or None when there is no row."""
    results = Path(results)
    if chash is None:
        last = atomic.read_jsonl(results)[-1:]
        chash = last[0].get("config") if last else None
    rows = list(grid_rows(results, chash).values())
    if not rows:
        return None
    out = Path(out_dir) if out_dir is not None else results.parent
    from .results import _replicates, macro_table

    macro = macro_table(results, chash, _replicates(results) or 1000)
    return plot_rows(rows, out / f"{results.stem}.png", out / f"{results.stem}-domains.png",
                     title or run_title(results), macro=macro)
