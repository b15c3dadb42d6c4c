"""The grid's results file (``eval/<name>.jsonl``): its rows, their macro averages, and the
markdown table ``eval/<name>.md``. Written by :mod:`speclm.experiment`, drawn by
:mod:`speclm.experiment_plots`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..core import atomic
from .tables import no_ft_table, tv_table

# Methods that reuse another method's results run after it (SLM-d reuses the LLM teacher).
# The place also sets a method's color and marker in every figure: slm-pn-hist (which sorted
# last as an unlisted method) keeps its place, and the ablation slm-is-full comes after it, so
# adding it changes no other method's color.
METHOD_ORDER = ["slm", "slm-nopt", "llm", "llm-lora", "slm-d", "slm-is", "slm-dsir", "slm-mix", "slm-pn", "slm-pn-hist",
                "slm-is-full"]


def order_methods(methods: list[str]) -> list[str]:
    """Known methods in METHOD_ORDER, then the others by name."""
    return sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))


def seed_rows(results: Path, chash: Optional[str], warn=None) -> dict[tuple[str, str, str, int], dict]:
    """The rows of ``results`` with config hash ``chash``, one per (method, domain, size,
    seed) (rows without a seed are seed 0): when two grid processes computed the same row,
    the last one written counts. A row of the wrong shape is a one-line error naming its
    line; with ``warn`` (a function of one line of text), duplicated rows and rows with a
    non-finite NLL or an unknown method are named by line and left out."""
    out: dict[tuple[str, str, str, int], dict] = {}
    seen: dict[tuple, int] = {}
    for n, r in atomic.read_jsonl_numbered(results):
        if r.get("config") != chash:
            continue
        key = row_key(results, n, r)
        if warn is not None:
            why = _doubtful(r)
            if why:
                warn(f"{results} line {n}: {why}; the row is left out (delete the line and rerun `speclm grid` "
                     "to compute it again)")
                continue
            if key in seen:
                warn(f"{results} line {n} repeats the row of line {seen[key]} ({'/'.join(map(str, key))}); "
                     "each job counts once (the last one)")
        seen[key] = n
        out[key] = r
    return out


def warn_stderr(text: str) -> None:
    import sys

    print(f"speclm: warning: {text}", file=sys.stderr, flush=True)


def row_key(results: Path, n: int, r: dict) -> tuple[str, str, str, int]:
    """(method, domain, size, seed) of a results row, or a one-line error naming its line."""
    from ..core.errors import SpeclmError

    key = (r.get("method"), r.get("domain"), r.get("size"), r.get("seed", 0))
    if not all(isinstance(x, str) and x for x in key[:3]) or not isinstance(key[3], int) or isinstance(key[3], bool):
        raise SpeclmError(f"{results} line {n} is not a grid row (method, domain and size must be names, seed a "
                          "number); delete or repair that line and rerun (a deleted row is recomputed)")
    return key  # type: ignore[return-value]


def _doubtful(r: dict) -> str:
    from ..methods import base

    nll = r.get("nll")
    if not isinstance(nll, (int, float)) or isinstance(nll, bool) or not math.isfinite(nll):
        return f"its nll is {nll!r}, not a finite number"
    if r["method"] not in base.known():
        return f"unknown method {r['method']!r}"
    return ""


def grid_rows(results: Path, chash: Optional[str]) -> dict[tuple[str, str, str], dict]:
    """One row per (method, domain, size): the row itself with one seed; with several, the
    first seed's row with ``nll`` the mean over seeds, ``nll_sd`` their sd and
    ``seed_nlls`` the NLL of each seed (see :func:`with_interval`)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for (m, d, s, _), r in sorted(seed_rows(results, chash).items(), key=lambda kv: kv[0][3]):
        groups.setdefault((m, d, s), []).append(r)
    return {key: with_interval(aggregate_seeds(rs)) for key, rs in groups.items()}


def aggregate_seeds(rs: list[dict]) -> dict:
    if len(rs) == 1:
        return {**rs[0], "seeds": 1}
    nlls = [float(r["nll"]) for r in rs]
    mean = sum(nlls) / len(nlls)
    sd = math.sqrt(sum((x - mean) ** 2 for x in nlls) / (len(nlls) - 1))
    return {**rs[0], "nll": mean, "ppl": math.exp(mean), "nll_sd": sd, "seeds": len(rs), "seed_nlls": nlls}


def with_interval(r: dict) -> dict:
    """Adds ``ppl_pm``, the ± the tables print: with several seeds, half the width of
    [exp(nll - sd), exp(nll + sd)] (sd over seeds); else half the width of the 95% bootstrap
    interval [exp(nll - 1.96 SE), exp(nll + 1.96 SE)]; None for rows without either."""
    from .stats import ppl_interval

    if r.get("seeds", 1) > 1:
        lo, hi = math.exp(r["nll"] - r["nll_sd"]), math.exp(r["nll"] + r["nll_sd"])
        return {**r, "ppl_lo": lo, "ppl_hi": hi, "ppl_pm": (hi - lo) / 2}
    if r.get("nll_se") is None:
        return {**r, "ppl_pm": None}
    lo, hi, h = ppl_interval(r["nll"], r["nll_se"])
    return {**r, "ppl_lo": lo, "ppl_hi": hi, "ppl_pm": h}


