"""``speclm report --compare RUN RUN ...``: runs of different scale side by side (the scale ladder).

Each run is read as its own report reads it (:class:`RunResults`, one :class:`Evidence`,
:func:`speclm.report.premises.measure`, the findings of :mod:`speclm.report.findings`);
nothing is re-run. One page (``compare.md``, ``compare.html`` self-contained,
``compare.json``, ``compare-ladder.png``) shows:

- each finding (finding 4's two parts apart), its verdict in every run with the paired
  difference that decides it, or the premises that failed;
- the premises each run stands on (tokens per parameter of slm, slm_saturated,
  large_beats_small, is_max_passes, domains);
- the ladder figure: the macro NLL difference to slm of slm-is, slm-pn, slm-mix and llm at
  each run's smallest size (95% intervals) against slm's tokens per parameter (log axis),
  with the paper's values at its SLM's ~1,900 tokens per parameter where docs/paper.md
  tabulates them; and of the ablation slm-is-full (slm-is at the full pretraining budget) in
  the runs that have it, so that selection and budget are told apart at every scale (it
  decides no finding: speclm.report.findings).

Only files named ``compare*`` are written, in ``--out`` (default: the first run's
``eval/compare/``), so no run's own artifacts are touched.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

from ..core import atomic
from ..core.errors import SpeclmError

PAPER_LADDER = ("slm-is", "slm-pn", "slm-mix", "llm")
LADDER = (*PAPER_LADDER, "slm-is-full")  # the ablation last: a row where a run has it, in no finding
ROWS = ("1", "2", "3", "4 (slm-pn)", "4 (slm-mix)", "5", "6", "7")  # one table row per finding (4 in two parts)
FILES = ("compare.md", "compare.html", "compare.json", "compare-ladder.png")
PAPER_SLM_TPP = 1900.0  # the paper's SLM: tokens per parameter (docs/paper.md; speclm.report.premises)

# The paper's macro perplexity after fine-tuning on 1M tokens per domain (docs/paper.md):
# Table 4 (pretraining <= 650 GPUh) gives SLM and LLM; Table 8 gives SLM-pn and SLM-mix beside
# an SLM at 400 GPUh, the last pretraining budget where the SLM is tabulated. SLM-is is in no
# table (a flat line in Figs. 4 and 6): only its x position is marked.
PAPER_FT_1M = {
    "llm": (14.4, 18.2, "Table 4, FT 1M: LLM 14.4 vs SLM 18.2"),
    "slm-pn": (17.17, 18.22, "Table 8, 400 GPUh, FT 1M: SLM-pn 17.17 vs SLM 18.22"),
    "slm-mix": (17.56, 18.22, "Table 8, 400 GPUh, FT 1M: SLM-mix 17.56 vs SLM 18.22"),
}


def paper_points() -> dict[str, Optional[dict]]:
    """The paper's NLL difference to the SLM per method (None: not tabulated in docs/paper.md)."""
    return {m: ({"delta": math.log(PAPER_FT_1M[m][0] / PAPER_FT_1M[m][1]), "source": PAPER_FT_1M[m][2]}
                if m in PAPER_FT_1M else None) for m in LADDER}


def _diff(d, what: str) -> Optional[dict]:
    if d is None:
        return None
    return {"what": what, "delta": d.delta, "half": d.q * d.se, "se": d.se, "paired": bool(d.paired),
            "significant": bool(d.significant), "borrowed": list(d.borrowed)}


