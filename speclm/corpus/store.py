"""The corpus on disk: one Parquet file per set, split deterministically, plus a summary.

``generic.parquet`` and ``domain-<name>.parquet`` hold the columns ``id``, ``text``,
``source``, ``domain`` ("generic" for the generic set) and ``split`` (train/valid/test).

Splits: each document gets two stable hashes of (seed, id) in [0, 1). A document is
``test`` when its test hash is below ``test_fraction``, else ``valid`` when its valid hash
is below ``valid_fraction / (1 - test_fraction)``, else ``train``; so adding a document
never moves another one. On small sets the hash rule alone could leave an evaluation
split nearly empty, so each of valid and test is topped up to ``min_eval_docs``
documents (the ones with the smallest hashes; at most ``(n - 1) // 2`` each so train
keeps a document). Only then can an added document move one other document, at a top-up
boundary.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from ..core import atomic
from ..core.errors import SpeclmError
from ..core.table import text_table
from ..core.sections import CorpusConfig
from .doc import Doc

GENERIC = "generic"
SPLITS = ("train", "valid", "test")
SUMMARY = "summary.json"
BYTES_PER_TOKEN_ESTIMATE = 3.0  # byte-level BPE, 8k vocabulary, on the default corpus (SOURCES.md)
_SET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def check_domain_name(name: str) -> str:
    if not _SET_NAME.match(name or ""):
        raise SpeclmError(
            f"domain name {name!r} is not a safe identifier: use letters, digits and _ (starting with a letter, at most 64)"
        )
    if name == GENERIC:
        raise SpeclmError(f"domain name {name!r} is reserved for the generic set; pick another name")
    return name


def set_file(corpus_dir: str | Path, set_name: str) -> Path:
    name = "generic.parquet" if set_name == GENERIC else f"domain-{set_name}.parquet"
    return Path(corpus_dir) / name


def _unit_hash(seed: int, salt: str, ids: list[str]) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.float64)
    prefix = f"{seed}\x00{salt}\x00".encode()
    for i, doc_id in enumerate(ids):
        digest = hashlib.blake2b(prefix + doc_id.encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def _pick(u: np.ndarray, candidates: np.ndarray, threshold: float, minimum: int) -> np.ndarray:
    """Boolean mask over ``u``: candidates with u < threshold, topped up to ``minimum``
    candidates (smallest u first)."""
    mask = candidates & (u < threshold)
    short = minimum - int(mask.sum())
    if short > 0:
        rest = np.flatnonzero(candidates & ~mask)
        mask[rest[np.argsort(u[rest], kind="stable")[:short]]] = True
    return mask


def assign_splits(ids: list[str], seed: int, valid_fraction: float, test_fraction: float, min_eval_docs: int) -> np.ndarray:
    """The split of each document (array of "train"/"valid"/"test"); see the module doc."""
    n = len(ids)
    if n < 3:
        raise SpeclmError(f"a set needs at least 3 documents (one each for train, valid and test); got {n}")
    if not (0 <= test_fraction < 1 and 0 <= valid_fraction < 1 and valid_fraction + test_fraction < 1):
        raise SpeclmError(
            f"corpus.valid_fraction ({valid_fraction}) and corpus.test_fraction ({test_fraction}) must be in [0, 1) and sum below 1"
        )
    floor = max(1, min(min_eval_docs, (n - 1) // 2))
    all_docs = np.ones(n, dtype=bool)
    test = _pick(_unit_hash(seed, "test", ids), all_docs, test_fraction, floor)
    valid = _pick(_unit_hash(seed, "valid", ids), ~test, valid_fraction / (1 - test_fraction), floor)
    split = np.full(n, "train", dtype=object)
    split[valid] = "valid"
    split[test] = "test"
    if not (split == "train").any():  # large fractions on a tiny set: give one document back
        split[np.flatnonzero(valid)[-1] if valid.sum() > test.sum() else np.flatnonzero(test)[-1]] = "train"
    return split


def _validate(sets: dict[str, list[Doc]], cfg: CorpusConfig) -> None:
    if GENERIC not in sets:
        raise SpeclmError("the corpus needs a generic set")
    if len(sets) < 2:
        raise SpeclmError("the corpus needs at least one domain besides the generic set")
    limit = cfg.max_doc_mb * 1e6
    for name, docs in sets.items():
        what = "generic set" if name == GENERIC else f"domain {name!r}"
        if name != GENERIC:
            check_domain_name(name)
        if not docs:
            raise SpeclmError(f"{what} is empty: it has no documents")
        seen: set[str] = set()
        for d in docs:
            if d.id in seen:
                raise SpeclmError(f"{what}: duplicate document id {d.id!r}; ids must be unique within a set")
            seen.add(d.id)
            if len(d.text) > limit or (4 * len(d.text) > limit and len(d.text.encode("utf-8")) > limit):
                raise SpeclmError(
                    f"{what}: document {d.id!r} is larger than corpus.max_doc_mb = {cfg.max_doc_mb:g} MB; "
                    "split it, or raise the limit with --set corpus.max_doc_mb=N"
                )


def _stats(nbytes: Iterable[int]) -> dict:
    nbytes = list(nbytes)
    total = int(sum(nbytes))
    return {"docs": len(nbytes), "mb": round(total / 1e6, 4), "est_tokens": int(round(total / BYTES_PER_TOKEN_ESTIMATE))}


def summarize(sets: dict[str, list[Doc]], splits: dict[str, np.ndarray], source: str) -> dict:
    out: dict = {"source": source, "bytes_per_token_estimate": BYTES_PER_TOKEN_ESTIMATE, "sets": {}, "sources": {}}
    all_bytes: list[int] = []
    for name, docs in sets.items():
        nbytes = np.array([len(d.text.encode("utf-8")) for d in docs], dtype=np.int64)
        all_bytes.extend(nbytes.tolist())
        per_split = {s: _stats(nbytes[splits[name] == s]) for s in SPLITS}
        per_split["total"] = _stats(nbytes)
        out["sets"][name] = per_split
        by_source: dict[str, list[int]] = {}
        for d, b in zip(docs, nbytes.tolist()):
            by_source.setdefault(d.source, []).append(b)
        out["sources"][name] = {s: _stats(b) for s, b in sorted(by_source.items())}
    out["total"] = _stats(all_bytes)
    return out


def write_corpus(
    corpus_dir: str | Path, sets: dict[str, list[Doc]], cfg: CorpusConfig, source: str = "", skipped: list[str] | None = None
) -> dict:
    """Validate, split and write every set, replacing ``corpus_dir`` whole (atomically).

    ``sets`` maps "generic" and each domain name to its documents; ``skipped`` lists the
    sources that could not be got (recorded in the summary). Returns the summary (also
    written as ``summary.json``). The caller writes the manifest afterwards.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _validate(sets, cfg)
    splits = {
        name: assign_splits([d.id for d in docs], cfg.seed, cfg.valid_fraction, cfg.test_fraction, cfg.min_eval_docs)
        for name, docs in sets.items()
    }
    summary = summarize(sets, splits, source or cfg.source)
    summary["skipped"] = list(skipped or [])
    atomic.remove_stale_temps(corpus_dir)  # what a killed build left behind
    with atomic.atomic_dir(corpus_dir) as tmp:
        for name, docs in sets.items():
            table = pa.table(
                {
                    "id": pa.array([d.id for d in docs], pa.string()),
                    "text": pa.array([d.text for d in docs], pa.large_string()),
                    "source": pa.array([d.source for d in docs], pa.string()),
                    "domain": pa.array([name] * len(docs), pa.string()),
                    "split": pa.array(splits[name].tolist(), pa.string()),
                }
            )
            pq.write_table(table, set_file(tmp, name), compression="zstd")
        atomic.write_json(Path(tmp) / SUMMARY, summary)
    return summary


