"""``speclm report``: the run's results as the paper shows them, and its findings checked.

Writes ``eval/report.md`` with its pictures beside it, ``eval/report.html`` (one
self-contained page: the pictures are embedded) and ``eval/report.json`` (every number the
page prints, as data). Sections: whether the run can separate the methods at all; the
analogue of the paper's Table 4 (before fine-tuning, then at each size); the main table
per size with intervals; Figure 6 (total cost of serving 1, 7 and 50 domains, Eq. 1);
the operating curves over pretraining cost (Figures 3-4 and Table 8, from
``eval/curves.jsonl``: speclm.report.curves_report); Tables 9 and 10 (cluster concentration
and entropy); the contamination check; per-domain results; time per stage; and "The
paper's findings, checked" (speclm.report.findings).

Every number is read from the run's files: the grid rows (``eval/<name>.jsonl``), the
clusters' ``describe/summary.json``, ``corpus/overlap.json`` and the stage manifests.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Optional

from ..core import atomic, manifest
from ..core.errors import SpeclmError
from .evidence import row_estimate

FIG6_N = (1, 7, 50)  # the paper's Figure 6: 1, 7 or 50 hypothetical domains


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def collect(run, name: str = "results") -> dict:
    """Every number the report prints, from the run's files (read once, :class:`RunResults`)."""
    from .curves_report import curve_facts
    from .evidence import Evidence
    from .findings import Grid, check_all
    from .premises import measure
    from .run_results import RunResults

    res = RunResults.open(run, name)
    groups, domains, sizes, methods, rows = res.groups, res.domains, res.sizes, res.methods, res.rows
    small = res.small
    ev = Evidence(groups, domains, run.path, run.config.methods.bootstrap)

    tables = {"main": {}, "table4": {}}
    for m in methods:
        pre = [e for s in sizes if (e := ev.macro(m, s, "pretrained_nll"))]
        tables["table4"][m] = {"pretrained": pre[0].__dict__ if pre else None,
                               **{s: (e.__dict__ if (e := ev.macro(m, s)) else None) for s in sizes}}
        for s in sizes:
            per = {d: (e.__dict__ if (e := row_estimate(groups.get((m, d, s), []))) else None) for d in domains}
            tables["main"].setdefault(s, {})[m] = per

    totals = _cost_totals(groups, methods, domains, sizes[0])
    premises = measure(groups, res.curves, run.config, res.clusters, ev, sizes, domains)
    mk = run.config.methods
    grid = Grid(groups, domains, sizes, methods, res.clusters.get("tables", {}), run.path, premises, mk.bootstrap,
                lambda m: small.get(m, True), {"slm-mix": mk.mix_k, "slm-pn": mk.pn_k})
    findings = check_all(grid, *plan_inputs(res, ev, sizes[0]))
    return {
        "run": str(run.path), "preset": run.config.name, "results": str(res.path),
        "methods": methods, "domains": domains, "sizes": sizes, "small": small,
        "premises": premises, "evidence": _evidence(rows), "seed_spread": _seed_note(ev, methods, sizes),
        "tables": tables, "cost_totals": {m: list(v) for m, v in totals.items()},
        "clusters": res.clusters, "overlap": _read_json(run.corpus_dir / "overlap.json"),
        "stage_seconds": _stage_seconds(run, rows),
        "findings": [{"n": f.n, "part": f.part, "title": f.title, "claim": f.claim, "verdict": f.verdict,
                      "text": f.text, "failed_premises": f.failed} for f in findings],
        "curves": curve_facts(run, groups, domains, sizes),
    }