def _deciding(f, g) -> Optional[dict]:
    """The comparison that decides finding ``f`` on grid ``g``: a paired difference where the
    finding has one (the closest to overturning the verdict), else the statistic it rests on."""
    from .evidence import Difference

    s0 = g.sizes[0]
    if f.n == 1:  # fine-tuned minus before fine-tuning: the method that gains least
        best = None
        for m in g.methods:
            ft, pre = g.macro(m, s0), g.macro(m, s0, "pretrained_nll")
            if ft is None or pre is None:
                continue
            df = min(x for x in (ft.df, pre.df, 1e9) if x is not None)
            d = Difference(f"{m} fine-tuned", f"{m} before", ft.nll - pre.nll, math.hypot(ft.se, pre.se), False,
                           None if df >= 1e9 else df)
            if best is None or d.delta + d.q * d.se > best.delta + best.q * best.se:
                best = d
        return _diff(best, f"{best.a} − {best.b} at {s0}") if best else None
    if f.n == 2:
        lbs = g.premises.get("large_beats_small_by_size") or {}
        s = next((s for s in g.sizes if lbs.get(s)), s0)
        return _diff(g.diff("slm-d", "slm", s), f"slm-d − slm at {s}")
    if f.n == 3:
        ds = [d for m in g.methods if m != "slm-is" and g.small(m) and (d := g.diff("slm-is", m, s0))]
        d = max(ds, key=lambda d: d.delta, default=None)  # the strongest rival of slm-is
        return _diff(d, f"slm-is − {d.b} at {s0}") if d else None
    if f.n == 4 and f.part:
        return _diff(g.diff(f.part, "slm", s0), f"{f.part} − slm at {s0}")
    if f.n == 5:
        ds = [(s, d) for s in g.sizes if (d := g.diff("slm-pn", "slm-mix", s))]
        s, d = max(ds, key=lambda x: abs(x[1].delta), default=(s0, None))
        return _diff(d, f"slm-pn − slm-mix at {s}")
    if f.n == 6:
        found = re.findall(r"(slm-\w+) − slm at \S+ \(entropy at its routing k=\d+\): Spearman ρ = ([+-][\d.]+), "
                           r"permutation p = ([\d.]+)", f.text)
        return {"what": "; ".join(f"{m}: Spearman ρ {r}, p {p}" for m, r, p in found)} if found else None
    if f.n == 7:
        picks = re.findall(r"N=(\d+) \(budget [^)]*\): best (\S+) \(ppl", f.text)
        return {"what": "best recipe " + ", ".join(f"N={n}: {b}" for n, b in picks)} if picks else None
    return None


def _failed_keys(failed: list[str], premises: dict) -> list[str]:
    """Premise keys behind a finding's failed-premise lines ("label: value (want ...)")."""
    out = []
    for x in failed:
        key = next((p["key"] for p in premises["table"] if x.startswith(p["label"] + ":")), None)
        out.append(key or x.split(":")[0])
    return out


def run_facts(run, name: str = "results") -> dict:
    """One run's column of the page: premises, each finding with its deciding comparison,
    and the ladder's differences to slm at the run's smallest size."""
    from .evidence import Evidence
    from .findings import Grid, check_all
    from .page import plan_inputs
    from .premises import measure
    from .run_results import RunResults

    try:
        res = RunResults.open(run, name)
    except SpeclmError as e:
        raise SpeclmError(f"--compare {run.path}: {e}") from None
    mk = run.config.methods
    ev = Evidence(res.groups, res.domains, run.path, mk.bootstrap)
    s0 = res.sizes[0]
    pr = measure(res.groups, res.curves, run.config, res.clusters, ev, res.sizes, res.domains)
    grid = Grid(res.groups, res.domains, res.sizes, res.methods, res.clusters.get("tables", {}), run.path, pr,
                mk.bootstrap, lambda m: res.small.get(m, True), {"slm-mix": mk.mix_k, "slm-pn": mk.pn_k})
    grid.ev = ev  # one Evidence (and one set of bootstrap replicates) for the premises, findings and ladder
    findings = {}
    for f in check_all(grid, *plan_inputs(res, ev, s0)):
        findings[f.title] = {"n": f.n, "part": f.part, "title": f.title, "verdict": f.verdict, "text": f.text,
                             "failed_premises": f.failed, "failed_keys": _failed_keys(f.failed, pr),
                             "deciding": None if f.failed else _deciding(f, grid)}
    ladder = {m: _diff(ev.difference(m, "slm", s0), f"{m} − slm at {s0}") for m in LADDER}
    by = {p["key"]: p for p in pr["table"]}
    keep = ("tokens_per_param_slm", "slm_saturated", "large_beats_small", "is_max_passes", "domains",
            "slm_gain_last_doubling_nats")
    return {"run": str(run.path), "preset": run.config.name, "size": s0, "sizes": res.sizes,
            "domains": res.domains, "tokens_per_param_slm": pr["tokens_per_param"]["slm"],
            "premises": {k: {f: by[k][f] for f in ("label", "text", "threshold", "met", "paper", "value")}
                         for k in keep if k in by},
            "premise_values": {"slm_saturated": pr["slm_saturated"], "large_beats_small": pr["large_beats_small"],
                               "is_max_passes": pr["is_max_passes"], "domains": pr["domains"]},
            "findings": findings, "ladder": ladder}


def _labels(runs: list) -> list[str]:
    """Each run's column name: its preset where the runs' presets differ (runs/run of cpu-regime
    reads "cpu-regime"), else its folder's name, else its path."""
    for names in ([r.config.name for r in runs], [Path(r.path).resolve().name for r in runs]):
        if all(names) and len(set(names)) == len(names):
            return names
    return [str(r.path) for r in runs]