def macro_rows(rows: list[dict], run_path: Optional[Path] = None, replicates: int = 0) -> dict[tuple[str, str], dict]:
    """(method, size) -> macro-averaged NLL/PPL over the domains present; with ``run_path``
    and ``replicates``, its error bar: the sd over seeds of the per-seed macro NLL (several
    seeds), else the bootstrap SE (each domain resampled over its documents, replicate r
    averaged over the domains, speclm.report.stats.macro_se)."""
    out: dict[tuple[str, str], dict] = {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["size"]), []).append(r)
    for key, rs in groups.items():
        nll = sum(r["nll"] for r in rs) / len(rs)
        mac = {"nll": nll, "ppl": math.exp(nll), "domains": sorted(r["domain"] for r in rs)}
        seeds = {r.get("seeds", 1) for r in rs}
        if run_path is not None and replicates >= 2:
            if seeds == {1}:
                from .stats import macro_se

                se = macro_se(run_path, rs, replicates)
                if se is not None:
                    mac = with_interval({**mac, "nll_se": se})
            elif len(seeds) == 1:
                per_seed = [sum(x) / len(x) for x in zip(*(r["seed_nlls"] for r in rs))]
                mac = with_interval(aggregate_seeds([{"nll": x} for x in per_seed]) | {"domains": mac["domains"]})
        out[key] = mac
    return out


def macro_table(results: Path, chash: Optional[str], replicates: int) -> dict[tuple[str, str], dict]:
    """(method, size) -> its macro over the domains present, with the one interval every
    view prints (speclm.report.evidence.Evidence: bootstrap over test documents drawn jointly,
    plus the spread of the per-seed macros, borrowed from slm for one seed; Student's t):
    ``nll``, ``ppl``, ``domains``, ``nll_se``, ``ppl_lo``, ``ppl_hi``, ``ppl_pm``, ``borrowed``."""
    from .evidence import Evidence, group

    rows = list(seed_rows(results, chash).values())
    groups = group(rows)
    out: dict[tuple[str, str], dict] = {}
    for m, s in dict.fromkeys((r["method"], r["size"]) for r in rows):
        domains = sorted({d for (mm, d, ss) in groups if mm == m and ss == s})
        sub = {k: v for k, v in groups.items() if k[1] in domains and k[2] == s}
        e = Evidence(sub, domains, results.parent.parent, replicates).macro(m, s)
        if e is None:
            continue
        lo, hi = math.exp(e.nll - e.q * e.se), math.exp(e.nll + e.q * e.se)
        out[(m, s)] = {"nll": e.nll, "ppl": e.ppl, "domains": domains, "nll_se": e.se, "ppl_lo": lo, "ppl_hi": hi,
                       "ppl_pm": (hi - lo) / 2 if e.se > 0 else None, "borrowed": e.borrowed, "seeds": e.seeds}
    return out


def ppl_cell(r: Optional[dict]) -> str:
    if not r:
        return "–"
    pm = r.get("ppl_pm")
    return f"{r['ppl']:.2f}" + (f" ± {pm:.2f}" if pm is not None else "")


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
    macro = macro_table(results, chash, _replicates(results) or 1000)
    n_seeds = max(r.get("seeds", 1) for r in rows)
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
                cells.append(ppl_cell(r))
            mac = macro.get((m, s))
            complete = mac and len(mac["domains"]) == len(domains)
            cells.append(ppl_cell(mac) + ("†" if mac.get("borrowed") else "") + ("" if complete else "*") if mac else "–")
            gen = max(r["cost"]["generic"]["flops"] for r in mrows)
            spec = sum(r["cost"]["specialization"]["flops"] for r in mrows) / len(mrows)
            gen_h = max(r["cost"]["generic"]["device_hours"] for r in mrows)
            spec_h = sum(r["cost"]["specialization"]["device_hours"] for r in mrows) / len(mrows)
            cells += [f"{gen:.2e}", f"{spec:.2e}", f"{gen_h:.4f}", f"{spec_h:.4f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += no_ft_table(rows, methods, domains, sizes)
    lines += tv_table(rows, domains, sizes)
    lines += [
        ("Per domain ± : one sd over " + f"{n_seeds} seeds (half the width of [exp(nll - sd), exp(nll + sd)]); " if n_seeds > 1 else
         "Per domain ± : half the 95% interval from the row's bootstrap over test documents; ")
        + "macro ± : half the 95% interval (Student's t) of the macro NLL: a bootstrap over test documents drawn "
        "jointly for every method, plus the spread of the per-seed macros († one seed: the spread borrowed from slm); "
        "the same interval as report.md and the plots.",
        "Macro: exp(mean over domains of the per-token NLL); * = not every domain done yet. "
        "(large): the specialized model is the large shape (breaks the inference budget).",
        "Costs: generic = pretraining shared by every domain (paid once); spec. = per domain "
        "(fine-tuning, plus per-domain pretraining for slm-is / slm-dsir / slm-is-full, plus the teacher's "
        "fine-tuning and forward passes for slm-d). Device-hours on this run's device.",
        *(["slm-is-full: an ablation, slm-is pretrained at the full budget instead of methods.per_domain_budget "
           "(selection apart from budget); it competes in no finding and is never recommended."]
          if "slm-is-full" in methods else []),
        "",
        f"![macro perplexity vs size and cost]({results.stem}.png)",
        f"![perplexity per domain]({results.stem}-domains.png)",
        "",
    ]
    atomic.write_text(table, "\n".join(lines))


def _replicates(results: Path) -> int:
    """The run's ``methods.bootstrap`` (its saved config), for the macro average's SE."""
    from ..core.config import load, read_toml

    saved = results.parent.parent / "config.toml"
    try:
        return int(load(None, None, read_toml(saved)).methods.bootstrap) if saved.exists() else 0
    except Exception:  # noqa: BLE001 - a table without the macro's error bar, not a failure
        return 0