# ---- readers -------------------------------------------------------------------------


def _require_corpus(corpus_dir: str | Path) -> Path:
    corpus_dir = Path(corpus_dir)
    if not set_file(corpus_dir, GENERIC).exists():
        raise SpeclmError(
            f"no corpus in {corpus_dir}: run `speclm corpus tiny`, `speclm corpus build-default` or `speclm corpus import` first"
        )
    return corpus_dir


def list_domains(corpus_dir: str | Path) -> list[str]:
    """The domain names of a corpus, sorted."""
    corpus_dir = _require_corpus(corpus_dir)
    return sorted(p.name[len("domain-") : -len(".parquet")] for p in corpus_dir.glob("domain-*.parquet"))


def list_sets(corpus_dir: str | Path) -> list[str]:
    return [GENERIC] + list_domains(corpus_dir)


def read_table(corpus_dir: str | Path, set_name: str, columns: list[str] | None = None):
    """The pyarrow Table of one set."""
    import pyarrow.parquet as pq

    path = set_file(_require_corpus(corpus_dir), set_name)
    if not path.exists():
        raise SpeclmError(f"no set {set_name!r} in {corpus_dir}; sets: {', '.join(list_sets(corpus_dir))}")
    return read_parquet(path, columns)


def read_parquet(path: Path, columns: list[str] | None = None):
    """A corpus Parquet file as a pyarrow Table; a damaged one is one line naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:  # truncated, overwritten, a column missing
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SpeclmError(f"{path} is damaged ({why}); rebuild the corpus with `speclm corpus build --force` "
                          "(an import: rerun `speclm corpus import ... --force`)") from None


def read_docs(corpus_dir: str | Path, set_name: str, split: str | None = None) -> list[Doc]:
    table = read_table(corpus_dir, set_name, ["id", "text", "source", "split"]).to_pydict()
    return [
        Doc(id=i, text=t, source=s)
        for i, t, s, sp in zip(table["id"], table["text"], table["source"], table["split"])
        if split is None or sp == split
    ]


def read_texts(corpus_dir: str | Path, set_name: str, split: str) -> list[str]:
    """The texts of one set and split, in file order."""
    import pyarrow.compute as pc

    if split not in SPLITS:
        raise SpeclmError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    table = read_table(corpus_dir, set_name, ["text", "split"])
    return table.filter(pc.equal(table["split"], split))["text"].to_pylist()


def read_summary(corpus_dir: str | Path) -> dict:
    import json

    from ..core.atomic import read_json_file

    path = _require_corpus(corpus_dir) / SUMMARY
    summary = read_json_file(path, "rebuild the corpus with `speclm corpus build --force` (an import: rerun "
                                   "`speclm corpus import ... --force`)")
    if not isinstance(summary.get("sets"), dict):
        raise SpeclmError(f"{path} is damaged (no table of sets); rebuild the corpus with `speclm corpus build --force`")
    return summary


# ---- printing ------------------------------------------------------------------------


def format_summary(summary: dict) -> str:
    rows = []
    for name, per in summary["sets"].items():
        for split in (*SPLITS, "total"):
            s = per[split]
            rows.append([name, split, s["docs"], round(s["mb"], 2), s["est_tokens"]])
    t = summary["total"]
    rows.append(["all", "total", t["docs"], round(t["mb"], 2), t["est_tokens"]])
    head = f"corpus ({summary.get('source', '?')}); tokens estimated at {summary['bytes_per_token_estimate']:g} bytes/token"
    src_rows = [
        [name, src, s["docs"], round(s["mb"], 2), s["est_tokens"]]
        for name, per in summary["sources"].items()
        for src, s in per.items()
    ]
    return "\n".join(
        [
            head,
            text_table(["set", "split", "docs", "MB", "~tokens"], rows),
            "",
            "by source",
            text_table(["set", "source", "docs", "MB", "~tokens"], src_rows),
            *summary.get("skipped", []),
        ]
    )
