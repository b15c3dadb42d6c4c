"""Whitespace normalisation, dedup and deterministic size-capped sampling of documents."""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

from speclm.corpus.doc import Doc

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_TRAILING = re.compile(r" *\n *")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_text(text: str, keep_indent: bool = False) -> str:
    """Collapse runs of spaces/tabs, strip each line's ends and the whole text, and keep
    at most two consecutive newlines (one blank line).

    With ``keep_indent`` (source code) lines keep their leading whitespace and inner
    spacing; only trailing spaces, blank-line runs and blank edges are cleaned."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if keep_indent:
        text = "\n".join(line.rstrip() for line in text.split("\n"))
        return _BLANK_RUNS.sub("\n\n", text).strip("\n")
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def dedup_docs(docs: Iterable[Doc]) -> list[Doc]:
    """Drop empty documents and exact duplicates (same text, or same id): the first wins."""
    out: list[Doc] = []
    seen_text: set[bytes] = set()
    seen_id: set[str] = set()
    for doc in docs:
        if not doc.text.strip() or doc.id in seen_id:
            continue
        digest = hashlib.blake2b(doc.text.encode("utf-8"), digest_size=16).digest()
        if digest in seen_text:
            continue
        seen_text.add(digest)
        seen_id.add(doc.id)
        out.append(doc)
    return out


def clean_docs(docs: Iterable[Doc], keep_indent: bool = False) -> list[Doc]:
    """Normalise every document's whitespace (see :func:`normalize_text`), then drop empty
    documents and exact duplicates."""
    return dedup_docs(Doc(d.id, normalize_text(d.text, keep_indent), d.source) for d in docs)


def stable_hash(key: str) -> int:
    """A hash of a string that is the same on every machine and every run."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def sample_docs(docs: list[Doc], max_mb: float) -> list[Doc]:
    """Keep a deterministic sample of at most ``max_mb`` MB of text (0 = keep all).

    Documents are visited in the order of a stable hash of their id and kept while they
    fit, so the sample depends only on the ids and the cap; the kept documents stay in
    their original order."""
    if max_mb <= 0:
        return list(docs)
    budget = int(max_mb * 1_000_000)
    keep: set[int] = set()
    used = 0
    for i in sorted(range(len(docs)), key=lambda i: (stable_hash(docs[i].id), docs[i].id)):
        size = len(docs[i].text.encode("utf-8"))
        if used + size <= budget:
            keep.add(i)
            used += size
    return [d for i, d in enumerate(docs) if i in keep]


def text_mb(docs: Iterable[Doc]) -> float:
    """Total UTF-8 size of the documents' text in MB (10^6 bytes)."""
    return sum(len(d.text.encode("utf-8")) for d in docs) / 1_000_000
