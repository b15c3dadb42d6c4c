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
import re
from pathlib import Path
from typing import Optional

from ..core import atomic, manifest
from ..core.errors import SpeclmError
from .evidence import evidence_checks, group, macro, row_estimate, sizes_in
from .findings import Grid, check_all
from .results import order_methods

FIG6_N = (1, 7, 50)  # the paper's Figure 6: 1, 7 or 50 hypothetical domains


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def collect(run, name: str = "results") -> dict:
    """Every number the report prints, from the run's files."""
    from .rows import config_hash

    results = run.eval_dir / f"{name}.jsonl"
    if not results.exists():
        raise SpeclmError(f"no grid results in {results}; run `speclm grid --run {run.path}` first")
    rows = [r for r in atomic.read_jsonl(results) if r.get("config") == config_hash(run)]
    if not rows:
        raise SpeclmError(f"no grid results for this run's current config in {results}; run `speclm grid --run {run.path}`")
    groups = group(rows)
    methods = order_methods(list(dict.fromkeys(r["method"] for r in rows)))
    domains = sorted({r["domain"] for r in rows})
    sizes = sizes_in(rows)
    small = {r["method"]: r.get("small_at_inference", True) for r in rows}

    tables = {"main": {}, "table4": {}}
    for m in methods:
        pre = [e for s in sizes if (e := macro(groups, m, s, domains, "pretrained_nll"))]
        tables["table4"][m] = {"pretrained": pre[0].__dict__ if pre else None,
                               **{s: (e.__dict__ if (e := macro(groups, m, s, domains)) else None) for s in sizes}}
        for s in sizes:
            per = {d: (e.__dict__ if (e := row_estimate(groups.get((m, d, s), []))) else None) for d in domains}
            tables["main"].setdefault(s, {})[m] = per

    totals = _cost_totals(groups, methods, domains, sizes[0])
    spec_tokens = {}
    for r in rows:
        t = ((r.get("extra") or {}).get("plan") or {}).get("train_tokens")
        if t:
            spec_tokens[r["size"]] = max(spec_tokens.get(r["size"], 0), int(t))
    # the plain SLM's shared pretraining when the grid has it (slm-d's generic cost adds the teacher's)
    shared = [r for r in rows if r["method"] == "slm"] or [r for r in rows if r.get("shared_pretraining")]
    pre_tokens = max((r["cost"]["generic"].get("tokens", 0) for r in shared), default=None)
    clusters = _read_json(run.clusters_dir / "describe" / "summary.json") or {}
    ks = sorted(int(x) for x in _ks(clusters))
    k = ks[-1] if ks else None  # the finest clustering separates diffuse from concentrated domains best
    grid = Grid(groups, domains, sizes, methods, clusters.get("tables", {}), run.path)
    findings = check_all(grid, lambda m: small.get(m, True), k, totals)
    from .curves_report import curve_facts

    return {
        "run": str(run.path), "preset": run.config.name, "results": str(results),
        "methods": methods, "domains": domains, "sizes": sizes, "small": small,
        "evidence": evidence_checks(rows, pre_tokens, spec_tokens),
        "tables": tables, "cost_totals": {m: list(v) for m, v in totals.items()},
        "clusters": clusters, "overlap": _read_json(run.corpus_dir / "overlap.json"),
        "stage_seconds": _stage_seconds(run, rows),
        "findings": [{"n": f.n, "claim": f.claim, "verdict": f.verdict, "text": f.text} for f in findings],
        "curves": curve_facts(run, groups, domains, sizes),
    }


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
    return m if facts["small"].get(m, True) else f"{m} (large)"


def md_table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(map(str, r)) + " |" for r in rows]


def render(facts: dict, figures: dict[str, str]) -> str:
    ev = facts["evidence"]
    ok = not ev["problems"]
    first = ("This run can separate the methods: pretraining is far larger than the specialization sets, fine-tunes "
             "stopped inside their caps and every number carries an interval."
             if ok else "This table cannot separate the methods as it stands: " + "; ".join(ev["problems"]) + ".")
    out = [f"# speclm report: {facts['preset']} ({facts['run']})", "", first, ""]
    ratio = f"{ev['pretrain_to_spec']:.0f}x" if ev["pretrain_to_spec"] else "n/a"
    out += ["## Evidence", "",
            f"- shared pretraining: {ev['pretrain_tokens'] or 0:,.0f} tokens; largest specialization set: "
            f"{ev['largest_spec_tokens'] or 0:,} tokens; ratio {ratio} (the paper: about 1,000x to 100,000x)",
            f"- fine-tunes by how they stopped: {', '.join(f'{k} {v}' for k, v in sorted(ev['stops'].items()))}",
            f"- rows with an interval: {ev['rows_with_interval']} of {ev['rows']}; seeds: {ev['seeds']}",
            "- intervals: 95%, from a bootstrap over test documents (and the spread across seeds), on the mean "
            "per-token NLL, shown as perplexity ± half-width", ""]
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
    out += ["## The paper's findings, checked", ""]
    for f in facts["findings"]:
        out += [f"**{f['n']}. {f['claim']}** *{f['verdict']}.* {f['text']}", ""]
    return "\n".join(out)


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
