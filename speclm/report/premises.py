"""Where a run stands against the paper's regime: the premises its findings stand on.

The paper's comparisons (docs/paper.md §8) presume a regime: a small model pretrained far
beyond its capacity (the SLM at about 1,900 tokens per parameter, gaining 0.03-0.04 nats of
c4 NLL per doubling of its pretraining), a large model better than it at equal pretraining
cost (Table 8: 17.00 against 20.51 c4 perplexity at 100 GPU-hours), per-domain resampling
that does not read the same generic windows over and over, mixture experts that lose little
by each seeing a quarter of the data, a projected network much larger than the SLM at
pretraining (11.3x). A finding whose premise fails cannot show, whatever the run measures:
the report then says "not testable at this scale" and names the premise and its value.

Every premise is measured from the run's own files (results rows, operating curves, the
clusters' tables) and has a threshold; a premise that cannot be measured counts as not met.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Optional

from .curve_reading import interpolate
from .stats import t_quantile

# thresholds
MIN_PRETRAIN_RATIO = 100.0  # pretraining tokens / the largest specialization set
MAX_IS_PASSES = 4.0  # reads of the most-drawn generic window in slm-is's resample
MAX_EXPERT_BUDGET_LOSS = 0.10  # nats of generic NLL the SLM loses at an expert's share of the budget (paper ~0.07)
MIN_PN_RATIO = 8.0  # the projected network's pretraining parameters over the SLM's (paper 11.3x)
MIN_DOMAINS = 5  # finding 6 relates a gap to entropy across domains: 3 cannot reach p < 0.05
MIN_ENTROPY_RANGE = 0.2  # nats between the most and least diffuse domain at the routing k

PAPER_TOKENS_PER_PARAM = {"slm": 1900, "large": 110, "expert": 150, "slm-is": 470}


@dataclass
class Premise:
    key: str
    label: str
    value: Optional[float]
    text: str  # the measured value, as the table prints it
    threshold: str  # what "met" means
    met: Optional[bool]  # None: descriptive, no threshold
    paper: str = ""
    gates: list[str] = field(default_factory=list)  # findings that need it


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rows_of(groups: dict, method: str) -> list[dict]:
    return [r for (m, _, _), rs in groups.items() if m == method for r in rs]


def _generic(rows: list[dict]) -> Optional[tuple[float, float, float]]:
    """(generic valid NLL, its SE, generic FLOPs) of a pretraining, from its rows (seeds averaged)."""
    by_seed: dict[int, tuple[float, float, float]] = {}
    for r in rows:
        if _num(r.get("generic_valid_nll")):
            by_seed[int(r.get("seed", 0))] = (float(r["generic_valid_nll"]), float(r.get("generic_valid_nll_se") or 0.0),
                                              float(r["cost"]["generic"]["flops"]))
    if not by_seed:
        return None
    vals = list(by_seed.values())
    nll = statistics.fmean(v[0] for v in vals)
    boot = math.sqrt(sum(v[1] ** 2 for v in vals)) / len(vals)
    seed = statistics.stdev([v[0] for v in vals]) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
    return nll, math.sqrt(boot ** 2 + seed ** 2), max(v[2] for v in vals)


def _curve(curves: list[dict], method: str) -> list[tuple[float, float]]:
    """(generic FLOPs, generic valid NLL) of each snapshot of ``method`` (seed 0 curves)."""
    pts: dict[float, list[float]] = {}
    for r in curves:
        if r["method"] == method and _num(r.get("generic_valid_nll")):
            pts.setdefault(float(r["cost"]["generic"]["flops"]), []).append(float(r["generic_valid_nll"]))
    return sorted((c, statistics.fmean(v)) for c, v in pts.items())


def measure(groups: dict, curves: list[dict], config, clusters: dict, evidence, sizes: list[str],
            domains: list[str]) -> dict:
    """Every premise of the run: ``report.json``'s ``premises``. ``evidence``: the run's
    :class:`speclm.report.evidence.Evidence` (paired differences after fine-tuning)."""
    m = config.methods
    slm, llm, mix, pn, is_ = (_rows_of(groups, x) for x in ("slm", "llm", "slm-mix", "slm-pn", "slm-is"))
    out: list[Premise] = []

    # tokens per parameter
    small_p = next((float(r["inference_params"]) for r in slm + mix + pn + is_ if _num(r.get("inference_params"))), None)
    large_p = next((float(r["inference_params"]) for r in llm if _num(r.get("inference_params"))), None)
    pre_tokens = max((float(r["cost"]["generic"].get("tokens", 0)) for r in slm), default=None)
    llm_tokens = max((float(r["cost"]["generic"].get("tokens", 0)) for r in llm), default=None)
    mix_tokens = max((float(r["cost"]["generic"].get("tokens", 0)) for r in mix), default=None)
    is_tokens = _is_tokens(is_, pre_tokens, m, config.tokens.window)
    tpp = {
        "slm": pre_tokens / small_p if pre_tokens and small_p else None,
        "large": llm_tokens / large_p if llm_tokens and large_p else None,
        "expert": mix_tokens / m.mix_k / small_p if mix_tokens and small_p else None,
        "slm-is": is_tokens / small_p if is_tokens and small_p else None,
    }
    for k, label in (("slm", "small model (slm)"), ("large", "large model (llm)"), ("expert", "each slm-mix expert"),
                     ("slm-is", "slm-is (per domain)")):
        v = tpp[k]
        out.append(Premise(f"tokens_per_param_{k.replace('-', '_')}", f"tokens per parameter, {label}", v,
                           f"{v:,.1f}" if v is not None else "n/a", "descriptive", None,
                           f"about {PAPER_TOKENS_PER_PARAM[k]:,}"))

    # pretraining against the specialization sets, per size: a finding is judged only at the
    # sizes the pretraining dwarfs (findings 1, 3, 6, 7 read the smallest size)
    spec_by_size: dict[str, int] = {}
    for (_, _, s), rs in groups.items():
        for r in rs:
            t = int(((r.get("extra") or {}).get("plan") or {}).get("train_tokens") or 0)
            spec_by_size[s] = max(spec_by_size.get(s, 0), t)
    ratio_by_size = {s: pre_tokens / spec_by_size[s] if pre_tokens and spec_by_size.get(s) else None for s in sizes}
    ratio = ratio_by_size.get(sizes[0]) if sizes else None
    others = ", ".join(f"{v:,.0f}x at {s}" for s, v in ratio_by_size.items() if v is not None and s != sizes[0])
    out.append(Premise("pretrain_to_spec", f"shared pretraining / specialization set at the smallest size"
                       + (f" ({sizes[0]})" if sizes else ""), ratio,
                       (f"{ratio:,.0f}x" if ratio else "n/a") + (f" ({others}: larger sizes below the threshold "
                       "are left out of findings 2, 4 and 5)" if others else ""), f">= {MIN_PRETRAIN_RATIO:.0f}x",
                       ratio is not None and ratio >= MIN_PRETRAIN_RATIO, "about 1,000x to 100,000x",
                       ["1", "2", "7"]))

    # capacity: the large model below the small one on generic valid at equal pretraining FLOPs
    sat = _saturation(slm, llm, curves)
    out.append(Premise("slm_saturated", "slm capacity-bound: llm's generic valid NLL below slm's at slm's pretraining FLOPs",
                       sat.get("delta"), sat["text"], "llm - slm < 0 beyond the 95% interval", sat["met"],
                       "LLM 17.00 vs SLM 20.51 c4 ppl at 100 GPU-hours (Table 8)", ["3", "4", "5", "6"]))
    gain = _gain_last_doubling(_curve(curves, "slm"))
    out.append(Premise("slm_gain_last_doubling_nats", "slm's generic valid NLL gain over its last doubling", gain,
                       f"{gain:.3f} nats" if gain is not None else "n/a (needs an slm curve point at 1/2)",
                       "reference, not a gate", None, "0.03-0.04 nats (Table 8)"))

    # the large model after fine-tuning, paired, per size
    lbs: dict[str, Optional[bool]] = {}
    texts = []
    for s in sizes:
        d = evidence.difference("llm", "slm", s) if llm and slm else None
        lbs[s] = None if d is None else (d.significant and d.delta < 0)
        if d is not None:
            texts.append(f"{s}: {d.delta:+.3f} ± {d.q * d.se:.3f}")
    decided = [v for v in lbs.values() if v is not None]
    beats = bool(decided) and all(decided)
    out.append(Premise("large_beats_small", "llm better than slm after fine-tuning (macro NLL llm - slm)",
                       None, "; ".join(texts) or "n/a", "< 0 beyond the interval at every size", beats if decided else False,
                       "yes at every size (Table 4)", ["2", "3 (vs the large model)"]))

    # importance sampling: repeats and effective sample size
    imp = [((r.get("extra") or {}).get("importance") or {}) for r in is_]
    max_passes = max((float(i["max_passes"]) for i in imp if _num(i.get("max_passes"))), default=None)
    mean_passes = max((float(i["mean_passes"]) for i in imp if _num(i.get("mean_passes"))), default=None)
    kish = min((float(i["kish_ess_fraction"]) for i in imp if _num(i.get("kish_ess_fraction"))), default=None)
    out.append(Premise("is_max_passes", "slm-is: reads of its most-drawn generic window (worst domain)", max_passes,
                       f"{max_passes:.0f} (mean {mean_passes:.2f})" if max_passes is not None and mean_passes is not None
                       else "n/a", f"<= {MAX_IS_PASSES:.0f}",
                       max_passes is not None and max_passes <= MAX_IS_PASSES, "", ["3"]))
    out.append(Premise("is_kish_ess_fraction", "slm-is: Kish effective sample size / generic windows (worst domain)",
                       kish, f"{kish:.3f}" if kish is not None else "n/a", "descriptive", None))
    # the ablation at the full budget (slm-is-full): its reads, only where the run has it
    full = [((r.get("extra") or {}).get("importance") or {}) for r in _rows_of(groups, "slm-is-full")]
    full_max = max((float(i["max_passes"]) for i in full if _num(i.get("max_passes"))), default=None)
    full_mean = max((float(i["mean_passes"]) for i in full if _num(i.get("mean_passes"))), default=None)
    if full:
        out.append(Premise("is_full_max_passes", "slm-is-full (ablation, full budget): reads of its most-drawn generic "
                           "window (worst domain)", full_max,
                           f"{full_max:.0f} (mean {full_mean:.2f})" if full_max is not None and full_mean is not None
                           else "n/a", "descriptive", None))

    # mixture: what the SLM loses at one expert's share of the budget
    slm_curve = _curve(curves, "slm")
    loss = _budget_loss(slm_curve, 1.0 / max(1, m.mix_k))
    bound = _budget_loss_bound(slm_curve, 1.0 / max(1, m.mix_k)) if loss is None else None
    if loss is not None:
        loss_text = f"{loss:.3f} nats"
    elif bound is not None:
        # no snapshot at the experts' share, one between it and the full budget: the loss there
        # is at least what the SLM loses at that larger share (its generic loss falls with budget)
        loss_text = f">= {bound[1]:.3f} nats (at 1/{1 / bound[0]:.3g} of its budget; no curve point at 1/{m.mix_k})"
    else:
        loss_text = f"n/a (needs an slm curve point at 1/{m.mix_k})"
    out.append(Premise("slm_loss_at_expert_budget_nats",
                       f"slm's generic valid NLL at 1/{m.mix_k} of its budget minus at the full budget",
                       loss if loss is not None else (bound[1] if bound else None), loss_text,
                       f"<= {MAX_EXPERT_BUDGET_LOSS:.2f} nats", loss is not None and loss <= MAX_EXPERT_BUDGET_LOSS,
                       "about 0.07 nats from 100 to 400 GPU-hours (Table 8)", ["4 (slm-mix)", "5"]))
    out.append(Premise("tokens_per_expert", "pretraining tokens per mixture expert",
                       mix_tokens / m.mix_k if mix_tokens else None,
                       f"{mix_tokens / m.mix_k:,.0f}" if mix_tokens else "n/a", "descriptive", None))

    # projected network's size at pretraining
    pn_ratio = _pn_ratio(config, small_p) if pn or "slm-pn" in (m.grid_methods or []) else None
    out.append(Premise("pn_param_ratio", "slm-pn pretraining parameters / slm parameters", pn_ratio,
                       f"{pn_ratio:.2f}x" if pn_ratio else "n/a", f">= {MIN_PN_RATIO:.0f}x",
                       pn_ratio is not None and pn_ratio >= MIN_PN_RATIO, "11.3x (Table 7)", ["4 (slm-pn)", "5"]))

    # domains, test documents, entropy at the routing k
    docs = {d: min((int(r["eval_documents"]) for (mm, dd, _), rs in groups.items() if dd == d for r in rs
                    if isinstance(r.get("eval_documents"), int)), default=0) for d in domains}
    out.append(Premise("domains", "domains", float(len(domains)), str(len(domains)), f">= {MIN_DOMAINS}",
                       len(domains) >= MIN_DOMAINS, "7 to 20", ["6"]))
    fewest = min(docs.values()) if docs else 0
    out.append(Premise("test_documents_min", "test documents in the smallest domain test split", float(fewest),
                       f"{fewest} ({', '.join(f'{d} {n}' for d, n in docs.items())})", "descriptive (sets the t quantile)",
                       None))
    ent = _entropy_range(clusters, domains, m.mix_k)
    out.append(Premise("entropy_range_routing_k", f"entropy range over domains at the routing k={m.mix_k}", ent,
                       f"{ent:.2f} nats" if ent is not None else "n/a", f">= {MIN_ENTROPY_RANGE:.1f} nats",
                       ent is not None and ent >= MIN_ENTROPY_RANGE, "", ["6"]))

    table = [asdict(p) for p in out]
    by = {p.key: p for p in out}
    return {
        "slm_gain_last_doubling_nats": gain,
        "slm_saturated": bool(sat["met"]),
        "large_beats_small": beats,
        "large_beats_small_by_size": lbs,
        "is_max_passes": max_passes,
        "is_mean_passes": mean_passes,
        "is_full_max_passes": full_max,
        "is_full_mean_passes": full_mean,
        "per_domain_budget": m.per_domain_budget,
        "domains": len(domains),
        "pretrain_to_spec": ratio,
        "pretrain_to_spec_by_size": ratio_by_size,
        "tokens_per_param": tpp,
        "pn_param_ratio": pn_ratio,
        "slm_loss_at_expert_budget_nats": loss,
        "slm_loss_at_expert_budget_lower_bound_nats": bound[1] if bound else None,
        "met": {k: p.met for k, p in by.items() if p.met is not None},
        "table": table,
    }


def _is_tokens(rows: list[dict], pre_tokens: Optional[float], m, window: int) -> Optional[float]:
    for r in rows:
        imp = (r.get("extra") or {}).get("importance") or {}
        if _num(imp.get("draws")):
            return float(imp["draws"]) * float(window)
    return pre_tokens * m.per_domain_budget if rows and pre_tokens else None


def _saturation(slm: list[dict], llm: list[dict], curves: list[dict]) -> dict:
    a, b = _generic(slm), _generic(llm)
    if a is None or b is None:
        return {"met": False, "text": "n/a: needs slm and llm rows with a generic valid NLL", "delta": None}
    s_nll, s_se, s_flops = a
    l_nll, l_se, l_flops = b
    how = "final checkpoints"
    if abs(l_flops - s_flops) > 0.01 * s_flops:  # read the large model at the slm's FLOPs off its curve
        v = interpolate(_curve(curves, "llm") + [(l_flops, l_nll)], s_flops)
        if v is None:
            return {"met": False, "delta": None,
                    "text": f"n/a: llm pretrained {l_flops:.2e} FLOPs, slm {s_flops:.2e}, and no llm curve covers slm's"}
        l_nll, how = v, "llm interpolated at slm's FLOPs"
    delta = l_nll - s_nll
    se = math.sqrt(s_se ** 2 + l_se ** 2)
    q = t_quantile(0.975, None)
    met = se > 0 and delta + q * se < 0
    return {"met": met, "delta": delta,
            "text": f"llm {math.exp(l_nll):.2f} vs slm {math.exp(s_nll):.2f} generic ppl; NLL {delta:+.3f}"
                    + (f" ± {q * se:.3f}" if se > 0 else " (no interval recorded)") + f" ({how})"}


def _gain_last_doubling(points: list[tuple[float, float]]) -> Optional[float]:
    if len(points) < 2:
        return None
    full_c, full_nll = points[-1]
    half = interpolate(points, full_c / 2)
    return None if half is None else half - full_nll


def _budget_loss(points: list[tuple[float, float]], share: float) -> Optional[float]:
    if len(points) < 2 or share >= 1:
        return 0.0 if points and share >= 1 else None
    full_c, full_nll = points[-1]
    at = interpolate(points, full_c * share)
    return None if at is None else at - full_nll


def _budget_loss_bound(points: list[tuple[float, float]], share: float) -> Optional[tuple[float, float]]:
    """A lower bound on ``_budget_loss`` where no snapshot reaches down to ``share``: the loss
    at the smallest snapshot share above it, as (that share, its loss)."""
    if len(points) < 2 or share >= 1:
        return None
    full_c, full_nll = points[-1]
    above = [(c / full_c, nll - full_nll) for c, nll in points[:-1] if share < c / full_c < 1]
    return min(above) if above else None


def _pn_ratio(config, small_params: Optional[float]) -> Optional[float]:
    from ..model.projected import pn_param_counts
    from ..model.transformer import named_shape

    m, cfg = config.methods, config
    try:
        shape = named_shape(cfg.model.small, cfg.tokens.vocab_size, max_seq_len=cfg.tokens.window, mlp=cfg.model.mlp,
                            tie_embeddings=cfg.model.tie_embeddings)
        counts = pn_param_counts(shape, m.pn_k, m.pn_h, m.pn_m)
    except Exception:  # noqa: BLE001 - an unknown shape: the premise is not measured
        return None
    return counts["total"] / counts["inference"]


def _entropy_range(clusters: dict, domains: list[str], k: int) -> Optional[float]:
    tables = clusters.get("tables", {})
    vals = [((tables.get(d) or {}).get(str(k)) or {}).get("entropy") for d in domains]
    vals = [float(v) for v in vals if _num(v)]
    return max(vals) - min(vals) if len(vals) >= 2 else None


def gate(premises: dict, keys: list[str]) -> list[str]:
    """The failed premises among ``keys``, each as "label: value (want threshold)"."""
    by = {p["key"]: p for p in premises["table"]}
    out = []
    for k in keys:
        p = by.get(k)
        if p is None or not p["met"]:
            out.append(f"{p['label']}: {p['text']} (want {p['threshold']})" if p else f"{k}: not measured")
    return out