def plan_inputs(res, ev, size: str):
    """Finding 7's inputs: admissible recipes (and snapshots) at a budget, slm's total cost
    for N domains, and the macro estimate of a candidate label (``method`` or ``method@share``)."""
    from .evidence import Evidence, group
    from .plan import plan_rows

    flat = res.flat_rows()

    def candidates(n: int, budget: float) -> list:
        try:
            rows = plan_rows(flat, size, n, "small", budget, "flops", res.curves)
        except Exception:  # noqa: BLE001 - no plan at this size: no candidate
            return []
        return [p for p in rows if p.admissible and p.complete]

    def reference_total(n: int):
        rs = [r for r in flat if r["method"] == "slm" and r["size"] == size]
        if not rs:
            return None
        return max(float(r["cost"]["generic"]["flops"]) for r in rs) + n * (
            sum(float(r["cost"]["specialization"]["flops"]) for r in rs) / len(rs))

    curve_ev = Evidence(group(res.curves), res.domains, None)

    def estimate(label: str):
        if "@" not in label:
            return ev.macro(label, size)
        m, share = label.split("@")
        sub = {k: [r for r in v if abs(float(r["pretrain_fraction"]) - float(share)) < 1e-9]
               for k, v in curve_ev.groups.items() if k[0] == m}
        return Evidence(sub, res.domains, None).macro(m, size)

    return candidates, reference_total, estimate


def _seed_note(ev, methods: list[str], sizes: list[str]) -> dict:
    """Per method: its own seeds, or whose seed spread its intervals borrow."""
    out = {}
    for m in methods:
        var, n, borrowed = ev.seed_var(m, sizes[0])
        out[m] = {"seeds": n, "borrowed_from": borrowed, "seed_sd": math.sqrt(var) if var else 0.0}
    return out


def _evidence(rows: list[dict]) -> dict:
    """How the fine-tunes stopped and which rows carry an interval."""
    stops: dict[str, int] = {}
    for r in rows:
        st = r.get("stop") or (r.get("extra") or {}).get("stop")
        stops[st or "unrecorded"] = stops.get(st or "unrecorded", 0) + 1
    with_se = sum(1 for r in rows if (r.get("nll_se") or 0) > 0)
    problems = []
    if rows and stops.get("cap", 0) > len(rows) / 2:
        problems.append(f"{stops['cap']} of {len(rows)} fine-tunes hit their step cap instead of stopping early")
    if rows and with_se < len(rows):
        problems.append(f"{len(rows) - with_se} of {len(rows)} rows carry no interval (nll_se)")
    return {"stops": stops, "rows_with_interval": with_se, "rows": len(rows),
            "seeds": len({r.get("seed", 0) for r in rows}), "problems": problems}


def _ks(clusters: dict) -> set[str]:
    return {str(k) for k in clusters.get("ks", [])}


def _cost_totals(groups: dict, methods: list[str], domains: list[str], size: str) -> dict[str, tuple[float, float]]:
    """(C_generic, C_spec per domain) in FLOPs at ``size``: the generic cost is paid once
    (the largest among the method's rows), the specialization cost is the mean per domain."""
    out = {}
    for m in methods:
        rs = [r for d in domains for r in groups.get((m, d, size), [])]
        if rs:
            out[m] = (max(r["cost"]["generic"]["flops"] for r in rs),
                      sum(r["cost"]["specialization"]["flops"] for r in rs) / len(rs))
    return out


def _stage_seconds(run, rows: list[dict]) -> dict[str, float]:
    out = {}
    for stage, folder in (("corpus", run.corpus_dir), ("tokens", run.tokens_dir), ("clusters", run.clusters_dir)):
        summ = (manifest.read(folder) or {}).get("summary", {})
        secs = summ.get("seconds") or (_read_json(folder / "summary.json") or {}).get("seconds")
        if secs is not None:
            out[stage] = float(secs)
    if rows:
        out["grid (sum over rows)"] = float(sum(r.get("grid_seconds", 0.0) for r in rows))
    return out


# --- rendering ---------------------------------------------------------------------------


def _est_text(e: Optional[dict]) -> str:
    from .evidence import Estimate

    return Estimate(**e).text() if e else "–"


def _label(facts: dict, m: str) -> str:
    from ..core.sections import ABLATIONS

    if m in ABLATIONS:
        return f"{m} (ablation)"
    return m if facts["small"].get(m, True) else f"{m} (large)"


def md_table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(map(str, r)) + " |" for r in rows]


