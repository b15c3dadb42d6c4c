"""The grid's results file (``eval/<name>.jsonl``): its rows, their macro averages, and the
markdown table ``eval/<name>.md``. Written by :mod:`speclm.experiment`, drawn by
:mod:`speclm.experiment_plots`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..core import atomic

# Methods that reuse another method's results run after it (SLM-d reuses the LLM teacher).
METHOD_ORDER = ["slm", "slm-nopt", "llm", "llm-lora", "slm-d", "slm-is", "slm-dsir", "slm-mix", "slm-pn"]


def order_methods(methods: list[str]) -> list[str]:
    """Known methods in METHOD_ORDER, then the others by name."""
    return sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))


def grid_rows(results: Path, chash: Optional[str]) -> dict[tuple[str, str, str], dict]:
    """The rows of ``results`` with config hash ``chash``, one per (method, domain, size):
    when two grid processes computed the same row, the last one written counts."""
    return {(r["method"], r["domain"], r["size"]): r for r in atomic.read_jsonl(results) if r.get("config") == chash}


def macro_rows(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(method, size) -> macro-averaged NLL/PPL over the domains present, and cost sums."""
    out: dict[tuple[str, str], dict] = {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["size"]), []).append(r)
    for key, rs in groups.items():
        nll = sum(r["nll"] for r in rs) / len(rs)
        out[key] = {"nll": nll, "ppl": math.exp(nll), "domains": sorted(r["domain"] for r in rs)}
    return out


def write_table(results: Path, table: Path, chash: str) -> None:
    """The markdown table of the rows with config hash ``chash``: one section per size,
    per-domain and macro perplexity, generic and per-domain costs; links the plots."""
    rows = list(grid_rows(results, chash).values())
    if not rows:
        return
    methods = order_methods(list(dict.fromkeys(r["method"] for r in rows)))
    domains = sorted({r["domain"] for r in rows})
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    from ..methods.sizes import parse_size

    sizes.sort(key=lambda s: parse_size(s) or math.inf)
    by = {(r["method"], r["domain"], r["size"]): r for r in rows}
    macro = macro_rows(rows)
    lines = ["# Specialized perplexity (domain test split, after fine-tuning)", ""]
    for s in sizes:
        lines += [f"## size {s}", ""]
        head = ["method", *domains, "macro", "generic FLOPs", "spec. FLOPs / domain", "generic dev-h", "spec. dev-h / domain"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in methods:
            mrows = [by[(m, d, s)] for d in domains if (m, d, s) in by]
            if not mrows:
                continue
            cells = [m if mrows[0].get("small_at_inference", True) else f"{m} (large)"]
            for d in domains:
                r = by.get((m, d, s))
                cells.append(f"{r['ppl']:.2f}" if r else "–")
            mac = macro.get((m, s))
            complete = mac and len(mac["domains"]) == len(domains)
            cells.append(f"{mac['ppl']:.2f}" + ("" if complete else "*") if mac else "–")
            gen = max(r["cost"]["generic"]["flops"] for r in mrows)
            spec = sum(r["cost"]["specialization"]["flops"] for r in mrows) / len(mrows)
            gen_h = max(r["cost"]["generic"]["device_hours"] for r in mrows)
            spec_h = sum(r["cost"]["specialization"]["device_hours"] for r in mrows) / len(mrows)
            cells += [f"{gen:.2e}", f"{spec:.2e}", f"{gen_h:.4f}", f"{spec_h:.4f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Macro: exp(mean over domains of the per-token NLL); * = not every domain done yet. "
        "(large): the specialized model is the large shape (breaks the inference budget).",
        "Costs: generic = pretraining shared by every domain (paid once); spec. = per domain "
        "(fine-tuning, plus per-domain pretraining for slm-is / slm-dsir, plus the teacher's fine-tuning "
        "and forward passes for slm-d). Device-hours on this run's device.",
        "",
        f"![macro perplexity vs size and cost]({results.stem}.png)",
        f"![perplexity per domain]({results.stem}-domains.png)",
        "",
    ]
    atomic.write_text(table, "\n".join(lines))
