"""The overlap stage (``speclm corpus overlap``; ``speclm run`` runs it between the corpus
and the tokens): measure the overlap of every domain's valid/test documents with the
generic train split (:mod:`speclm.corpus.overlap`), write ``corpus/overlap.json`` and,
with ``corpus.drop_overlap`` (the default), rewrite ``corpus/generic.parquet`` without the
overlapping generic train documents.

The dropped rows are kept in ``corpus/overlap/dropped.parquet`` with their row numbers,
so the original generic set can always be put back: a new threshold, ``drop_overlap =
false`` or ``--force`` first restores it, then measures again. ``corpus/overlap/state.json``
holds the sha256 of the generic file as this stage left it; only when the file still has
that hash is a drop in effect (a rebuilt corpus replaces the whole folder anyway).

The manifest (``corpus/overlap/manifest.json``, written last) is keyed on the corpus
fingerprint, the overlap config and the generic file's hash, so a rerun is a no-op. The
corpus stage's own manifest does not list hashes, so the rewrite does not make it stale.
Every write is atomic and ordered so that a run killed at any point is finished by the
next one: restore (if needed) -> dropped rows + state -> generic file -> corpus summary and
report -> manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core import atomic, manifest
from ..core.run import Run
from .overlap import find_overlap, words
from .store import GENERIC, SUMMARY, read_parquet, read_summary, set_file, summarize

STAGE = "overlap"
REPORT = "overlap.json"  # in the corpus folder
DROPPED = "dropped.parquet"
STATE = "state.json"


def overlap_dir(run: Run) -> Path:
    return run.corpus_dir / "overlap"


def _stage_config(run: Run) -> dict:
    c = run.config.corpus
    return {"drop": c.drop_overlap, "threshold": c.overlap_threshold, "ngram": c.overlap_ngram, "version": 1}


def _inputs(run: Run) -> dict[str, str]:
    return {
        "corpus": manifest.require_fingerprint(run.corpus_dir, "corpus build"),
        "generic": manifest.hash_file(set_file(run.corpus_dir, GENERIC)),
    }


def _write_table(path: Path, table) -> None:
    import pyarrow.parquet as pq

    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _original(run: Run):
    """The generic table before any drop: the current file, plus the dropped rows put back
    at their places when this stage's drop is in effect."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, odir = set_file(run.corpus_dir, GENERIC), overlap_dir(run)
    current = read_parquet(path)
    try:
        state = json.loads((odir / STATE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return current, False
    if state.get("generic_sha256") != manifest.hash_file(path) or not (odir / DROPPED).exists():
        return current, False
    dropped = read_parquet(odir / DROPPED)
    if dropped.num_rows == 0:
        return current, False
    rows = dropped["row"].to_numpy()
    keep = np.setdiff1d(np.arange(current.num_rows + len(rows)), rows)
    both = pa.concat_tables([current, dropped.drop_columns(["row"]).cast(current.schema)])
    return both.take(np.argsort(np.concatenate([keep, rows]), kind="stable")), True


def _update_summary(corpus_dir: Path, table, dropped: dict) -> None:
    """Recount the generic set in the corpus summary after the generic file changed."""
    from .doc import Doc

    summary = read_summary(corpus_dir)
    d = table.select(["id", "text", "source", "split"]).to_pydict()
    docs = [Doc(id=i, text=t, source=s) for i, t, s in zip(d["id"], d["text"], d["source"])]
    fresh = summarize({GENERIC: docs}, {GENERIC: np.array(d["split"], dtype=object)}, summary.get("source", ""))
    summary["sets"][GENERIC] = fresh["sets"][GENERIC]
    summary["sources"][GENERIC] = fresh["sources"][GENERIC]
    totals = [per["total"] for per in summary["sets"].values()]
    summary["total"] = {
        "docs": sum(t["docs"] for t in totals),
        "mb": round(sum(t["mb"] for t in totals), 4),
        "est_tokens": sum(t["est_tokens"] for t in totals),
    }
    summary["overlap"] = {"generic_train_docs_dropped": dropped["docs"] if dropped["applied"] else 0, "report": REPORT}
    atomic.write_json(corpus_dir / SUMMARY, summary)


def _write_state(odir: Path, dropped, rows: np.ndarray, generic_sha256: str) -> None:
    """Replace the stage folder with the dropped rows (and their row numbers) and the hash
    the generic file has once they are dropped; the previous manifest goes with it."""
    import pyarrow as pa

    with atomic.atomic_dir(odir) as tmp:
        _write_table(tmp / DROPPED, dropped.append_column("row", pa.array(rows, pa.int64())))
        atomic.write_json(tmp / STATE, {"generic_sha256": generic_sha256, "dropped": len(rows)})


def apply_overlap(run: Run, force: bool = False) -> dict:
    """Hold the overlap folder's lock (a second process waits, then finds it fresh) around
    :func:`_apply_overlap`."""
    from ..core.locks import hold_stage

    with hold_stage(overlap_dir(run), f"contamination check of {run.path}"):
        return _apply_overlap(run, force)


def _apply_overlap(run: Run, force: bool = False) -> dict:
    """Measure (and with corpus.drop_overlap, apply) the overlap of ``run``'s corpus;
    returns the report (also ``corpus/overlap.json``). A no-op when nothing changed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus_dir, odir = run.corpus_dir, overlap_dir(run)
    cfg, inputs = _stage_config(run), _inputs(run)
    if not force and manifest.is_fresh(odir, STAGE, cfg, inputs):
        return json.loads((corpus_dir / REPORT).read_text(encoding="utf-8"))
    gpath = set_file(corpus_dir, GENERIC)
    atomic.remove_stale_temps(odir)
    atomic.remove_stale_temps(gpath)
    original, restored = _original(run)
    if restored:  # put the original back first: from here on it is the file on disk
        _write_table(gpath, original)

    report = find_overlap(corpus_dir, run.config.corpus)
    wanted = set(report["drop_ids"])  # generic train ids (ids are unique within a set)
    drop = np.array([i in wanted for i in original["id"].to_pylist()], dtype=bool)
    rows = np.flatnonzero(drop)
    report["dropped"] = {
        "applied": bool(run.config.corpus.drop_overlap),
        "docs": len(rows),
        "words": int(sum(len(words(t)) for t in original["text"].take(pa.array(rows)).to_pylist())),
    }
    apply = run.config.corpus.drop_overlap and len(rows) > 0
    final = original.filter(pa.array(~drop)) if apply else original
    if apply:  # dropped rows and the new file's hash are in place before the file changes
        with atomic.atomic_path(gpath) as gtmp:
            pq.write_table(final, gtmp, compression="zstd")
            _write_state(odir, original.take(pa.array(rows)), rows, manifest.hash_file(gtmp))
    else:
        _write_state(odir, original.slice(0, 0), rows[:0], manifest.hash_file(gpath))
    if apply or restored:
        _update_summary(corpus_dir, final, report["dropped"])
    atomic.write_json(corpus_dir / REPORT, report)
    manifest.write(odir, STAGE, cfg, _inputs(run), [DROPPED, STATE, f"../{REPORT}"], {"dropped": report["dropped"]})
    return report
