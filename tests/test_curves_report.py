"""Operating curves over pretraining cost (eval/curves.jsonl): the report's Figures 3-4 and
Table 8 analogues and `speclm plan`'s partly pretrained candidates, from hand-made rows in
the curves file's schema (grid rows plus pretrain_fraction and pretrain_step) written into
a temporary run."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from speclm.core import atomic  # noqa: E402
from speclm.core.errors import SpeclmError  # noqa: E402
from speclm.core.run import open_run  # noqa: E402
from speclm.report.curve_reading import HINT, interpolate, spearman, swaps  # noqa: E402
from speclm.report.rows import config_hash  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
DOMAINS = ("a", "b")
SIZES = ("1k", "4k")
FULL = {"slm": 1e12, "slm-pn": 1.6e12}  # full pretraining FLOPs: pn's snapshots sit between slm's target costs


def row(method, domain, size, nll, gen, spec=1e9, pre=None, gen_nll=None, chash="x", small=True, shared=True, **extra):
    return {"method": method, "domain": domain, "size": size, "seed": 0, "config": chash, "nll": nll, "nll_se": 0.02,
            "ppl": math.exp(nll), "pretrained_nll": pre, "pretrained_nll_se": 0.03 if pre else None,
            "generic_valid_nll": gen_nll, "small_at_inference": small, "shared_pretraining": shared,
            "cost": {"generic": {"flops": gen, "tokens": 1, "device_hours": gen / 1e12, "wall_seconds": 1.0},
                     "specialization": {"flops": spec, "tokens": 1, "device_hours": spec / 1e12, "wall_seconds": 1.0}},
            "inference_params": 10, "stop": "early", **extra}


# (method, fraction) -> (generic valid NLL, no-FT NLL, {size: FT NLL}); domain b adds 0.2 everywhere.
# At slm's full cost (1e12, between pn's 0.5 and 1.0 snapshots) pn is ahead of slm before fine-tuning and at
# 1k, behind at 4k: one swap, and its head start shrinks.
CURVE = {
    ("slm", 0.25): (3.6, 3.4, {"1k": 2.3, "4k": 2.0}), ("slm", 0.5): (3.4, 3.2, {"1k": 2.15, "4k": 1.9}),
    ("slm", 1.0): (3.2, 3.0, {"1k": 2.0, "4k": 1.8}),
    ("slm-pn", 0.25): (3.3, 3.05, {"1k": 2.1, "4k": 2.0}), ("slm-pn", 0.5): (3.1, 2.95, {"1k": 1.95, "4k": 1.9}),
    ("slm-pn", 1.0): (2.9, 2.85, {"1k": 1.85, "4k": 1.8}),
}


def curve_rows(chash):
    out = []
    for (m, f), (g, pre, ft) in CURVE.items():
        for i, d in enumerate(DOMAINS):
            for s in SIZES:
                out.append(row(m, d, s, ft[s] + 0.2 * i, FULL[m] * f, pre=pre + 0.2 * i, gen_nll=g, chash=chash,
                               pretrain_fraction=f, pretrain_step=int(1000 * f)))
    return out


def results_rows(chash):
    rs = [r for r in curve_rows(chash) if r["pretrain_fraction"] == 1.0]
    for r in rs:
        del r["pretrain_fraction"], r["pretrain_step"]
    for i, d in enumerate(DOMAINS):  # slm-is: no generic cost, a flat line in Figure 4
        rs += [row("slm-is", d, s, 1.7 + 0.2 * i, 0.0, spec=3e11, pre=3.5 + 0.2 * i, chash=chash, shared=False)
               for s in SIZES]
    return rs


def make_run(tmp_path, curves=True, extra_lines=()):
    run = open_run(tmp_path / "run", "tiny", [], save=True)
    h = config_hash(run)
    for r in results_rows(h):
        atomic.append_jsonl(run.eval_dir / "results.jsonl", r)
    if curves:
        for r in curve_rows(h) + [row("slm", "a", "1k", 9.9, 1e9, chash="another-config", pretrain_fraction=7.0)]:
            atomic.append_jsonl(run.eval_dir / "curves.jsonl", r)
    for line in extra_lines:
        with open(run.eval_dir / "curves.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({**line, "config": h}) + "\n")
    return run


# --- interpolation and ranks -------------------------------------------------------------


def test_interpolation_is_linear_in_nll_against_log_cost_and_never_extrapolates():
    pts = [(1e12, 3.0), (4e12, 2.0), (2e13, 1.0)]
    assert interpolate(pts, 2e12) == pytest.approx(2.5)  # log-midpoint of 1e12 and 4e12
    assert interpolate(pts, 1e13) == pytest.approx(2.0 - math.log(2.5) / math.log(5))  # nearest two: 4e12, 2e13
    assert interpolate(pts, 4e12) == 2.0 and interpolate(pts, 1e12) == 3.0
    assert interpolate(pts, 0.5e12) is None and interpolate(pts, 3e13) is None
    assert interpolate(pts, 0.995e12) == 3.0 and interpolate(pts, 2.01e13) == 1.0  # within 1% of an end
    assert interpolate([(1e12, None), (4e12, 2.0)], 2e12) is None  # a point without the number does not count


def test_spearman_with_ties_and_swaps():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / 60
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3))  # tied ranks 1.5, 1.5, 3
    assert spearman([1, 2], [2, 1]) is None
    assert swaps({"x": 1, "y": 2, "z": 3}, {"x": 2, "y": 1, "z": 3}) == ([("x", "y")], 3)


def test_table8_costs_without_slm_are_the_largest_cost_every_curve_reaches():
    from speclm.report.curve_reading import curve_points, target_costs

    rows = [r for r in curve_rows("x") if r["method"] == "slm-pn"]
    rows += [{**r, "method": "llm", "cost": {**r["cost"], "generic": {"flops": r["cost"]["generic"]["flops"] * 2}}}
             for r in rows]
    costs, how = target_costs(curve_points(rows, list(DOMAINS), list(SIZES)))
    assert how == "the largest pretraining cost every curve reaches"
    assert costs == [(0.25, 0.4e12), (0.5, 0.8e12), (1.0, 1.6e12)]  # pn's full cost, not the llm's 3.2e12


# --- the report --------------------------------------------------------------------------


def _interp_ppl(m, what, target):
    """What Table 8 should print, recomputed from CURVE: macro NLL of each snapshot, then linear in log cost."""
    pts = []
    for (mm, f), (g, pre, ft) in CURVE.items():
        if mm == m:
            # the macro over a and b (b is 0.2 higher: +0.1); the generic NLL is one number for both
            pts.append((FULL[m] * f, g if what == "generic" else (pre if what == "no_ft" else ft[what]) + 0.1))
    pts.sort()
    for (ca, ya), (cb, yb) in zip(pts, pts[1:]):
        if ca <= target <= cb:
            return math.exp(ya + (math.log(target / ca) / math.log(cb / ca)) * (yb - ya))
    return None


def test_report_section_figures_and_table8_from_the_rows(tmp_path):
    from speclm.report.page import write_report

    run = make_run(tmp_path)
    md = write_report(run).read_text()
    ev = run.eval_dir
    for fig in ("report-fig3.png", "report-fig4.png"):
        assert (ev / fig).read_bytes()[:8] == PNG and f"]({fig})" in md
    html = (ev / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "report-fig3.png" not in html  # fig6, fig3, fig4 embedded
    section = md.split("## Operating curves over pretraining cost")[1].split("\n## ")[0]
    table = [ln for ln in section.splitlines() if ln.startswith("| ") and "e+" in ln]
    assert len(table) == 6  # 3 costs (0.25, 0.5, 1 x slm's full) x 2 methods
    for frac in (0.25, 0.5, 1.0):
        target = frac * FULL["slm"]
        for m in ("slm", "slm-pn"):
            line = next(ln for ln in table if ln.startswith(f"| {target:.3e} | {frac:g} | {m} |"))
            cells = [c.strip() for c in line.strip("|").split("|")][3:]
            want = [_interp_ppl(m, w, target) for w in ("generic", "no_ft", *SIZES)]
            assert cells == [f"{v:.2f}" if v is not None else "—" for v in want], (m, frac)
    pn_low = next(ln for ln in table if ln.startswith(f"| {0.25 * FULL['slm']:.3e} | 0.25 | slm-pn |"))
    assert pn_low.count("—") == 4  # 2.5e11 lies below pn's cheapest snapshot (4e11): not extrapolated
    assert "Interpolated linearly in NLL against log pretraining FLOPs" in section
    assert "slm-is (no generic cost, not in the table)" in section
    # the remarks, at slm's full cost: pn < slm before fine-tuning and at 1k, slm < pn at 4k
    at = {m: {w: _interp_ppl(m, w, FULL["slm"]) for w in ("no_ft", *SIZES)} for m in ("slm", "slm-pn")}
    assert at["slm-pn"]["no_ft"] < at["slm"]["no_ft"] and at["slm-pn"]["1k"] < at["slm"]["1k"]
    assert at["slm-pn"]["4k"] > at["slm"]["4k"]
    assert "1 of 2 pair orders change" in section and "FT 4k: slm < slm-pn (slm/slm-pn swapped)" in section
    # Spearman over the 6 snapshots: the same order at 1k; at 4k three tied pairs, ranks [1.5, 3.5, 1.5, 5.5,
    # 3.5, 5.5] against 1..6: 12 / sqrt(17.5 * 16)
    assert "ρ = +1.00 at 1k (6 snapshots)" in section and f"ρ = {12 / math.sqrt(17.5 * 16):+.2f} at 4k" in section
    for s in SIZES:
        assert f"{100 * (1 - at['slm-pn'][s] / at['slm'][s]):+.1f}% at {s}" in section
    assert "it shrinks from 1k to 4k" in section
    facts = json.loads((ev / "report.json").read_text())["curves"]
    assert facts["rows"] == len(CURVE) * len(DOMAINS) * len(SIZES)  # the other config's row does not count
    slm_full = next(p for p in facts["points"]["slm"] if p["fraction"] == 1.0)
    assert slm_full["ft"]["4k"]["nll"] == pytest.approx(1.9) and slm_full["flops"] == FULL["slm"]


def test_report_without_curves_is_one_hint_line(tmp_path):
    from speclm.report.page import write_report

    run = make_run(tmp_path, curves=False)
    md = write_report(run).read_text()
    section = md.split("## Operating curves over pretraining cost\n")[1].split("\n## ")[0]
    assert section.strip() == HINT and "methods.curve_methods" in HINT and "methods.curve_fractions" in HINT
    assert not (run.eval_dir / "report-fig3.png").exists() and not (run.eval_dir / "report-fig4.png").exists()


@pytest.mark.parametrize("bad,match", [
    ({"pretrain_step": 1}, "no pretrain_fraction"),
    ({"pretrain_fraction": 0.0}, "pretrain_fraction 0.0 is outside (0, 1]"),
    ({"pretrain_fraction": 1.5}, "pretrain_fraction 1.5 is outside (0, 1]"),
])
def test_bad_curves_rows_are_one_line_naming_file_and_line(tmp_path, cli, bad, match):
    good = {k: v for k, v in curve_rows("x")[0].items() if k not in ("pretrain_fraction", "config")}
    run = make_run(tmp_path, extra_lines=[{**good, **bad}])
    n = len(atomic.read_jsonl(run.eval_dir / "curves.jsonl"))  # the bad row is the last line
    with pytest.raises(SpeclmError, match=f"curves.jsonl line {n}: " + match.replace("(", r"\(").replace(")", r"\)")):
        from speclm.report.page import write_report

        write_report(run)
    code, _, err = cli("report", "--run", run.path)
    assert code == 2 and err.startswith("speclm: error:") and err.count("\n") == 1 and f"line {n}" in err


# --- the plan ----------------------------------------------------------------------------


def plan_grid(chash):
    """slm (full 100 FLOPs, best ppl), its snapshots at 25 and 50, and slm-is (30 per domain, worst)."""
    res = [row("slm", d, "1k", 2.0, 100.0, spec=1.0, chash=chash) for d in DOMAINS]
    res += [row("slm-is", d, "1k", 2.6, 0.0, spec=30.0, chash=chash, shared=False) for d in DOMAINS]
    cur = [row("slm", d, "1k", nll, gen, spec=1.0, chash=chash, pretrain_fraction=f, pretrain_step=int(f * 100))
           for f, gen, nll in ((0.25, 25.0, 2.4), (0.5, 50.0, 2.2), (1.0, 100.0, 2.0)) for d in DOMAINS]
    return res, cur


def test_plan_picks_a_snapshot_when_the_full_pretraining_does_not_fit():
    from speclm.report.plan import recommend

    res, cur = plan_grid("x")
    rec = recommend(res, "1k", 2, budget=60.0, curves=cur)
    assert rec.method == "slm@0.5" and rec.share == 0.5 and rec.ppl == pytest.approx(math.exp(2.2))
    assert "slm (ppl 7.389) would cost 1.02e+02 > budget" in rec.reason
    assert recommend(res, "1k", 2, budget=40.0, curves=cur).method == "slm@0.25"
    full = recommend(res, "1k", 2, budget=200.0, curves=cur)
    assert full.method == "slm" and full.share == 1.0
    assert recommend(res, "1k", 2, budget=60.0).method == "slm-is"  # without curves: as before


def test_plan_region_map_with_snapshots_agrees_with_recommend():
    from speclm.report.plan import candidates, plan_rows, recommend
    from speclm.report.plan_picture import region_map

    res, cur = plan_grid("x")
    cands = candidates(plan_rows(res, "1k", 1, curves=cur), "small")
    ns, budgets = [1, 2, 5, 40], [20.0, 40.0, 60.0, 110.0, 1e4]
    choice = region_map(cands, ns, budgets)
    for j, b in enumerate(budgets):
        for i, n in enumerate(ns):
            try:
                want = recommend(res, "1k", n, budget=b, curves=cur).method
            except SpeclmError:
                want = None
            assert (cands[choice[j, i]].label if choice[j, i] < len(cands) else None) == want, (n, b)


def test_cli_plan_reads_the_curves(tmp_path, cli):
    run = open_run(tmp_path / "run", "tiny", [], save=True)
    res, cur = plan_grid(config_hash(run))
    for r in res:
        atomic.append_jsonl(run.eval_dir / "results.jsonl", r)
    code, out, err = cli("plan", "--run", run.path, "--n-domains", "2", "--budget", "60")
    assert code == 0, err
    assert "pretraining share" not in out and "recommended: slm-is" in out  # no curves yet: as before
    for r in cur:
        atomic.append_jsonl(run.eval_dir / "curves.jsonl", r)
    code, out, err = cli("plan", "--run", run.path, "--n-domains", "2", "--budget", "60")
    assert code == 0, err
    assert "recommended: slm@0.5 (macro ppl 9.03, pretraining share 0.5)" in out
    head = out.splitlines()[1]
    assert "pretraining share" in head
    assert any(ln.startswith("slm@0.25 ") and " 0.25 " in ln for ln in out.splitlines())
    assert (run.eval_dir / "plan.png").read_bytes()[:8] == PNG
    # the snapshot's region shows in a lighter shade of slm's color
    import matplotlib.image as mpimg

    from speclm.report.plan_picture import shade
    from speclm.report.plots import method_styles

    img = mpimg.imread(run.eval_dir / "plan.png")[..., :3]
    color = shade(method_styles(["slm"])["slm"]["color"], 0.5)
    assert (abs(img - color).sum(axis=-1) < 0.02).mean() > 0.01


def test_prediction_words_follow_the_share_of_swapped_pairs():
    from speclm.report.curves_report import _prediction

    assert _prediction(0, 6) == "predicts the order after it here."
    assert "most of the order" in _prediction(1, 6)
    assert _prediction(3, 6) == "does not predict the order after it here."
    assert _prediction(1, 1) == "does not predict the order after it here."
