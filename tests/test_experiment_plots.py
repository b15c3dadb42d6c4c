"""Plots of the experiment grid, drawn from hand-written result rows (the grid's file format)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402

from speclm.core import atomic
from speclm.report.results import write_table
from speclm.report.plots import DPI, cost_size, method_styles, plot_grid, size_positions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHASH = "0123456789abcdef"


def row(method, domain, size, nll, gen=1e12, spec=1e11, small=True, chash=CHASH, train_tokens=None):
    r = {
        "method": method, "domain": domain, "size": size, "config": chash, "nll": nll, "ppl": math.exp(nll),
        "cost": {"generic": {"flops": gen, "device_hours": 0.1, "tokens": 10, "wall_seconds": 1.0},
                 "specialization": {"flops": spec, "device_hours": 0.01, "tokens": 5, "wall_seconds": 0.5}},
        "small_at_inference": small, "shared_pretraining": gen > 0, "extra": {},
    }
    if train_tokens:
        r["extra"] = {"plan": {"train_tokens": train_tokens}}
    return r


def grid_rows(methods=("slm", "slm-nopt", "llm"), domains=("kjv", "legal", "wordnet"), sizes=("4k", "16k", "all")):
    out = []
    for i, s in enumerate(sizes):
        for j, m in enumerate(methods):
            for k, d in enumerate(domains):
                out.append(row(m, d, s, 6.0 - 0.3 * i + 0.1 * j + 0.05 * k, gen=0.0 if m == "slm-nopt" else 1e12 * (j + 1),
                               small=m != "llm", train_tokens=40_000 if s == "all" else None))
    return out


def write_rows(tmp_path, rows, name="results"):
    path = tmp_path / "eval" / f"{name}.jsonl"
    for r in rows:
        atomic.append_jsonl(path, r)
    return path


def check_png(path, width_in):
    assert path.exists()
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[1] == round(width_in * DPI) and img.shape[0] > 200
    assert img.std() > 0.01  # not a blank canvas
    return img


def no_temps(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_full_grid_two_pngs_and_table_links(tmp_path):
    results = write_rows(tmp_path, grid_rows())
    macro, domains = plot_grid(results)
    assert macro == results.with_suffix(".png") and domains == results.parent / "results-domains.png"
    check_png(macro, 11)
    check_png(domains, 3 * 3.8)  # three domains: one row of three panels
    assert no_temps(results.parent)

    table = results.with_suffix(".md")
    write_table(results, table, CHASH)
    text = table.read_text()
    assert "](results.png)" in text and "](results-domains.png)" in text


def test_out_dir_and_other_config_ignored(tmp_path):
    rows = grid_rows(sizes=("4k",)) + [row("slm", "kjv", "1M", 5.0, chash="ffffffffffffffff")]
    results = write_rows(tmp_path, rows)
    out = tmp_path / "plots"
    # the last row's config is the default: one row, one domain, one panel
    macro, domains = plot_grid(results, out_dir=out)
    assert macro.parent == out and not results.with_suffix(".png").exists()
    check_png(domains, 3.8)
    macro, domains = plot_grid(results, chash=CHASH, out_dir=out)
    check_png(domains, 3 * 3.8)
    assert plot_grid(results, chash="not-a-config") is None
    assert plot_grid(tmp_path / "missing.jsonl") is None


def test_incomplete_grid_still_plots(tmp_path):
    rows = grid_rows()
    # a grid stopped mid-way: size-major, so "all" has only slm on two domains, 16k lacks llm/wordnet
    rows = [r for r in rows if not (r["size"] == "all" and (r["method"] != "slm" or r["domain"] == "wordnet"))]
    rows = [r for r in rows if not (r["size"] == "16k" and r["method"] == "llm" and r["domain"] == "wordnet")]
    results = write_rows(tmp_path, rows)
    macro, domains = plot_grid(results)
    check_png(macro, 11)
    check_png(domains, 3 * 3.8)
    assert cost_size(rows, ["slm", "slm-nopt", "llm"], ["4k", "16k", "all"]) == "16k"


def test_single_size_and_single_method(tmp_path):
    results = write_rows(tmp_path, grid_rows(methods=("slm",), domains=("kjv", "legal", "python_code", "wordnet"),
                                             sizes=("16k",)))
    macro, domains = plot_grid(results)
    check_png(macro, 11)
    img = check_png(domains, 3 * 3.8)  # four domains: two rows of three panels
    assert img.shape[0] > round(2 * 2.7 * DPI)


def test_failed_write_leaves_old_png_and_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    results = write_rows(tmp_path, grid_rows(sizes=("4k",)))
    macro, _ = plot_grid(results)
    before = macro.read_bytes()
    atomic.append_jsonl(results, row("slm-d", "kjv", "4k", 4.0))

    def broken_savefig(self, fname, *args, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG_MAGIC + b"half")  # a torn write, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_grid(results)
    assert macro.read_bytes() == before
    assert no_temps(results.parent)


def test_styles_stable_and_all_position():
    a = method_styles(["slm", "llm"])
    b = method_styles(["llm", "slm-pn", "slm", "zeta", "alpha"])
    assert a["slm"] == b["slm"] and a["llm"] == b["llm"]
    assert len({str(s["color"]) for s in b.values()}) == len(b)  # every method its own color
    rows = [row("slm", "kjv", "all", 5.0, train_tokens=30_000), row("slm", "legal", "all", 5.0, train_tokens=50_000)]
    assert size_positions(rows, ["4k", "16k", "all"]) == {"4k": 4000.0, "16k": 16000.0, "all": 40000.0}
    assert size_positions([row("slm", "kjv", "all", 5.0)], ["4k", "all"])["all"] == 8000.0


def test_a_row_computed_twice_counts_once(tmp_path):
    """Two grid processes over the same method can both append a row: the table's macro
    uses one row per (method, domain, size), the last written."""
    from speclm.report.results import grid_rows as rows_of

    rows = [row("slm", "kjv", "4k", 3.0), row("slm", "legal", "4k", 6.0), row("slm", "kjv", "4k", 4.0)]
    results = write_rows(tmp_path, rows)
    got = rows_of(results, CHASH)
    assert len(got) == 2 and got[("slm", "kjv", "4k")]["nll"] == 4.0
    table = results.with_suffix(".md")
    write_table(results, table, CHASH)
    macro = f"{math.exp((4.0 + 6.0) / 2):.2f}"
    cells = [c.strip() for c in next(x for x in table.read_text().splitlines() if x.startswith("| slm |")).split("|")]
    assert cells[2:5] == ["54.60", "403.43", macro], cells  # kjv (the last row), legal, macro