def render(facts: dict, figures: dict[str, str]) -> str:
    ev, pr = facts["evidence"], facts["premises"]
    out = [f"# speclm report: {facts['preset']} ({facts['run']})", "", first_line(facts), ""]
    out += ["## Where this run stands against the paper's regime", "",
            "Each finding is judged only where its premises are met (docs/paper.md §8); a premise that could not "
            "be measured counts as not met.", "",
            *md_table(["premise", "this run", "threshold", "met", "the paper", "needed by findings"],
                      [[p["label"], p["text"], p["threshold"], {True: "met", False: "**not met**", None: "–"}[p["met"]],
                        p["paper"] or "–", ", ".join(p["gates"]) or "–"] for p in pr["table"]]), ""]
    borrowed = sorted({v["borrowed_from"] for v in facts.get("seed_spread", {}).values() if v["borrowed_from"]})
    lenders = ", ".join(m for m, v in facts.get("seed_spread", {}).items() if v["borrowed_from"])
    out += ["## Evidence", "",
            f"- fine-tunes by how they stopped: {', '.join(f'{k} {v}' for k, v in sorted(ev['stops'].items()))}",
            f"- rows with an interval: {ev['rows_with_interval']} of {ev['rows']}; seeds: {ev['seeds']}",
            "- intervals: 95% (Student's t, test documents - 1 degrees of freedom), from a bootstrap over test "
            "documents drawn jointly for every method, and the spread of the per-seed macros; perplexity ± half-width",
            (f"- † one seed: {lenders} borrow the seed spread of {', '.join(borrowed)}" if borrowed else
             "- every method in the tables has its own seeds, or no method has several"),
            *([f"- problem: {x}" for x in ev["problems"]]), ""]
    sizes, methods = facts["sizes"], facts["methods"]
    t4 = facts["tables"]["table4"]
    out += ["## Table 4 analogue: macro perplexity before and after fine-tuning", "",
            "| method | no fine-tuning | " + " | ".join(f"FT {s}" for s in sizes) + " |",
            "|---|---|" + "---|" * len(sizes)]
    for m in methods:
        out.append(f"| {_label(facts, m)} | {_est_text(t4[m]['pretrained'])} | "
                   + " | ".join(_est_text(t4[m][s]) for s in sizes) + " |")
    out.append("")
    for s in sizes:
        out += [f"## Specialized perplexity at {s} (test split, after fine-tuning)", "",
                "| method | " + " | ".join(facts["domains"]) + " | macro |", "|---|" + "---|" * (len(facts["domains"]) + 1)]
        for m in methods:
            per = facts["tables"]["main"][s][m]
            if not any(per.values()):
                continue
            out.append(f"| {_label(facts, m)} | " + " | ".join(_est_text(per[d]) for d in facts["domains"])
                       + f" | {_est_text(t4[m][s])} |")
        out.append("")
    if "fig6" in figures:
        out += ["## Figure 6 analogue: total cost of serving N domains (Eq. 1)", "",
                f"C_total(N) = C_generic + N × C_spec, training FLOPs at {sizes[0]}:", "",
                *md_table(["method", "C_generic", "C_spec / domain", *[f"N={n}" for n in FIG6_N]],
                          [[_label(facts, m), f"{g:.2e}", f"{c:.2e}", *[f"{g + n * c:.2e}" for n in FIG6_N]]
                           for m, (g, c) in facts["cost_totals"].items()]),
                "", f"![total cost]({figures['fig6']})", ""]
    from .curves_report import render_curves

    out += render_curves(facts["curves"], figures, lambda m: _label(facts, m))
    out += _cluster_tables(facts) + _overlap_table(facts)
    if "domains" in figures:
        out += ["## Per domain", "", f"![per domain]({figures['domains']})", ""]
    if facts["stage_seconds"]:
        out += ["## Time per stage", "", *md_table(["stage", "seconds"],
                [[k, f"{v:.1f}"] for k, v in facts["stage_seconds"].items()]), ""]
    out += ["## The paper's findings, checked", "",
            "Verdicts: *held* / *did not hold* only with every premise met and the test decided beyond its interval "
            "(Holm's correction within each finding; equivalence margin ±2% perplexity); *inconclusive* when the "
            "interval decides neither way; *not testable at this scale* when a premise failed.", ""]
    for f in facts["findings"]:
        out += [f"**{f['title']}. {f['claim']}** *{f['verdict']}.* {f['text']}", ""]
    return "\n".join(out)


