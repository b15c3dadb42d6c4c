"""Extra sections of the grid's markdown table: the models before fine-tuning (the
paper's Table 4 no-FT column, and the generic valid perplexity of each pretrained model)."""

from __future__ import annotations

import math


def no_ft_table(rows: list[dict], methods: list[str], domains: list[str], sizes: list[str]) -> list[str]:
    """Per (method, size): each domain's test perplexity of the checkpoint its
    specialization started from (before fine-tuning), and that checkpoint's generic valid
    perplexity (the mean over domains when the start differs per domain). Empty without
    such rows."""
    by = {(r["method"], r["domain"], r["size"]): r for r in rows if r.get("pretrained_nll") is not None}
    if not by:
        return []
    head = ["method", "size", *domains, "generic valid"]
    lines = ["## Before fine-tuning (no FT): the start checkpoint on each domain's test split", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        for s in sizes:
            rs = [by[(m, d, s)] for d in domains if (m, d, s) in by]
            if not rs:
                continue
            cells = [m, s] + [f"{math.exp(by[(m, d, s)]['pretrained_nll']):.2f}" if (m, d, s) in by else "–"
                              for d in domains]
            gen = sum(r["generic_valid_nll"] for r in rs) / len(rs)
            cells.append(f"{math.exp(gen):.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "No FT: the pretrained model (SLM-mix: the chosen expert; SLM-pn: the instantiated expert; "
              "SLM-is / SLM-dsir: the domain's pretraining for that size) before any fine-tuning; "
              "slm-nopt has none.", ""]
    return lines


def tv_table(rows: list[dict], domains: list[str], sizes: list[str]) -> list[str]:
    """Per (domain, size): the total variation distance between the specialization set's
    histogram and the whole train split's, as each histogram method (slm-is, slm-dsir,
    slm-mix) saw it. Empty without such rows."""
    tv: dict[tuple[str, str, str], float] = {}
    for r in rows:
        spec = (r.get("extra") or {}).get("specialization_set")
        if spec and "tv_to_split" in spec:
            tv[(r["method"], r["domain"], r["size"])] = float(spec["tv_to_split"])
    if not tv:
        return []
    methods = sorted({m for m, _, _ in tv})
    head = ["method", "size", *domains]
    lines = ["## Specialization set vs the whole train split (total variation of the histograms)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        for s in sizes:
            if any((m, d, s) in tv for d in domains):
                lines.append("| " + " | ".join([m, s] + [f"{tv[(m, d, s)]:.3f}" if (m, d, s) in tv else "–"
                                                         for d in domains]) + " |")
    return lines + ["", "0 = the set's histogram is the split's; large k on a small set drifts towards 1.", ""]
