"""From the plan to a model: the recommended checkpoint of each domain, and what its model
card says.

``speclm plan``, the end of ``speclm run`` and ``speclm build`` name a method; this module
turns that into checkpoints: for each domain of the grid, the row of the method at the
plan's size whose seed reached the lowest *validation* loss (the test split chooses
nothing), its checkpoint folder, its test perplexity with its interval, the plain SLM's on
the same domain and size (the baseline), their paired difference, and the licences of the
corpus. It is written to ``eval/recommended.json`` (with the hash of the run's
``config.toml``), which ``speclm export --run RUN --recommended`` reads: the export needs
nothing from this layer but that file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..core import atomic
from ..core.errors import SpeclmError
from ..core.manifest import hash_file

RECOMMENDED = "recommended.json"
BASELINE = "slm"


def pick_seed(rows: list[dict]) -> dict:
    """The row (one per seed) whose fine-tune reached the lowest validation loss."""
    def key(r: dict):
        v = (r.get("extra") or {}).get("best_valid_loss")
        return (0, float(v), r.get("seed", 0)) if isinstance(v, (int, float)) and math.isfinite(v) else (1, 0.0, r.get("seed", 0))

    return min(rows, key=key)


def _interval(nll: float, se: float, q: float = 1.96) -> dict:
    return {"ppl": math.exp(nll), "lo": math.exp(nll - q * se), "hi": math.exp(nll + q * se)}


def _licences(run) -> list[dict]:
    from ..corpus.licences import corpus_licences

    try:
        summary = atomic.read_required_json(run.corpus_dir / "summary.json", "")
    except (SpeclmError, OSError, ValueError):
        return []
    return corpus_licences(summary)


def model_facts(run, rows: list[dict], method: str, domain: str, size: str, source: str,
                baseline: str = BASELINE, label: Optional[str] = None) -> dict:
    """What the card of ``method``'s model for ``domain`` says (plain data)."""
    from ..report.evidence import difference, group, row_estimate

    mine = [r for r in rows if r["method"] == method and r["domain"] == domain and r["size"] == size]
    if not mine:
        raise SpeclmError(f"no grid row for {method} on {domain} at {size}; run the grid first")
    best = pick_seed(mine)
    if not best.get("checkpoint"):
        raise SpeclmError(f"the grid row of {method} on {domain} at {size} records no checkpoint")
    ckpt = Path(best["checkpoint"])
    ckpt = ckpt if ckpt.is_absolute() else run.path / ckpt
    facts = {
        "method": label or method, "domains": [domain], "size": size, "seed": int(best.get("seed", 0)),
        "seeds": len(mine), "checkpoint": str(ckpt.resolve()), "run": str(run.path.resolve()), "recipe_source": source,
        "ppl": {"ppl": float(best["ppl"]), "lo": float(best.get("ppl_lo") or best["ppl"]),
                "hi": float(best.get("ppl_hi") or best["ppl"])},
        "licences": _licences(run),
    }
    tokens = ((best.get("extra") or {}).get("plan") or {}).get("train_tokens")
    if tokens:
        facts["spec_tokens"] = int(tokens)
    base = [r for r in rows if r["method"] == baseline and r["domain"] == domain and r["size"] == size]
    if base and method != baseline:
        e = row_estimate(base)
        facts["baseline"] = {"method": baseline, **_interval(e.nll, e.se, e.q), "seeds": len(base)}
        if pick_seed(base).get("checkpoint"):
            b = Path(pick_seed(base)["checkpoint"])
            facts["baseline"]["checkpoint"] = str((b if b.is_absolute() else run.path / b).resolve())
        groups = group([*mine, *base])
        d = difference(groups, method, baseline, size, [domain], run.path, run.config.methods.bootstrap)
        if d is not None:
            facts["baseline_better"] = d.significant and d.delta > 0
            if d.significant:
                verdict = f"{method} is {'better' if d.delta < 0 else 'worse'} than {baseline} beyond the interval"
            else:
                verdict = "the interval includes no difference: this run cannot tell the two apart"
            facts["difference"] = f"{d.text()}; {verdict}"
    return facts


def write_recommended(run, rows: list[dict], method: str, size: str, source: str,
                      domains: Optional[list[str]] = None, label: Optional[str] = None) -> dict:
    """``eval/recommended.json``: the recommended checkpoint of every domain (or ``domains``)."""
    domains = domains or sorted({r["domain"] for r in rows if r["method"] == method and r["size"] == size})
    if not domains:
        raise SpeclmError(f"no grid row for {method} at {size}; nothing to recommend")
    doc = {"format": "speclm-recommended", "run": str(run.path.resolve()), "method": label or method, "size": size,
           "source": source, "config_sha256": hash_file(run.path / "config.toml"),
           "models": [model_facts(run, rows, method, d, size, source, label=label) for d in domains]}
    atomic.write_json(run.eval_dir / RECOMMENDED, doc)
    return doc


def export_command(run_path, domain: Optional[str] = None, out: str = "MODEL_DIR") -> str:
    import shlex

    return (f"speclm export --run {shlex.quote(str(run_path))} --recommended"
            + (f" --domain {shlex.quote(domain)}" if domain else "") + f" --out {out}")


def recommendation_lines(doc: dict, run_path) -> list[str]:
    """The checkpoint (method, seed, path) of each domain and the exact export command."""
    several = len(doc["models"]) > 1
    out = []
    for m in doc["models"]:
        d = m["domains"][0]
        seeds = f" (best of {m['seeds']} seeds by validation loss)" if m["seeds"] > 1 else ""
        base = m.get("baseline")
        vs = f"; plain slm {base['ppl']:.2f} [{base['lo']:.2f}, {base['hi']:.2f}]" if base else ""
        out.append(f"recommended checkpoint: {m['method']}, seed {m['seed']}{seeds}, domain {d}: {m['checkpoint']} "
                   f"(test ppl {m['ppl']['ppl']:.2f} [{m['ppl']['lo']:.2f}, {m['ppl']['hi']:.2f}]{vs})")
        out.append(f"export it: {export_command(run_path, d if several else None)}")
    return out
