"""`speclm plan`: which recipe fits the user's budgets, from hand-built grid rows (the
grid's results file format, written to a temporary run's eval/results.jsonl)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402

from speclm.core import atomic
from speclm.core.errors import SpeclmError
from speclm.report.rows import config_hash
from speclm.report.plan import candidates as _candidates, paper_advice, paper_crossover, plan_rows, recommend
from speclm.report.plan_picture import plan_picture, region_map
from speclm.core.run import open_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOMAINS = ("kjv", "legal")


def row(method, domain, nll, gen, spec, small=True, size="64k", chash="c0ffee", shared=None):
    return {
        "method": method, "domain": domain, "size": size, "config": chash, "nll": nll, "ppl": math.exp(nll),
        "cost": {"generic": {"flops": gen, "device_hours": gen / 1e3, "tokens": 1, "wall_seconds": 1.0},
                 "specialization": {"flops": spec, "device_hours": spec / 1e3, "tokens": 1, "wall_seconds": 1.0}},
        "small_at_inference": small, "shared_pretraining": gen > 0 if shared is None else shared,
        "inference_params": 10 if small else 100, "extra": {},
    }


def grid(chash="c0ffee"):
    """slm-is: per-domain (0 + N x 10), best small ppl; slm-pn: shared (50 + N x 2, its two
    domains cost 1 and 3 and their generic 50 and 48); slm: shared (40 + N x 1), worse;
    llm: large, best ppl of all; slm-mix: the best ppl but only one domain (incomplete);
    slm-nopt: only at another size."""
    rows = []
    for d, (pn_gen, pn_spec) in zip(DOMAINS, [(50.0, 1.0), (48.0, 3.0)]):
        rows += [
            row("slm-is", d, 5.0, 0.0, 10.0, chash=chash),
            row("slm-pn", d, 5.5, pn_gen, pn_spec, chash=chash),
            row("slm", d, 5.8, 40.0, 1.0, chash=chash),
            row("llm", d, 4.5, 200.0, 5.0, small=False, chash=chash),
            row("slm-nopt", d, 6.0, 0.0, 3.0, size="16k", chash=chash),
        ]
    rows.append(row("slm-mix", "kjv", 4.0, 30.0, 1.0, chash=chash))
    return rows


def by_method(plan):
    return {p.method: p for p in plan}


def test_cost_formula_max_generic_plus_n_times_mean_spec():
    plan = by_method(plan_rows(grid(), "64k", 3))
    pn = plan["slm-pn"]
    assert pn.generic == 50.0 and pn.spec == 2.0
    assert pn.total == 50.0 + 3 * 2.0
    assert plan["slm-is"].total == 30.0
    assert plan["slm"].total == 43.0
    assert pn.ppl == pytest.approx(math.exp(5.5))
    # the other cost unit reads the device-hours fields
    dh = by_method(plan_rows(grid(), "64k", 3, cost="device_hours"))["slm-pn"]
    assert dh.total == pytest.approx((50.0 + 3 * 2.0) / 1e3)


def test_sorted_admissible_first_by_ppl_with_reasons():
    plan = plan_rows(grid(), "64k", 1)
    names = [p.method for p in plan]
    assert names[:3] == ["slm-is", "slm-pn", "slm"]
    assert all(p.admissible for p in plan[:3]) and not any(p.admissible for p in plan[3:])
    why = {p.method: p.why_not for p in plan}
    assert why["llm"] == "large at inference"
    assert why["slm-mix"].startswith("incomplete (1/2 domains)")
    assert "slm-nopt" not in names  # not at this size


def test_one_domain_picks_per_domain_pretraining_and_many_domains_switch_to_shared():
    budget = 80.0  # slm-is fits up to N=8, slm-pn up to N=15, slm up to N=40
    one = recommend(grid(), "64k", 1, budget=budget)
    assert one.method == "slm-is"
    assert one.reason.startswith("few domains: a per-domain pretraining (slm-is) is affordable")
    # 10 N = 50 + 2 N  ->  N = 6.25: beyond it, the shared slm-pn is cheaper
    assert "beyond N≈6.25 domains, slm-pn becomes cheaper than slm-is" in one.crossover
    assert one.switch == "slm-is fits the budget up to N=8 domains; beyond, slm-pn (ppl 244.7)"
    nine = recommend(grid(), "64k", 9, budget=budget)
    assert nine.method == "slm-pn"
    assert nine.reason.startswith("many domains: shared pretraining wins (slm-pn")
    assert "slm-is" in nine.reason  # the better one it had to give up
    assert recommend(grid(), "64k", 16, budget=budget).method == "slm"


def test_without_budget_best_ppl_wins_whatever_it_costs():
    rec = recommend(grid(), "64k", 1000)
    assert rec.method == "slm-is"
    assert rec.reason.startswith("no budget given")
    assert rec.switch is None


def test_inference_small_excludes_llm_and_any_allows_it():
    assert recommend(grid(), "64k", 1, inference="small").method == "slm-is"
    rec = recommend(grid(), "64k", 1, inference="any")
    assert rec.method == "llm"
    assert rec.reason.startswith("large inference budget")


def test_budget_excludes():
    plan = by_method(plan_rows(grid(), "64k", 9, budget=80.0))
    assert not plan["slm-is"].admissible
    assert plan["slm-is"].why_not == "over budget (9.00e+01 > 8.00e+01)"
    assert plan["slm-pn"].admissible


def test_the_ablation_is_listed_with_its_costs_and_never_recommended(tmp_path):
    """slm-is-full (slm-is at the full budget) has the best small perplexity and fits every
    budget here, yet no recommendation, crossover, "would cost" note or picture cell names it."""
    rows = grid() + [row("slm-is-full", d, 4.2, 0.0, 40.0) for d in DOMAINS]
    plan = by_method(plan_rows(rows, "64k", 1))
    full = plan["slm-is-full"]
    assert full.ablation and not full.admissible and full.why_not == "ablation of slm-is, not a recipe"
    assert full.total == 40.0 and full.complete  # its costs are shown as any method's
    assert "slm-is-full" not in [p.method for p in _candidates(list(plan.values()), "small")]
    for n, budget in ((1, None), (1, 80.0), (9, 80.0)):
        rec = recommend(rows, "64k", n, budget=budget)
        assert rec.method == recommend(grid(), "64k", n, budget=budget).method != "slm-is-full"
        assert "slm-is-full" not in rec.reason + (rec.crossover or "") + (rec.switch or "")
    with pytest.raises(SpeclmError) as e:  # what to relax never points at the ablation
        recommend(rows, "64k", 41, budget=30.0)
    assert "slm-is-full" not in str(e.value)
    from speclm.report.plots import method_styles

    img = mpimg.imread(plan_picture(rows, "64k", tmp_path / "plan.png"))[..., :3]
    styles = method_styles(["slm-is", "slm-is-full"])
    share = {m: (abs(img - styles[m]["color"]).sum(axis=-1) < 0.02).mean() for m in styles}
    assert share["slm-is"] > 0.05 and share["slm-is-full"] == 0  # no cell is the ablation's


def test_nothing_fits_says_what_to_relax():
    with pytest.raises(SpeclmError) as e:
        recommend(grid(), "64k", 41, budget=80.0)
    msg = str(e.value)
    assert "\n" not in msg
    assert "nothing fits 41 domains" in msg
    assert "raise --budget to at least 8.10e+01 (slm)" in msg
    assert "serve at most 40 domains" in msg


def test_only_incomplete_or_large_methods_is_an_error():
    rows = [r for r in grid() if r["method"] in ("llm", "slm-mix")]
    with pytest.raises(SpeclmError, match="--inference any"):
        recommend(rows, "64k", 1)
    with pytest.raises(SpeclmError, match="sizes present: 16k, 64k"):
        plan_rows(grid(), "8k", 1)


@pytest.mark.parametrize("kwargs,match", [
    ({"n_domains": 0}, "--n-domains"), ({"budget": 0.0}, "--budget"), ({"budget": -1.0}, "--budget"),
    ({"inference": "tiny"}, "--inference"), ({"cost": "dollars"}, "--cost"),
])
def test_bad_arguments(kwargs, match):
    args = {"n_domains": 1, **kwargs}
    with pytest.raises(SpeclmError, match=match):
        plan_rows(grid(), "64k", **args)


def test_region_map_agrees_with_recommend():
    cands = _candidates(plan_rows(grid(), "64k", 1), "small")
    ns, budgets = [1, 5, 9, 16, 41, 300], [9.0, 10.0, 45.0, 80.0, 1e3, 1e5]
    choice = region_map(cands, ns, budgets)
    for j, b in enumerate(budgets):
        for i, n in enumerate(ns):
            try:
                want = recommend(grid(), "64k", n, budget=b).method
            except SpeclmError:
                want = None
            got = cands[choice[j, i]].method if choice[j, i] < len(cands) else None
            assert got == want, (n, b)


def test_picture_is_a_png_with_the_methods_colors(tmp_path):
    from speclm.report.plots import method_styles

    out = plan_picture(grid(), "64k", tmp_path / "plan.png", point=(3, 80.0))
    assert out.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(out)[..., :3]
    assert img.shape[0] > 300 and img.shape[1] > 400
    # the per-domain method's region (few domains, large budgets) shows in its grid color
    color = method_styles(["slm-is"])["slm-is"]["color"]
    close = (abs(img - color).sum(axis=-1) < 0.02).mean()
    assert close > 0.05


def test_paper_advice():
    assert paper_crossover() == pytest.approx(650 / 129.5)
    few = "\n".join(paper_advice(2, "small"))
    many = "\n".join(paper_advice(50, "small"))
    assert "slm-is" in few.splitlines()[2] and "few domains" in few
    assert "slm-pn / slm-mix" in many.splitlines()[2] and "many domains" in many
    assert "large model" in "\n".join(paper_advice(2, "any"))


# --- the command ----------------------------------------------------------------------


@pytest.fixture
def run_with_grid(tmp_path):
    run = open_run(tmp_path / "run", "tiny", [], save=True)
    for r in grid(config_hash(run)):
        atomic.append_jsonl(run.path / "eval" / "results.jsonl", r)
    return run.path


def test_cli_prints_the_recommendation_and_writes_the_picture(cli, run_with_grid):
    code, out, err = cli("plan", "--run", run_with_grid, "--n-domains", "1", "--size", "64k", "--budget", "80")
    assert code == 0, err
    assert "recommended: slm-is" in out
    assert "crossover: beyond N≈6.25 domains, slm-pn becomes cheaper than slm-is" in out
    assert "no: large at inference" in out and "no: incomplete (1/2 domains)" in out
    # these hand-made rows have no large model or curves: out of the paper's regime, said in one
    # sentence with the paper's own advice beside the run's
    assert "regime: this run is outside the paper's regime" in out and "Figure 1 of the paper" in out
    png = run_with_grid / "eval" / "plan.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"picture: {png}" in out
    code, out, err = cli("plan", "--run", run_with_grid, "--n-domains", "20", "--size", "64k", "--budget", "80",
                         "--out", run_with_grid / "other.png")
    assert code == 0, err
    assert "recommended: slm " in out
    assert (run_with_grid / "other.png").exists()


def test_cli_paper_needs_no_run(cli):
    code, out, err = cli("plan", "--paper", "--n-domains", "50")
    assert code == 0, err
    assert "docs/paper.md §8" in out and "slm-pn" in out


@pytest.mark.parametrize("args,match", [
    (["--n-domains", "0", "--size", "64k"], "--n-domains"),
    (["--size", "8k"], "sizes present: 16k, 64k"),
    (["--size", "64k", "--budget", "0"], "--budget"),
    (["--size", "64k", "--inference", "tiny"], "--inference"),
    (["--size", "64k", "--cost", "dollars"], "--cost"),
    (["--size", "64k", "--n-domains", "41", "--budget", "80"], "nothing fits"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(cli, run_with_grid, args, match):
    code, out, err = cli("plan", "--run", run_with_grid, *args)
    assert code == 2
    assert err.startswith("speclm: error:") and match in err and err.count("\n") == 1
    assert not (run_with_grid / "eval" / "plan.png").exists()


def test_cli_no_results(cli, tmp_path):
    run = open_run(tmp_path / "run", "tiny", [], save=True)
    code, _, err = cli("plan", "--run", run.path, "--size", "64k")
    assert code == 2 and "no grid results" in err and err.count("\n") == 1
    for r in grid("another-config"):
        atomic.append_jsonl(run.path / "eval" / "results.jsonl", r)
    code, _, err = cli("plan", "--run", run.path, "--size", "64k")
    assert code == 2 and "rows from another config" in err
    code, _, err = cli("plan", "--run", tmp_path / "missing", "--size", "64k")
    assert code == 2 and "no run folder" in err


def test_run_summary_after_the_grid(run_with_grid):
    """What `speclm run` prints after its grid: the best small model at the largest size
    every method has (for one domain, no budget), its crossover, and eval/plan.png."""
    from speclm.grid.pipeline import run_summary

    lines = run_summary(open_run(run_with_grid, None, []))
    assert lines[0].startswith("plan (size ") and "best perplexity" in lines[0]
    assert any("cheaper" in x for x in lines[1:]), lines
    assert (run_with_grid / "eval" / "plan.png").read_bytes()[:8] == PNG_MAGIC
    assert "speclm plan --run" in lines[-1]


def test_regime_caveat_only_out_of_the_regime():
    from speclm.report.regime import regime_lines

    def premises(sat: bool, ratio: bool) -> dict:
        return {"table": [
            {"key": "slm_saturated", "label": "slm capacity-bound", "text": "llm 20 vs slm 22", "threshold": "< 0", "met": sat},
            {"key": "pretrain_to_spec", "label": "pretraining / set", "text": "128x", "threshold": ">= 100x", "met": ratio}]}

    assert regime_lines(premises(True, True), 10) == []  # in the regime: the run's own plan stands alone
    out = regime_lines(premises(False, True), 10)
    assert "slm capacity-bound: llm 20 vs slm 22 (want < 0)" in out[0] and "pretraining / set" not in out[0]
    assert any("projected network or hard mixture" in line for line in out)  # the paper's advice at N=10
    assert regime_lines(None, 1) == []


def test_premises_come_from_a_fresh_report_and_are_measured_when_it_is_stale(run_with_grid):
    import json
    import os

    from speclm.core.run import open_run
    from speclm.report.regime import run_premises

    run = open_run(run_with_grid, None, [], save=False)
    report = run_with_grid / "eval" / "report.json"
    results = run_with_grid / "eval" / "results.jsonl"
    report.write_text(json.dumps({"results": str(results), "premises": {"table": [], "sentinel": 1}}))
    assert run_premises(run)["sentinel"] == 1  # newer than the rows: read, not measured again
    os.utime(results, ns=(report.stat().st_mtime_ns + 10**9,) * 2)  # a row arrived after the report
    measured = run_premises(run)
    assert "sentinel" not in measured and measured["domains"] == 2
