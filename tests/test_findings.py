"""The premises a run's findings stand on, and every verdict path of the seven findings, on
hand-made rows whose answer is known (no training: the whole file runs in seconds).

Premises come from :func:`speclm.report.premises.measure` on rows and curve rows written
here, with the tiny preset's real config; verdicts from :mod:`speclm.report.findings` on a
:class:`Grid` whose premises are either measured or written out (met / not met per key)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from scipy.stats import norm

from speclm.core.config import load
from speclm.report.evidence import Evidence, group
from speclm.report.findings import (HELD, INCONCLUSIVE, MARGIN, NOT_HELD, UNTESTABLE, Grid, asymmetric_beat_slm,
                                    check_all, diffuse_domains, distillation, fine_tuning_essential,
                                    importance_sampling_best, plan_early, pn_vs_mix)
from speclm.report.premises import measure
from speclm.report.stats import holm, holm_adjusted, p_greater, spearman_permutation, t_quantile

D3 = ["a", "b", "c"]
D6 = ["a", "b", "c", "d", "e", "f"]
SMALL = ("slm", "slm-d", "slm-is", "slm-mix", "slm-pn", "slm-nopt", "slm-is-full")


def row(method, domain, nll, se=0.01, size="1k", *, pre=None, pre_se=None, gen=1e12, gtokens=2e9, spec=1e9, seed=0,
        docs=None, gvn=None, gvn_se=None, params=None, extra=None, fraction=None):
    r = {"method": method, "domain": domain, "size": size, "nll": nll, "nll_se": se, "ppl": math.exp(nll),
         "pretrained_nll": pre, "pretrained_nll_se": pre_se, "seed": seed, "small_at_inference": method in SMALL,
         "shared_pretraining": method not in ("slm-is", "slm-nopt", "slm-is-full"), "extra": extra or {},
         "cost": {"generic": {"flops": gen, "tokens": gtokens}, "specialization": {"flops": spec, "tokens": 1e3}}}
    for k, v in (("eval_documents", docs), ("generic_valid_nll", gvn), ("generic_valid_nll_se", gvn_se),
                 ("inference_params", params), ("pretrain_fraction", fraction)):
        if v is not None:
            r[k] = v
    return r


def rows_of(method, nlls, domains=D3, **kw):
    """One row per domain: ``nlls`` a number (every domain) or a list (one per domain)."""
    nlls = nlls if isinstance(nlls, list) else [nlls] * len(domains)
    return [row(method, d, x, **kw) for d, x in zip(domains, nlls)]


def diff_se(s, domains=D3):
    """The SE of an unpaired macro difference of two single-seed methods whose rows all have SE ``s``."""
    return math.sqrt(2 * len(domains)) * s / len(domains)


# --- premises, written out -----------------------------------------------------------------

KEYS = ["pretrain_to_spec", "slm_saturated", "is_max_passes", "pn_param_ratio", "slm_loss_at_expert_budget_nats",
        "domains", "entropy_range_routing_k"]


def premises(fail=(), lbs=None):
    """Every premise met except those in ``fail``; ``lbs``: large_beats_small_by_size."""
    table = [{"key": k, "label": k.replace("_", " "), "text": f"value of {k}", "threshold": "its threshold",
              "met": k not in fail, "paper": "", "gates": []} for k in KEYS]
    return {"table": table, "large_beats_small_by_size": {"1k": True} if lbs is None else lbs}


def grid(rows, domains=D3, sizes=("1k",), pr=None, entropies=None, routing_k=None):
    methods = list(dict.fromkeys(r["method"] for r in rows))
    return Grid(group(rows), domains, list(sizes), methods, entropies or {}, None, pr or premises(),
                small=lambda m: m in SMALL, routing_k=routing_k or {"slm-mix": 4, "slm-pn": 4})


# --- premises, measured --------------------------------------------------------------------


def cfg(**methods):
    c = load("tiny")
    return dataclasses.replace(c, methods=dataclasses.replace(c.methods, **methods)) if methods else c


def regime_rows(domains=D3, llm_gvn=2.8, llm_gen=1e12, max_passes=3.0, sizes=("1k",), llm_nll=2.0, slm_nll=2.5):
    """A run in the paper's regime: slm 2,000 tokens per parameter, a large model better than it
    on generic valid at equal FLOPs and after fine-tuning, slm-is reading a window at most 3 times."""
    imp = {"importance": {"max_passes": max_passes, "mean_passes": 1.2, "kish_ess_fraction": 0.4, "draws": 1e6}}
    plan = {"plan": {"train_tokens": 16_000}}
    out = []
    for s in sizes:
        out += rows_of("slm", slm_nll, domains, size=s, gvn=3.0, gvn_se=0.01, params=1e6, extra=plan)
        out += rows_of("llm", llm_nll, domains, size=s, gvn=llm_gvn, gvn_se=0.01, params=1e7, gtokens=1e9,
                       gen=llm_gen, extra=plan)
        out += rows_of("slm-is", 2.4, domains, size=s, params=1e6, gen=0.0, extra={**imp, **plan})
        out += rows_of("slm-mix", 2.45, domains, size=s, params=1e6, gtokens=8e9, extra=plan)
        out += rows_of("slm-pn", 2.45, domains, size=s, params=1e6, extra=plan)
    return out


def slm_curve(points, method="slm", domains=D3):
    """Curve rows (fraction, FLOPs, generic valid NLL) of one method."""
    return [row(method, d, 2.5, gen=c, gvn=v, fraction=f) for f, c, v in points for d in domains]


def measured(rows, curves=(), config=None, clusters=None, domains=D3, sizes=("1k",)):
    g = group(rows)
    return measure(g, list(curves), config or cfg(), clusters or {}, Evidence(g, domains), list(sizes), domains)


def entropy_tables(values, k, other_k=None, other=None, domains=D3):
    t = {d: {str(k): {"entropy": v}} for d, v in zip(domains, values)}
    if other_k is not None:
        for d, v in zip(domains, other):
            t[d][str(other_k)] = {"entropy": v}
    return {"tables": t}


def test_tokens_per_parameter_from_params_and_generic_tokens():
    c = cfg(mix_k=4)
    pr = measured(regime_rows(), config=c)
    tpp = pr["tokens_per_param"]
    assert tpp["slm"] == pytest.approx(2e9 / 1e6) and tpp["large"] == pytest.approx(1e9 / 1e7)
    assert tpp["expert"] == pytest.approx(8e9 / 4 / 1e6)  # the mixture's tokens split over mix_k experts
    assert tpp["slm-is"] == pytest.approx(1e6 * c.tokens.window / 1e6)  # draws x window
    assert pr["pretrain_to_spec"] == pytest.approx(2e9 / 16_000) and pr["met"]["pretrain_to_spec"]
    short = [dict(r, cost={**r["cost"], "generic": {"flops": 1e12, "tokens": 1e6}}) for r in regime_rows()]
    assert measured(short)["met"]["pretrain_to_spec"] is False  # 62x < 100x
    no_params = [{k: v for k, v in r.items() if k != "inference_params"} for r in regime_rows()]
    assert measured(no_params)["tokens_per_param"]["slm"] is None


def test_slm_saturated_at_equal_flops():
    met = measured(regime_rows(llm_gvn=2.8))
    assert met["slm_saturated"] is True and met["met"]["slm_saturated"] is True
    assert measured(regime_rows(llm_gvn=3.1))["slm_saturated"] is False  # the large model is worse
    # lower, but not beyond the interval: 2.99 - 3.0 = -0.01 against 1.96 x sqrt(2) x 0.01
    close = measured(regime_rows(llm_gvn=2.99))
    assert close["slm_saturated"] is False
    text = next(p["text"] for p in close["table"] if p["key"] == "slm_saturated")
    assert "final checkpoints" in text and "-0.010" in text
    no_llm = measured([r for r in regime_rows() if r["method"] != "llm"])
    assert no_llm["slm_saturated"] is False and no_llm["large_beats_small"] is False


def test_slm_saturated_reads_the_large_model_at_the_slm_flops_on_its_curve():
    # llm pretrained 2e12 FLOPs (NLL 2.6), a snapshot at 5e11 (3.2); slm at 1e12 sits halfway in
    # log FLOPs: 2.9 (linear in FLOPs would read 3.0)
    rows = regime_rows(llm_gvn=2.6, llm_gen=2e12)
    curve = slm_curve([(0.25, 5e11, 3.2)], "llm")
    pr = measured(rows, curve)
    assert pr["slm_saturated"] is True
    sat = next(p for p in pr["table"] if p["key"] == "slm_saturated")
    assert sat["value"] == pytest.approx(2.9 - 3.0) and "interpolated" in sat["text"]
    above = [dict(r, generic_valid_nll=2.85) if r["method"] == "slm" else r for r in rows]
    assert measured(above, curve)["slm_saturated"] is False  # 2.9 > 2.85
    blind = measured(rows, [])  # no llm curve covers slm's FLOPs: not measured, not met
    assert blind["slm_saturated"] is False
    assert next(p["text"] for p in blind["table"] if p["key"] == "slm_saturated").startswith("n/a")


def test_slm_gain_over_its_last_doubling():
    pr = measured(regime_rows(), slm_curve([(0.5, 5e11, 3.04), (1.0, 1e12, 3.0)]))
    assert pr["slm_gain_last_doubling_nats"] == pytest.approx(0.04)
    between = measured(regime_rows(), slm_curve([(0.25, 2.5e11, 3.2), (1.0, 1e12, 3.0)]))
    assert between["slm_gain_last_doubling_nats"] == pytest.approx(0.1)  # halfway in log FLOPs
    assert measured(regime_rows(), slm_curve([(1.0, 1e12, 3.0)]))["slm_gain_last_doubling_nats"] is None
    assert measured(regime_rows())["slm_gain_last_doubling_nats"] is None
    assert "slm_gain_last_doubling_nats" not in measured(regime_rows())["met"]  # reference, not a gate


def test_large_beats_small_after_fine_tuning_per_size():
    both = measured(regime_rows(sizes=("1k", "4k")), sizes=("1k", "4k"))
    assert both["large_beats_small"] is True and both["large_beats_small_by_size"] == {"1k": True, "4k": True}
    rows = regime_rows(sizes=("1k",)) + regime_rows(sizes=("4k",), llm_nll=2.7)
    one = measured(rows, sizes=("1k", "4k"))
    assert one["large_beats_small"] is False and one["large_beats_small_by_size"] == {"1k": True, "4k": False}
    tie = measured(regime_rows(llm_nll=2.499))  # lower but within its interval: not decided, not met
    assert tie["large_beats_small"] is False and tie["large_beats_small_by_size"] == {"1k": False}


def test_importance_sampling_passes():
    assert measured(regime_rows(max_passes=3.0))["met"]["is_max_passes"] is True
    few = measured(regime_rows(max_passes=4.0))
    assert few["is_max_passes"] == 4.0 and few["met"]["is_max_passes"] is True
    many = measured(regime_rows(max_passes=9.0))
    assert many["is_max_passes"] == 9.0 and many["met"]["is_max_passes"] is False
    bare = [dict(r, extra={}) if r["method"] == "slm-is" else r for r in regime_rows()]
    none = measured(bare)
    assert none["is_max_passes"] is None and none["met"]["is_max_passes"] is False


def test_slm_loss_at_one_expert_budget():
    curve = slm_curve([(0.25, 2.5e11, 3.05), (0.5, 5e11, 3.3), (1.0, 1e12, 3.0)])
    four = measured(regime_rows(), curve, cfg(mix_k=4))  # read at 1/4
    assert four["slm_loss_at_expert_budget_nats"] == pytest.approx(0.05)
    assert four["met"]["slm_loss_at_expert_budget_nats"] is True
    two = measured(regime_rows(), curve, cfg(mix_k=2))  # the same curve read at 1/2
    assert two["slm_loss_at_expert_budget_nats"] == pytest.approx(0.3)
    assert two["met"]["slm_loss_at_expert_budget_nats"] is False
    short = measured(regime_rows(), slm_curve([(0.5, 5e11, 3.04), (1.0, 1e12, 3.0)]), cfg(mix_k=4))
    assert short["slm_loss_at_expert_budget_nats"] is None  # no point at 1/4: never extrapolated
    assert short["met"]["slm_loss_at_expert_budget_nats"] is False
    # ...but the 1/2 point bounds it from below, and the table says so
    assert short["slm_loss_at_expert_budget_lower_bound_nats"] == pytest.approx(0.04)
    row = next(r for r in short["table"] if r["key"] == "slm_loss_at_expert_budget_nats")
    assert row["text"].startswith(">= 0.040 nats (at 1/2 of its budget")
    assert four["slm_loss_at_expert_budget_lower_bound_nats"] is None  # measured, not bounded


def test_projected_network_parameter_ratio_from_the_config_shapes():
    small = measured(regime_rows(), config=cfg(pn_k=4, pn_h=3))
    assert 1 < small["pn_param_ratio"] < 8 and small["met"]["pn_param_ratio"] is False
    big = measured(regime_rows(), config=cfg(pn_k=32, pn_h=24))
    assert big["pn_param_ratio"] > 8 and big["met"]["pn_param_ratio"] is True
    assert big["pn_param_ratio"] > small["pn_param_ratio"]
    no_pn = measured([r for r in regime_rows() if r["method"] != "slm-pn"], config=cfg(pn_k=32, pn_h=24))
    assert no_pn["pn_param_ratio"] is None and no_pn["met"]["pn_param_ratio"] is False


def test_domains_documents_and_entropy_at_the_routing_k():
    five = list("abcde")
    pr = measured(regime_rows(five), domains=five)
    assert pr["domains"] == 5 and pr["met"]["domains"] is True
    three = measured(regime_rows())
    assert three["domains"] == 3 and three["met"]["domains"] is False
    docs = [dict(r, eval_documents={"a": 5, "b": 9, "c": 7}[r["domain"]]) for r in regime_rows()]
    assert next(p for p in measured(docs)["table"] if p["key"] == "test_documents_min")["value"] == 5
    # wide at k=64, narrow at the k the experts route on (mix_k=4): the routing k decides
    clusters = entropy_tables([1.0, 1.05, 1.1], 4, 64, [0.5, 2.0, 3.5])
    narrow = measured(regime_rows(), config=cfg(mix_k=4), clusters=clusters)
    assert next(p for p in narrow["table"] if p["key"] == "entropy_range_routing_k")["value"] == pytest.approx(0.1)
    assert narrow["met"]["entropy_range_routing_k"] is False
    wide = measured(regime_rows(), config=cfg(mix_k=64), clusters=clusters)
    assert wide["met"]["entropy_range_routing_k"] is True
    assert measured(regime_rows())["met"]["entropy_range_routing_k"] is False  # no clusters: not measured


def test_measured_premises_gate_the_findings():
    """Out of the regime (3 domains, large model worse): findings 3-6 are not testable and say why."""
    rows = regime_rows(llm_gvn=3.1, llm_nll=2.7)
    pr = measured(rows)
    g = Grid(group(rows), D3, ["1k"], ["slm", "llm", "slm-is", "slm-mix", "slm-pn"], {}, None, pr,
             small=lambda m: m in SMALL, routing_k={"slm-mix": 2, "slm-pn": 4})
    f3 = importance_sampling_best(g)
    assert f3.verdict == UNTESTABLE and any("llm's generic valid NLL below slm's" in x for x in f3.failed)
    assert all(f.verdict == UNTESTABLE for f in asymmetric_beat_slm(g))
    assert pn_vs_mix(g).verdict == UNTESTABLE
    f6 = diffuse_domains(g)
    assert f6.verdict == UNTESTABLE and "domains: 3 (want >= 5)" in f6.text


# --- finding 1: fine-tuning is essential ---------------------------------------------------


def test_finding1_every_path():
    held = grid(rows_of("slm", 2.5, pre=3.0, pre_se=0.01) + rows_of("slm-mix", 2.4, pre=3.1, pre_se=0.01))
    assert fine_tuning_essential(held).verdict == HELD
    no_gain = grid(rows_of("slm", 2.5, se=0.001, pre=2.5, pre_se=0.001) + rows_of("slm-mix", 2.4, pre=3.1, pre_se=0.01))
    f = fine_tuning_essential(no_gain)
    assert f.verdict == NOT_HELD and "slm" in f.text.split("for:")[-1] and "slm-mix" not in f.text.split("for:")[-1]
    wide = grid(rows_of("slm", 2.5, se=0.1, pre=2.53, pre_se=0.1))
    assert fine_tuning_essential(wide).verdict == INCONCLUSIVE
    assert fine_tuning_essential(grid(rows_of("slm", 2.5))).verdict == UNTESTABLE  # no pretrained_nll
    gated = fine_tuning_essential(grid(rows_of("slm", 2.5, pre=3.0), pr=premises(["pretrain_to_spec"])))
    assert gated.verdict == UNTESTABLE
    assert gated.failed == ["pretrain to spec: value of pretrain_to_spec (want its threshold)"]


# --- finding 2: distillation ---------------------------------------------------------------


def distill_rows(d_nll, d_gen, s=0.01):
    return (rows_of("slm", 2.5, se=s, gen=1e12) + rows_of("llm", 2.0, se=s, gen=1e12)
            + rows_of("slm-d", d_nll, se=s, gen=d_gen))


def test_finding2_every_path():
    # slm-d within 2% of slm beyond its interval, although its cost includes the teacher's: held
    held = distillation(grid(distill_rows(2.499, 2e12, s=0.001)))
    assert held.verdict == HELD and "2.00x slm's" in held.text
    # slm-d better beyond the interval at the same total cost: did not hold
    assert distillation(grid(distill_rows(2.4, 1e12))).verdict == NOT_HELD
    # better, but at twice the cost: the run cannot compare them at equal cost
    costly = distillation(grid(distill_rows(2.4, 2e12)))
    assert costly.verdict == INCONCLUSIVE and "at a higher total cost" in costly.text
    # only where the teacher beats the student
    weak = distillation(grid(distill_rows(2.4, 1e12), pr=premises(lbs={"1k": False})))
    assert weak.verdict == UNTESTABLE and "teacher beats the student at no size" in weak.text
    assert distillation(grid(distill_rows(2.4, 1e12), pr=premises(["pretrain_to_spec"]))).verdict == UNTESTABLE
    no_d = grid([r for r in distill_rows(2.4, 1e12) if r["method"] != "slm-d"])
    assert distillation(no_d).verdict == UNTESTABLE


def test_finding2_little_is_judged_against_the_margin():
    """A gain beyond its interval but well inside 2% at equal cost is "little": held, not "did not hold"."""
    g = grid(distill_rows(2.49, 1e12, s=0.001))
    d = g.diff("slm-d", "slm", "1k")
    assert d.significant and d.delta - t_quantile(0.95, d.df) * d.se > -MARGIN
    assert distillation(g).verdict == HELD
    big = distillation(grid(distill_rows(2.45, 1e12, s=0.001)))  # 5% at equal cost: more than little
    assert big.verdict == NOT_HELD and "by more than 2%" in big.text


def test_finding2_is_judged_only_at_the_sizes_where_the_teacher_wins():
    rows = [dict(r, size=s) for r in distill_rows(2.4, 1e12) for s in ("1k", "4k")]
    f = distillation(grid(rows, sizes=("1k", "4k"), pr=premises(lbs={"1k": False, "4k": True})))
    assert f.verdict == NOT_HELD and "at 1k the teacher (llm) does not beat the student" in f.text
    assert "at 4k:" in f.text and "at 1k:" not in f.text


# --- finding 3: importance sampling --------------------------------------------------------


def test_finding3_every_path():
    base = rows_of("slm", 2.6) + rows_of("slm-mix", 2.55) + rows_of("slm-pn", 2.55) + rows_of("llm", 2.4)
    held = importance_sampling_best(grid(base + rows_of("slm-is", 2.4)))
    assert held.verdict == HELD and "Against the large model (margin 2%)" in held.text
    small_part = held.text.split(" Against the large model")[0]
    assert "vs slm-pn" in small_part and "vs llm" not in small_part  # llm is not one of "the small methods"
    beaten = importance_sampling_best(grid(base + rows_of("slm-is", 2.58)))
    assert beaten.verdict == NOT_HELD and "slm-mix" in beaten.text and "slm-pn" in beaten.text
    # best of the small methods, but worse than the large model beyond the margin
    far = importance_sampling_best(grid(rows_of("slm", 2.6) + rows_of("llm", 2.3) + rows_of("slm-is", 2.5)))
    assert far.verdict == NOT_HELD and "llm (beyond the 2% margin)" in far.text
    # the large model does not beat slm: that half is not testable, the small half still judged
    weak = importance_sampling_best(grid(rows_of("slm", 2.6) + rows_of("llm", 2.3) + rows_of("slm-is", 2.5),
                                         pr=premises(lbs={"1k": False})))
    assert weak.verdict == HELD and "Against the large model: not testable at this scale" in weak.text
    wide = importance_sampling_best(grid(rows_of("slm", 2.6, se=0.2) + rows_of("slm-is", 2.59, se=0.2)))
    assert wide.verdict == INCONCLUSIVE
    for fail in ("slm_saturated", "is_max_passes"):
        f = importance_sampling_best(grid(base + rows_of("slm-is", 2.4), pr=premises([fail])))
        assert f.verdict == UNTESTABLE and f.failed[0].startswith(fail.replace("_", " "))
    assert importance_sampling_best(grid(base)).verdict == UNTESTABLE  # no slm-is


def test_finding3_holm_over_the_rivals_flips_a_marginal_result():
    s, z = 0.0125, 2.0  # slm-pn better than slm-is by 2 SE: one-sided p = 0.023
    d = z * diff_se(s)
    mine = rows_of("slm-is", 2.5, se=s) + rows_of("slm-pn", 2.5 - d, se=s)
    alone = grid(mine)
    p = alone.diff("slm-is", "slm-pn", "1k").p_b_better
    assert 0.05 / 4 < p < 0.05 and p == pytest.approx(norm.sf(z), rel=1e-3)
    assert importance_sampling_best(alone).verdict == NOT_HELD  # one test: p < 0.05
    rivals = mine + rows_of("slm", 2.7, se=s) + rows_of("slm-mix", 2.7, se=s) + rows_of("slm-d", 2.7, se=s)
    assert importance_sampling_best(grid(rivals)).verdict == INCONCLUSIVE  # four tests: p > 0.05 / 4


def test_finding3_names_the_full_budget_ablation_and_never_counts_it_as_a_rival():
    """slm-is-full (slm-is at the full pretraining budget) is better than every method here, yet
    finding 3 is judged on slm-is alone: the ablation is in no "better than slm-is" list, in no
    Holm family, and one sentence gives its paired differences to slm and slm-is."""
    base = rows_of("slm", 2.6) + rows_of("slm-mix", 2.55) + rows_of("slm-pn", 2.55) + rows_of("llm", 2.4)
    full = rows_of("slm-is-full", 2.2)
    pr = {**premises(), "per_domain_budget": 0.25}
    beaten = importance_sampling_best(grid(base + rows_of("slm-is", 2.58) + full, pr=pr))
    alone = importance_sampling_best(grid(base + rows_of("slm-is", 2.58), pr=pr))
    assert beaten.verdict == alone.verdict == NOT_HELD
    who = beaten.text.split("Better than slm-is beyond the interval (Holm): ")[1].split(".")[0]
    assert who == "slm-mix, slm-pn, llm (beyond the 2% margin)"  # no slm-is-full, though it beats slm-is most
    assert "vs slm-is-full" not in beaten.text  # slm-is is never compared with its own ablation as a rival
    assert beaten.text.startswith(alone.text[: alone.text.index(" Budget: ")])  # the same test, the same numbers
    sentence = beaten.text[beaten.text.index(" Budget: "):]
    assert "slm-is at the paper's quarter budget (methods.per_domain_budget = 0.25" in sentence
    assert "decides this finding; the ablation slm-is-full" in sentence
    g = grid(base + rows_of("slm-is", 2.58) + full, pr=pr)
    for b in ("slm", "slm-is"):
        d = g.diff("slm-is-full", b, "1k")
        assert d.delta < 0 and f"slm-is-full vs {b}: NLL difference {d.delta:+.4f}" in sentence
    # held: the ablation beats slm-is by far, and the finding still holds on slm-is's own rivals
    held = importance_sampling_best(grid(base + rows_of("slm-is", 2.4) + full, pr=pr))
    assert held.verdict == HELD and "slm-is-full vs slm-is" in held.text
    # without the ablation: the sentence names slm-is's budget only; another budget is named as such
    plain = importance_sampling_best(grid(base + rows_of("slm-is", 2.4), pr={**premises(), "per_domain_budget": 0.5}))
    assert plain.text.endswith(" Budget: slm-is at methods.per_domain_budget = 0.5 of the pretraining budget "
                               "(the paper: about 0.25) decides this finding.")
    # not testable (a premise failed): the sentence still tells selection from budget
    gated = importance_sampling_best(grid(base + rows_of("slm-is", 2.4) + full, pr={**premises(["slm_saturated"])}))
    assert gated.verdict == UNTESTABLE and "slm-is-full vs slm:" in gated.text


def test_the_ablation_changes_no_verdict_of_any_finding():
    """Findings 1 to 7 read the same with and without slm-is-full rows (finding 3 adds its
    sentence): the ablation enters no comparison, no Holm family, no plan candidate."""
    from speclm.report.page import plan_inputs
    from speclm.report.run_results import RunResults

    def run_of(rows):
        res = RunResults(None, rows, [], entropy_tables([0.2, 0.6, 1.0], 4))
        g = Grid(res.groups, D3, ["1k"], res.methods, entropy_tables([0.2, 0.6, 1.0], 4)["tables"], None, premises(),
                 small=lambda m: m in SMALL, routing_k={"slm-mix": 4, "slm-pn": 4})
        return check_all(g, *plan_inputs(res, Evidence(res.groups, D3), "1k")), g

    pre = dict(pre=3.0, pre_se=0.01)
    rows = (rows_of("slm", 2.5, gen=100.0, spec=1.0, **pre) + rows_of("slm-is", 2.45, gen=0.0, spec=50.0, **pre)
            + rows_of("slm-mix", 2.48, **pre) + rows_of("slm-pn", 2.47, **pre) + rows_of("slm-d", 2.5, **pre)
            + rows_of("llm", 2.3, **pre))
    # the ablation: better than everything, fits slm's total at N=1 (C_spec 100), no gain from fine-tuning
    full = rows_of("slm-is-full", 1.9, gen=0.0, spec=100.0, pre=1.9, pre_se=0.01)
    without, _ = run_of(rows)
    with_, g = run_of(rows + full)
    assert g.methods == [m for m in g.methods if m != "slm-is-full"] and g.ablations == ["slm-is-full"]
    assert [(f.title, f.verdict) for f in with_] == [(f.title, f.verdict) for f in without]
    for a, b in zip(with_, without):
        if a.n == 3:
            assert a.text.startswith(b.text.rstrip(".")) and "slm-is-full vs slm-is" in a.text
        else:
            assert a.text == b.text and "slm-is-full" not in a.text


def test_premises_keep_slm_is_apart_from_its_ablation():
    imp = lambda passes: {"importance": {"max_passes": passes, "mean_passes": passes / 2, "kish_ess_fraction": 0.4,  # noqa: E731
                                         "draws": 1e6}}
    rows = regime_rows(max_passes=3.0) + rows_of("slm-is-full", 2.3, params=1e6, gen=0.0, extra=imp(12.0))
    pr = measured(rows, config=cfg(per_domain_budget=0.25))
    assert pr["is_max_passes"] == 3.0 and pr["met"]["is_max_passes"] is True  # slm-is's own, not the ablation's 12
    assert pr["is_full_max_passes"] == 12.0 and pr["is_full_mean_passes"] == 6.0 and pr["per_domain_budget"] == 0.25
    row_ = next(p for p in pr["table"] if p["key"] == "is_full_max_passes")
    assert row_["met"] is None and row_["text"] == "12 (mean 6.00)"  # descriptive: it gates nothing
    assert "is_full_max_passes" not in {p["key"] for p in measured(regime_rows())["table"]}  # only with the ablation


# --- finding 4: slm-pn and slm-mix against slm ---------------------------------------------


def test_finding4_per_method_every_path():
    def verdicts(rows, **kw):
        return {f.part: f.verdict for f in asymmetric_beat_slm(grid(rows, **kw))}

    slm = rows_of("slm", 2.5)
    assert verdicts(slm + rows_of("slm-pn", 2.3) + rows_of("slm-mix", 2.5)) == {"slm-pn": HELD, "slm-mix": NOT_HELD}
    assert verdicts(rows_of("slm", 2.5, se=0.1) + rows_of("slm-pn", 2.48, se=0.1)) == {"slm-pn": INCONCLUSIVE}
    # each method gated on its own premise
    both = slm + rows_of("slm-pn", 2.3) + rows_of("slm-mix", 2.3)
    assert verdicts(both, pr=premises(["slm_loss_at_expert_budget_nats"])) == {"slm-pn": HELD, "slm-mix": UNTESTABLE}
    assert verdicts(both, pr=premises(["pn_param_ratio"])) == {"slm-pn": UNTESTABLE, "slm-mix": HELD}
    assert verdicts(both, pr=premises(["slm_saturated"])) == {"slm-pn": UNTESTABLE, "slm-mix": UNTESTABLE}
    none = asymmetric_beat_slm(grid(slm))
    assert [(f.part, f.verdict) for f in none] == [("", UNTESTABLE)]


def test_finding4_holm_over_the_methods_flips_a_marginal_result():
    s, z = 0.0125, 1.8  # slm-pn better than slm by 1.8 SE: one-sided p = 0.036, above 0.05 / 2
    d = z * diff_se(s)
    rows = rows_of("slm", 2.5, se=s) + rows_of("slm-pn", 2.5 - d, se=s)
    g = grid(rows)
    p = g.diff("slm-pn", "slm", "1k").p_a_better
    assert 0.05 / 2 < p < 0.05
    assert {f.part: f.verdict for f in asymmetric_beat_slm(g)} == {"slm-pn": HELD}
    two = {f.part: f.verdict for f in asymmetric_beat_slm(grid(rows + rows_of("slm-mix", 2.7, se=s)))}
    assert two == {"slm-pn": INCONCLUSIVE, "slm-mix": NOT_HELD}


def test_finding4_trend_over_sizes():
    rows = (rows_of("slm", 2.5, size="1k") + rows_of("slm-pn", 2.3, size="1k")
            + rows_of("slm", 2.2, size="4k") + rows_of("slm-pn", 2.19, size="4k"))
    f = asymmetric_beat_slm(grid(rows, sizes=("1k", "4k")))[0]
    assert f.verdict == HELD and "most clearly at small sets\"): yes" in f.text
    flipped = [dict(r, size={"1k": "4k", "4k": "1k"}[r["size"]]) for r in rows]
    f = asymmetric_beat_slm(grid(flipped, sizes=("1k", "4k")))[0]
    assert "no, the opposite" in f.text
    assert "needs two sizes" in asymmetric_beat_slm(grid(rows[:6]))[0].text


# --- finding 5: slm-pn and slm-mix similar -------------------------------------------------


def test_finding5_needs_the_equivalence_margin():
    delta = 0.01  # 1% perplexity: inside the ±2% margin
    assert delta < MARGIN
    tight = grid(rows_of("slm-pn", 2.5 + delta, se=0.002) + rows_of("slm-mix", 2.5, se=0.002))
    d = tight.diff("slm-pn", "slm-mix", "1k")
    assert d.significant  # a difference beyond its interval, yet well inside the margin
    f = pn_vs_mix(tight)
    assert f.verdict == HELD and "within ±2%" in f.text
    wide = grid(rows_of("slm-pn", 2.5 + delta, se=0.03) + rows_of("slm-mix", 2.5, se=0.03))
    assert not wide.diff("slm-pn", "slm-mix", "1k").within(MARGIN)
    assert pn_vs_mix(wide).verdict == INCONCLUSIVE  # not shown equivalent, and not "did not hold" either
    # slm-pn 1.5% better, its interval reaching past -2%: both sides of the margin count
    lower = grid(rows_of("slm-pn", 2.5 - 0.015, se=0.006) + rows_of("slm-mix", 2.5, se=0.006))
    assert pn_vs_mix(lower).verdict == INCONCLUSIVE
    apart = pn_vs_mix(grid(rows_of("slm-pn", 2.6, se=0.002) + rows_of("slm-mix", 2.5, se=0.002)))
    assert apart.verdict == NOT_HELD


def test_finding5_not_testable():
    rows = rows_of("slm-pn", 2.5) + rows_of("slm-mix", 2.5)
    for fail in ("slm_saturated", "pn_param_ratio", "slm_loss_at_expert_budget_nats"):
        f = pn_vs_mix(grid(rows, pr=premises([fail])))
        assert f.verdict == UNTESTABLE and len(f.failed) == 1
    assert pn_vs_mix(grid(rows_of("slm-pn", 2.5))).verdict == UNTESTABLE  # no slm-mix


# --- finding 6: diffuse domains ------------------------------------------------------------


def diffuse_rows(domains, gaps):
    return rows_of("slm", 2.5, domains) + rows_of("slm-mix", [2.5 + x for x in gaps], domains)


def test_finding6_with_three_domains_cannot_be_held():
    ent = {d: {"4": {"entropy": e}} for d, e in zip(D3, (0.2, 0.8, 1.3))}
    rows = diffuse_rows(D3, [0.01, 0.05, 0.1])  # the gap grows with the entropy: rho = +1
    gated = diffuse_domains(grid(rows, D3, pr=premises(["domains"]), entropies=ent))
    assert gated.verdict == UNTESTABLE and gated.failed == ["domains: value of domains (want its threshold)"]
    forced = diffuse_domains(grid(rows, D3, entropies=ent))  # even with the premise forced
    assert forced.verdict == INCONCLUSIVE and "ρ = +1.00, permutation p = 0.167 over 3 domains" in forced.text


def test_finding6_with_six_domains():
    ent = {d: {"4": {"entropy": 0.2 * i}, "64": {"entropy": 3.0 - 0.4 * i}} for i, d in enumerate(D6)}
    gaps = [0.01 * i for i in range(6)]
    held = diffuse_domains(grid(diffuse_rows(D6, gaps), D6, entropies=ent))
    assert held.verdict == HELD and f"p = {1 / 720:.3f}" in held.text and "routing k=4" in held.text
    # the same rows read at k=64 (entropy order reversed): the gap shrinks with the entropy
    at64 = diffuse_domains(grid(diffuse_rows(D6, gaps), D6, entropies=ent, routing_k={"slm-mix": 64}))
    assert at64.verdict == NOT_HELD and "ρ = -1.00" in at64.text
    mixed = diffuse_domains(grid(diffuse_rows(D6, [0.0, 0.05, 0.01, 0.04, 0.02, 0.03]), D6, entropies=ent))
    assert mixed.verdict == INCONCLUSIVE
    f = diffuse_domains(grid(diffuse_rows(D6, gaps), D6, entropies=ent, pr=premises(["entropy_range_routing_k"])))
    assert f.verdict == UNTESTABLE
    assert diffuse_domains(grid(diffuse_rows(D6, gaps), D6, entropies={})).verdict == UNTESTABLE  # no entropy


# --- finding 7: plan early -----------------------------------------------------------------


def plan_run(is_nll, s=0.01, curves=()):
    """slm: C_generic 100, C_spec 1 per domain; slm-is: no shared pretraining, C_spec 50. At N=1
    both fit slm's total (101), at N=50 (150) only slm does."""
    from speclm.report.page import plan_inputs
    from speclm.report.run_results import RunResults

    rows = rows_of("slm", 2.5, se=s, gen=100.0, spec=1.0) + rows_of("slm-is", is_nll, se=s, gen=0.0, spec=50.0)
    res = RunResults(None, rows, list(curves), {})
    ev = Evidence(res.groups, res.domains)
    return grid(rows), plan_inputs(res, ev, "1k")