def _cell(f: Optional[dict]) -> str:
    if f is None:
        return "–"
    if f["failed_premises"]:
        return f"not testable: {', '.join(f['failed_keys'])}"
    d, head = f["deciding"], f"**{f['verdict']}**" if f["verdict"] in ("held", "did not hold") else f["verdict"]
    if not d:
        return head
    if "delta" not in d:
        return f"{head}; {d['what']}"
    return f"{head}; {d['what']}: {d['delta']:+.3f} ± {d['half']:.3f}" + ("" if d["paired"] else " (unpaired)")


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:,.1f}" if isinstance(v, float) else str(v)


def render(facts: dict, figure: Optional[str]) -> str:
    from .page import md_table

    runs, labels = facts["runs"], facts["labels"]
    out = ["# speclm scale ladder: " + ", ".join(labels), "",
           "Runs of different scale side by side, each read from its own files (nothing re-run). "
           "What sets the paper's regime is the small model's tokens per parameter (the paper's SLM: about "
           f"{PAPER_SLM_TPP:,.0f}); every verdict below is the run's own (docs/paper.md §8, speclm report).", ""]
    out += ["## Where each run stands against the paper's regime", "",
            *md_table(["premise", *labels, "threshold", "the paper"],
                      [["preset", *(r["preset"] for r in runs), "–", "–"],
                       ["sizes (the ladder reads the smallest)", *(", ".join(r["sizes"]) for r in runs), "–",
                        "1M, 8M, 64M"]]
                      + [[p["label"], *(_premise(r, k) for r in runs), p["threshold"], p["paper"] or "–"]
                         for k, p in _premise_rows(runs)]), ""]
    out += ["## The paper's findings, per run", "",
            "Each cell: the run's verdict and the comparison that decides it (macro NLL difference ± 95% "
            "interval, paired over test documents unless marked; negative: the first method is better), or the "
            "premises that failed (values in the table above).", "",
            *md_table(["finding", *labels], [[_finding_label(t), *(_cell(r["findings"].get(t)) for r in runs)]
                                            for t in facts["rows"]]), ""]
    out += ["## The ladder: each method's macro NLL difference to slm", "",
            "At each run's smallest size, 95% interval; negative: better than slm.", "",
            *md_table(["method", *(f"{lab} ({r['size']}, slm {_fmt(r['tokens_per_param_slm'])} tok/param)"
                                   for lab, r in zip(labels, runs)), f"the paper (~{PAPER_SLM_TPP:,.0f} tok/param)"],
                      [[m, *(_ladder_cell(r["ladder"][m]) for r in runs), _paper_cell(facts["paper"][m], m)]
                       for m in LADDER if m in PAPER_LADDER or any(r["ladder"][m] for r in runs)]), ""]
    if figure:
        out += [f"![scale ladder]({figure})", "",
                "Runs within 10% of one another's tokens per parameter are drawn side by side (each 25% further "
                "right on the log axis; their true values are in the table), methods 3% apart; stars: the paper.", ""]
    if facts["not_placed"]:
        out += [f"Not in the figure (no slm tokens per parameter): {', '.join(facts['not_placed'])}.", ""]
    out += ["The paper's values: " + "; ".join(f"{m}: {p['source']} (NLL {p['delta']:+.3f})" if p else
                                              f"{m}: {_untabulated(m)}" for m, p in facts["paper"].items()) + ".", ""]
    return "\n".join(out)


def _untabulated(method: str) -> str:
    from ..core.sections import ABLATIONS

    if method in ABLATIONS:
        return f"an ablation of {ABLATIONS[method]} (at the full pretraining budget), not in the paper"
    return "not tabulated in docs/paper.md, only the x position is marked"


def _finding_label(title: str) -> str:
    from .findings import CLAIMS

    n = int(title.split()[0]) if title.split()[0].isdigit() else None
    return f"{title}: {CLAIMS[n]}" if n in CLAIMS else title


def _premise_rows(runs: list[dict]) -> list[tuple[str, dict]]:
    seen: dict[str, dict] = {}
    for r in runs:
        for k, p in r["premises"].items():
            seen.setdefault(k, p)
    return list(seen.items())


def _premise(r: dict, key: str) -> str:
    p = r["premises"].get(key)
    if p is None:
        return "n/a"
    mark = {True: " (met)", False: " (**not met**)", None: ""}[p["met"]]
    return f"{p['text']}{mark}"


def _ladder_cell(d: Optional[dict]) -> str:
    if d is None:
        return "–"
    return f"{d['delta']:+.3f} ± {d['half']:.3f}" + ("" if d["paired"] else " (unpaired)")


def _paper_cell(p: Optional[dict], method: str = "") -> str:
    from ..core.sections import ABLATIONS

    return f"{p['delta']:+.3f}" if p else ("an ablation, not in the paper" if method in ABLATIONS else "not tabulated")


