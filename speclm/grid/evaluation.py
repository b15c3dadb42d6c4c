"""What the grid measures for one row: the specialized model on the domain's test split
(per-window NLLs kept on disk, bootstrap SE over documents), and the checkpoint the
specialization started from, before fine-tuning, on the domain test split and on the
generic valid split (Table 4's no-FT column; cached per checkpoint and set).

The test split is evaluated whole unless ``methods.eval_max_windows`` caps it (evenly
spread windows, :func:`speclm.train.data.eval_indices`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from ..core import atomic
from ..core.errors import SpeclmError
from ..core.manifest import hash_obj
from ..core.run import Run
from ..report import stats


def _windows(run: Run, set_name: str, split: str):
    from ..tokens.shards import TokenShards

    return TokenShards(run.tokens_dir).windows(set_name, split)


def eval_windows(run: Run, set_name: str, split: str = "test") -> tuple[object, np.ndarray]:
    """(windows, the indices evaluated): all, or ``methods.eval_max_windows`` evenly spread."""
    from ..train.data import eval_indices

    w = _windows(run, set_name, split)
    if len(w) == 0:
        raise SpeclmError(f"{set_name}: the {split} split has no windows")
    return w, eval_indices(len(w), run.config.methods.eval_max_windows)


def check_bootstrap(run: Run, domains: list[str]) -> None:
    """Refuse, before any work, a bootstrap the test splits cannot support."""
    m = run.config.methods
    if m.bootstrap < 2:
        raise SpeclmError(f"methods.bootstrap must be at least 2 replicates, got {m.bootstrap}")
    for d in domains:
        w, idx = eval_windows(run, d, "test")
        n_docs = len(np.unique(np.asarray(w.index[idx, 1])))
        if n_docs < 2:
            raise SpeclmError(f"{d}: the test split has {n_docs} document(s) in the evaluated windows; "
                              "a bootstrap over documents needs at least 2")


def measure(run: Run, model, set_name: str, split: str = "test", progress: bool = True) -> dict:
    """Per-window NLLs of ``model`` on a set's split, their mean per-token NLL and its
    bootstrap SE over documents."""
    from ..train.validate import window_nll

    t = run.config.train
    w, idx = eval_windows(run, set_name, split)
    sums = window_nll(model, w, idx, batch_size=t.batch_size, dtype=t.dtype, progress=progress,
                      desc=f"eval {set_name}/{split}")
    return summarize(run, w, idx, sums, set_name)


def summarize(run: Run, w, idx: np.ndarray, sums: np.ndarray, set_name: str) -> dict:
    """Per-window NLL sums of the windows ``idx`` -> mean per-token NLL, bootstrap SE over documents."""
    from ..train.data import window_length

    docs = np.asarray(w.index[idx, 1], dtype=np.int64)
    tokens = np.full(len(idx), window_length(w), dtype=np.int64)
    nll = float(math.fsum(sums.tolist()) / tokens.sum())
    se = stats.bootstrap_se(docs, sums, tokens, run.config.methods.bootstrap, set_name)
    return {"nll": nll, "nll_se": se, "tokens": int(tokens.sum()), "documents": int(len(np.unique(docs))),
            "arrays": (idx, docs, tokens, sums)}


def evaluate_specialized(run: Run, ckpt: Path, domain: str, keep: Optional[Path] = None) -> dict:
    """The specialized checkpoint on the domain test split; ``keep``: write the per-window
    NLLs there (:data:`speclm.report.stats.WINDOWS_FILE` layout). A checkpoint trained with
    another tokenizer is refused."""
    from ..tokens.shards import TokenShards
    from ..train.checkpoint import check_tokenizer, load_transformer, read_meta

    check_tokenizer(read_meta(ckpt), TokenShards(run.tokens_dir), ckpt)
    model = load_transformer(ckpt)
    ev = measure(run, model, domain, "test")
    if keep is not None:
        stats.save_windows(keep, *ev["arrays"])
    ev.pop("arrays")
    ev["params"] = model.param_count()
    return ev


def _stamp(ckpt: Path) -> str:
    files = sorted(p for p in Path(ckpt).iterdir() if p.is_file())
    return hash_obj([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files])[:16]


def _rel(run: Run, ckpt: Path) -> str:
    return str(ckpt.relative_to(run.path)) if ckpt.is_relative_to(run.path) else str(ckpt.resolve())


def evaluate_start(run: Run, ckpt: Optional[Path], domain: str) -> dict:
    """The checkpoint a specialization started from, before fine-tuning: NLL on the domain
    test split (``pretrained_nll``, ``pretrained_nll_se``) and on the generic valid split
    (``generic_valid_nll``, ``generic_valid_nll_se``). Each (checkpoint, set) is computed
    once: cached under ``eval/pretrained/``. Empty when the method has no pretrained start
    (SLM-nopt)."""
    from ..corpus.store import GENERIC
    from ..train.checkpoint import load_transformer

    if ckpt is None or not (Path(ckpt) / "model.json").exists():
        return {}
    ckpt = Path(ckpt)
    rel = _rel(run, ckpt)
    cache = run.eval_dir / "pretrained" / f"{hash_obj(rel)[:16]}.json"
    try:  # a cache: a damaged file is computed again (and rewritten whole)
        doc = atomic.read_json_file(cache, "") if cache.exists() else {}
    except SpeclmError:
        doc = {}
    stamp = {"checkpoint": rel, "stamp": _stamp(ckpt), "max_windows": run.config.methods.eval_max_windows,
             "bootstrap": run.config.methods.bootstrap}
    if {k: doc.get(k) for k in stamp} != stamp:
        doc = dict(stamp)
    model = None
    for set_name, split in ((domain, "test"), (GENERIC, "valid")):
        key = f"{set_name}/{split}"
        if isinstance(doc.get(key), dict) and all(isinstance(doc[key].get(k), (int, float)) for k in ("nll", "nll_se")):
            continue
        model = model or load_transformer(ckpt)
        ev = measure(run, model, set_name, split)
        ev.pop("arrays")
        doc[key] = ev
        atomic.write_json(cache, doc)
    out = {"pretrained_checkpoint": rel, "pretrained_nll": doc[f"{domain}/test"]["nll"],
           "pretrained_nll_se": doc[f"{domain}/test"]["nll_se"], "generic_valid_nll": doc[f"{GENERIC}/valid"]["nll"],
           "generic_valid_nll_se": doc[f"{GENERIC}/valid"]["nll_se"]}
    out["pretrained_ppl"] = math.exp(out["pretrained_nll"])
    out["generic_valid_ppl"] = math.exp(out["generic_valid_nll"])
    return out


def evaluate_routed(run: Run, routed) -> Optional[dict]:
    """A routed generic model (:class:`speclm.methods.routed.Routed`: SLM-mix's experts,
    SLM-pn's projected network) on the generic valid split, each window through its
    cluster's expert: ``nll``, ``nll_se`` (bootstrap over documents), ``tokens``,
    ``documents``. Computed once per set of checkpoints (a pretraining or a snapshot):
    cached under ``eval/pretrained/``. None for ``routed`` None."""
    from ..corpus.store import GENERIC

    if routed is None:
        return None
    rels = [_rel(run, Path(c)) for c in routed.checkpoints]
    cache = run.eval_dir / "pretrained" / f"{hash_obj(['routed', rels])[:16]}.json"
    stamp = {"routed": rels, "stamps": [_stamp(Path(c)) for c in routed.checkpoints], "k": routed.k,
             "max_windows": run.config.methods.eval_max_windows, "bootstrap": run.config.methods.bootstrap}
    doc = atomic.read_required_json(cache, "") if cache.exists() else {}
    if {k: doc.get(k) for k in stamp} == stamp and f"{GENERIC}/valid" in doc:
        return doc[f"{GENERIC}/valid"]
    t = run.config.train
    w, idx = eval_windows(run, GENERIC, "valid")
    ev = summarize(run, w, idx, routed.nll(w, idx, batch_size=t.batch_size, dtype=t.dtype, progress=True), GENERIC)
    ev.pop("arrays")
    atomic.write_json(cache, {**stamp, f"{GENERIC}/valid": ev})
    return ev


def route_start(start: dict, routed: Optional[dict]) -> dict:
    """A row's start fields with the routed generic model's: ``generic_valid_nll`` (and its SE
    and perplexity) become the routed model's, the start checkpoint's (one expert on every
    window) stays as ``generic_valid_nll_expert``, and ``generic_valid_routed`` is true."""
    if routed is None or "generic_valid_nll" not in start:
        return start
    return {**start, "generic_valid_nll_expert": start["generic_valid_nll"],
            "generic_valid_nll_expert_se": start["generic_valid_nll_se"],
            "generic_valid_nll": routed["nll"], "generic_valid_nll_se": routed["nll_se"],
            "generic_valid_ppl": math.exp(routed["nll"]), "generic_valid_routed": True}