def test_finding7_every_path():
    g, inputs = plan_run(2.0)
    f = plan_early(g, *inputs)
    assert f.verdict == HELD and "slm-is for one domain, slm for 50" in f.text
    assert inputs[1](1) == pytest.approx(101.0) and inputs[1](50) == pytest.approx(150.0)
    g, inputs = plan_run(3.0)
    f = plan_early(g, *inputs)
    assert f.verdict == NOT_HELD and f.text.startswith("slm is best both for one domain and for 50")
    g, inputs = plan_run(2.49, s=0.05)  # slm-is barely ahead at N=1, within its interval
    assert plan_early(g, *inputs).verdict == INCONCLUSIVE
    g, inputs = plan_run(2.0)
    gated = grid([r for rs in g.groups.values() for r in rs], pr=premises(["pretrain_to_spec"]))
    assert plan_early(gated, *inputs).verdict == UNTESTABLE
    assert plan_early(g, inputs[0], lambda n: None, inputs[2]).verdict == UNTESTABLE  # no slm: no budget


def test_finding7_reads_partly_pretrained_snapshots():
    """A half-pretrained slm (C_generic 50) fits slm's total at N=50 too: it is a candidate, compared unpaired."""
    worse = rows_of("slm", 2.7, se=0.01, gen=50.0, spec=1.0, fraction=0.5)
    g, inputs = plan_run(2.0, curves=worse)
    assert [p.label for p in inputs[0](50, 150.0 * 1.01)] == ["slm", "slm@0.5"]
    assert inputs[2]("slm@0.5").nll == pytest.approx(2.7)
    f = plan_early(g, *inputs)
    assert f.verdict == HELD and "next slm@0.5" in f.text and "unpaired" in f.text
    better = rows_of("slm", 2.3, se=0.01, gen=50.0, spec=1.0, fraction=0.5)
    g, inputs = plan_run(3.0, curves=better)  # the snapshot is best at both N
    f = plan_early(g, *inputs)
    assert f.verdict == NOT_HELD and f.text.startswith("slm@0.5 is best both")