def ladder_figure(facts: dict, out: Path) -> Optional[Path]:
    """Each method's macro NLL difference to slm (95% interval) against slm's tokens per
    parameter, one point per run, the paper's values at its SLM's tokens per parameter."""
    placed = [(lab, r) for lab, r in zip(facts["labels"], facts["runs"]) if r["tokens_per_param_slm"]]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import method_styles, save_figure

    styles = method_styles(list(LADDER))
    fig, ax = plt.subplots(figsize=(9.5, 4.6))
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.axvline(PAPER_SLM_TPP, color="0.6", lw=0.8, ls=":", label=f"the paper's SLM (~{PAPER_SLM_TPP:,.0f})")
    xs = [r["tokens_per_param_slm"] for _, r in placed]  # runs within 10% of one another's x: side by side
    xpos = [x * 1.25 ** sum(1 for y in xs[:j] if abs(math.log(y / x)) < math.log(1.1)) for j, x in enumerate(xs)]
    for i, m in enumerate(LADDER):
        jitter = 1.0 + 0.03 * (i - (len(LADDER) - 1) / 2)  # methods side by side at one x, in log space
        pts = sorted(((x * jitter, r["ladder"][m]) for x, (_, r) in zip(xpos, placed) if r["ladder"][m]),
                     key=lambda p: p[0])
        st = styles[m]
        if pts:
            ax.errorbar([x for x, _ in pts], [d["delta"] for _, d in pts], yerr=[d["half"] for _, d in pts],
                        color=st["color"], marker=st["marker"], ms=5, lw=1, capsize=3, label=m)
        p = facts["paper"][m]
        if p:
            ax.plot([PAPER_SLM_TPP * jitter], [p["delta"]], marker="*", ms=12, color=st["color"], mec="k", mew=0.6,
                    ls="none", label=f"{m}, the paper")
    ax.set_xscale("log")
    ax.set_xlim(min(xpos + [PAPER_SLM_TPP]) / 2, max(xpos + [PAPER_SLM_TPP]) * 2)
    top = ax.secondary_xaxis("top")  # the runs, named above their x
    top.set_xticks(xpos, [lab for lab, _ in placed], fontsize=7, rotation=40, ha="left")
    top.minorticks_off()
    ax.set_xlabel("slm's pretraining tokens per parameter (log)")
    ax.set_ylabel("macro NLL − slm's (nats; < 0: better)")
    ax.set_title("The scale ladder: difference to slm after fine-tuning, at each run's smallest size", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, out)
    return out


def compare(runs: list, name: str = "results") -> dict:
    """Every number the page prints, for ``runs`` (opened :class:`speclm.core.run.Run`)."""
    labels = _labels(runs)
    cols = [run_facts(r, name) for r in runs]
    rows = list(ROWS) + [t for c in cols for t in c["findings"] if t not in ROWS]
    return {"labels": labels, "runs": cols, "rows": list(dict.fromkeys(rows)), "paper": paper_points(),
            "paper_slm_tokens_per_param": PAPER_SLM_TPP,
            "not_placed": [lab for lab, c in zip(labels, cols) if not c["tokens_per_param_slm"]]}


def open_runs(paths: list) -> list:
    from ..core.run import open_run

    if len(paths) < 2:
        raise SpeclmError(f"--compare needs two runs or more (got {len(paths)}): speclm report --compare RUN RUN ...")
    runs = []
    for p in paths:
        p = Path(p)
        if not (p / "config.toml").is_file():
            raise SpeclmError(f"--compare {p}: no run folder there (no config.toml)")
        runs.append(open_run(p, None, [], save=False))
    return runs


def write_compare(paths: list, out: Optional[Path] = None, name: str = "results") -> Path:
    """Write compare.md, .html, .json and compare-ladder.png in ``out`` (default: the first
    run's eval/compare/); returns compare.md. Every run is read before anything is written."""
    from .page import to_html

    runs = open_runs(paths)
    out = Path(out) if out is not None else runs[0].eval_dir / "compare"
    if out.exists() and not out.is_dir():
        raise SpeclmError(f"--out {out} is a file; give a folder (the page writes {', '.join(FILES)} there)")
    facts = compare(runs, name)
    fig = ladder_figure(facts, out / FILES[3]) if len(facts["not_placed"]) < len(runs) else None
    text = render(facts, fig.name if fig else None)
    atomic.write_json(out / FILES[2], facts)
    atomic.write_text(out / FILES[1], to_html(text, out))
    atomic.write_text(out / FILES[0], text)
    return out / FILES[0]