def first_line(facts: dict) -> str:
    """What the run can tell, from its premises: which findings can be judged, and the
    premises (their report.json keys and values) that keep the others out of reach."""
    fs = facts["findings"]
    untestable = [f for f in fs if f["verdict"] == "not testable at this scale"]
    judged = [f["title"] for f in fs if f not in untestable]
    if not untestable:
        return ("This run is in the paper's regime for every finding: each verdict below stands on its own test "
                "(held or did not hold only beyond the interval).")
    nums = {str(f["n"]) for f in untestable}
    failed = [p for p in facts["premises"]["table"]
              if p["met"] is False and any(g.split(" ")[0] in nums for g in p["gates"])]
    why = "; ".join(f"{p['key']} = {p['text'].split(';')[0].split(' (')[0]}" for p in failed)
    head = f"This run can judge findings {', '.join(judged)}" if judged else "This run can judge none of the paper's findings"
    return (f"{head}; findings {', '.join(f['title'] for f in untestable)} are not testable at this scale, for want of: "
            f"{why or 'the grid rows they need'} (the premises table below says what each needs).")


def _cluster_tables(facts: dict) -> list[str]:
    tables, ks = facts["clusters"].get("tables", {}), [str(k) for k in facts["clusters"].get("ks", [])]
    if not tables:
        return []
    out = []
    for key, title in (("top_share", "Table 9 analogue: share of each domain in its most frequent cluster"),
                       ("entropy", "Table 10 analogue: entropy of each domain's cluster histogram (nats)")):
        out += [f"## {title}", "", "| set | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for name, per in tables.items():
            out.append(f"| {name} | " + " | ".join(f"{per[k][key]:.2f}" if k in per else "–" for k in ks) + " |")
        out.append("")
    return out


def _overlap_table(facts: dict) -> list[str]:
    ov = facts.get("overlap")
    if not ov or "splits" not in ov:
        return ["## Contamination check", "", "No `corpus/overlap.json` in this run (the check did not run).", ""]
    out = ["## Contamination check: domain documents near-duplicated in the generic train split", "",
           f"A domain valid/test document counts when at least {ov['threshold']:g} of its word {ov['ngram']}-grams "
           "occur in one generic train document.", ""]
    out += md_table(["domain", "split", "docs", "docs hit", "words", "words hit", "generic docs hit"],
                    [[r["domain"], r["split"], r["docs"], r["docs_affected"], r["words"], r["words_affected"],
                      r["generic_docs"]] for r in ov["splits"]])
    dropped = ov.get("dropped")
    if dropped:
        verb = "dropped before tokenization" if dropped.get("applied") else "not dropped (corpus.drop_overlap = false)"
        out += ["", f"Generic train documents {verb}: {dropped['docs']:,} ({dropped['words']:,} words)."]
    return out + [""]


def to_html(markdown_text: str, folder: Path) -> str:
    """One self-contained page: the markdown rendered, each picture embedded as data."""
    import markdown

    def embed(m: re.Match) -> str:
        p = folder / m.group(2)
        if not p.exists():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"

    body = markdown.markdown(re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", embed, markdown_text), extensions=["tables"])
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>speclm report</title><style>{style}</style></head><body>{body}</body></html>"


def write_report(run, name: str = "results") -> Path:
    """Write eval/report.md, report.html, report.json and the report's pictures; returns report.md."""
    from .figures import figure6

    facts = collect(run, name)
    out_dir = run.eval_dir
    figures = {}
    fig6 = figure6(facts["cost_totals"], FIG6_N, out_dir / "report-fig6.png", facts["small"])
    if fig6:
        figures["fig6"] = fig6.name
    from .curves_report import draw_curves

    figures.update(draw_curves(facts["curves"], out_dir, lambda m: _label(facts, m)))
    if (out_dir / f"{name}-domains.png").exists():
        figures["domains"] = f"{name}-domains.png"
    text = render(facts, figures)
    atomic.write_json(out_dir / "report.json", facts)
    atomic.write_text(out_dir / "report.html", to_html(text, out_dir))
    atomic.write_text(out_dir / "report.md", text)
    return out_dir / "report.md"