def test_check_all_returns_every_finding_in_order():
    g, inputs = plan_run(2.0)
    fs = check_all(g, *inputs)
    assert [f.n for f in fs] == [1, 2, 3, 4, 5, 6, 7]
    assert all(f.verdict in (HELD, NOT_HELD, UNTESTABLE, INCONCLUSIVE) for f in fs)


# --- seeds and t quantiles -----------------------------------------------------------------


def test_single_seed_method_borrows_the_slm_seed_spread():
    rows = [row("slm", d, 2.0 + 0.1 * k, se=0.01, seed=k) for d in D3 for k in range(3)]
    rows += rows_of("slm-mix", 2.2, se=0.01)
    ev = Evidence(group(rows), D3)
    slm, mix = ev.macro("slm", "1k"), ev.macro("slm-mix", "1k")
    assert slm.seeds == 3 and slm.borrowed is None
    assert mix.borrowed == "slm" and mix.seeds == 1 and "†" in mix.text()
    var = 0.01  # the variance of slm's per-seed macros 2.0, 2.1, 2.2
    boot_mix = math.sqrt(3 * 0.01 ** 2) / 3
    assert mix.se == pytest.approx(math.sqrt(boot_mix ** 2 + var))  # one seed: the whole seed variance
    boot_slm = math.sqrt(3 * (math.sqrt(3 * 0.01 ** 2) / 3) ** 2) / 3
    assert slm.se == pytest.approx(math.sqrt(boot_slm ** 2 + var / 3))
    d = ev.difference("slm-mix", "slm", "1k")
    assert d.borrowed == ("slm-mix",) and "borrowed from slm for slm-mix" in d.text()
    assert d.se == pytest.approx(math.sqrt(math.sqrt(3 * 0.01 ** 2 + 3 * (math.sqrt(3) * 0.01 / 3) ** 2) ** 2 / 9
                                           + var + var / 3))
    alone = Evidence(group(rows_of("slm-mix", 2.2, se=0.01)), D3).macro("slm-mix", "1k")
    assert alone.borrowed is None and alone.se == pytest.approx(boot_mix)  # nobody to borrow from


def test_t_quantiles_with_few_test_documents():
    rows = rows_of("slm", 2.5, docs=5) + rows_of("slm-mix", 2.4, docs=5)
    ev = Evidence(group(rows), D3)
    e = ev.macro("slm", "1k")
    assert e.df == 4 and e.q == pytest.approx(2.776, abs=1e-3)
    d = ev.difference("slm-mix", "slm", "1k")
    assert d.df == 4 and d.q == pytest.approx(2.776, abs=1e-3)
    assert d.p_a_better == pytest.approx(p_greater(0.1, d.se, 4)) and d.p_a_better > norm.sf(0.1 / d.se)
    assert Evidence(group(rows_of("slm", 2.5)), D3).macro("slm", "1k").q == pytest.approx(1.95996, abs=1e-4)


# --- statistics ----------------------------------------------------------------------------


def test_holm_known_example():
    ps = [0.01, 0.04, 0.03, 0.005]  # sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop
    assert holm(ps, 0.05) == [True, False, False, True]
    assert holm_adjusted(ps) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.04], 0.05) == [True] and holm([0.04, 0.04], 0.05) == [False, False]
    assert holm([0.001, 0.04], 0.05) == [True, True]  # step-down: the second compared with 0.05 / 1
    assert holm([], 0.05) == []


def test_spearman_permutation_exact_p():
    rho, p = spearman_permutation([1, 2, 3], [10, 20, 30])
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 6)
    rho, p = spearman_permutation([1, 2, 3], [10, 30, 20])
    assert rho == pytest.approx(0.5) and p == pytest.approx(3 / 6)
    rho, p = spearman_permutation([1, 2, 3], [30, 20, 10])
    assert rho == pytest.approx(-1.0) and p == pytest.approx(1.0)
    rho, p = spearman_permutation(list(range(6)), [0.1 * i for i in range(6)])
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 720)


def test_t_quantile_and_one_sided_p():
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, None) == pytest.approx(1.95996, abs=1e-4)
    assert p_greater(1.0, 0.5, None) == pytest.approx(norm.sf(2.0))
    assert p_greater(1.0, 0.0, None) == 0.0 and p_greater(-1.0, 0.0, None) == 1.0


def test_sizes_the_pretraining_does_not_dwarf_are_left_out():
    """cpu-full's case: 512x at its smallest set, 32x at its largest. Findings that compare
    across sizes read only the sizes at least 100x below the pretraining."""
    rows = []
    for s, gap in (("1k", -0.3), ("64k", +0.3)):  # slm-pn far better at 1k, far worse at 64k
        rows += rows_of("slm", [2.5] * 3, size=s) + rows_of("slm-pn", [2.5 + gap] * 3, size=s)
    pr = premises()
    pr["pretrain_to_spec_by_size"] = {"1k": 512.0, "64k": 32.0}
    g = grid(rows, sizes=("1k", "64k"), pr=pr)
    assert g.judged_sizes == ["1k"]
    f = next(x for x in asymmetric_beat_slm(g) if x.part == "slm-pn")
    assert f.verdict == HELD and "64k" not in f.text
    pr["pretrain_to_spec_by_size"] = {"1k": 512.0, "64k": 512.0}
    f = next(x for x in asymmetric_beat_slm(grid(rows, sizes=("1k", "64k"), pr=pr)) if x.part == "slm-pn")
    assert "64k" in f.text and "small sets\"): yes" in f.text  # both sizes read: the advantage shrinks with size
