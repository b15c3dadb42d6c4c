"""Contamination check: which domain valid/test documents also appear, near-verbatim, in
the generic train split (docs/corpus.md, "Overlap").

Method: exact word n-gram containment. A text's words are its lowercased ``\\w+`` runs
(the "words" counted in the report as well); its shingles are the hashes of every run of
``n = corpus.overlap_ngram`` consecutive words (a text shorter than n words has one
shingle: all its words). A domain document d overlaps a generic train document g when
``|S(d) & S(g)| / |S(d)| >= corpus.overlap_threshold``: that share of d's n-grams occurs in
g. Containment rather than Jaccard, so a domain document pasted into a longer generic
one is found. Counts are exact (64-bit hashes; a collision is astronomically unlikely);
why this rather than MinHash LSH: docs/LOG.md, "Overlap".

The domain side (valid and test splits only) is small and indexed in memory; the generic
train split is streamed in chunks, each shingle looked up with numpy (no Python loop
over n-grams).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..core.table import text_table
from .store import GENERIC, list_domains, read_table

EVAL_SPLITS = ("valid", "test")
CHUNK_WORDS = 2_000_000  # generic words hashed per numpy pass
_WORD = re.compile(r"\w+")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial's base
_UNKNOWN = 0  # a generic word that no domain document has: no shingle with it can match


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: word ids -> well-spread 64-bit values."""
    x = x.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _short_hash(ids: np.ndarray) -> np.uint64:
    """The one shingle of a text shorter than n words (tagged by its length)."""
    h = np.uint64(len(ids)) * np.uint64(0xD6E8FEB86659FD93)
    for v in _mix(ids):
        h = h * _MULT + v
    return h


def shingles(doc_ids: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, doc index) of every n-gram of every document in ``doc_ids`` (arrays of word
    ids); n-grams holding an unknown word (id 0) are left out."""
    with np.errstate(over="ignore"):
        lengths = np.array([len(a) for a in doc_ids], dtype=np.int64)
        flat = np.concatenate(doc_ids) if doc_ids else np.zeros(0, np.int64)
        doc_of = np.repeat(np.arange(len(doc_ids)), lengths)
        out_h, out_d = [], []
        m = len(flat) - n + 1
        if m > 0:
            mixed = _mix(flat)
            h = np.zeros(m, dtype=np.uint64)
            for k in range(n):
                h = h * _MULT + mixed[k : k + m]
            zeros = np.concatenate([[0], np.cumsum(flat == _UNKNOWN)])
            ok = (doc_of[:m] == doc_of[n - 1 :]) & (zeros[n:] == zeros[:m])
            out_h.append(h[ok])
            out_d.append(doc_of[:m][ok])
        for i in np.flatnonzero((lengths > 0) & (lengths < n)):
            if not (doc_ids[i] == _UNKNOWN).any():
                out_h.append(np.array([_short_hash(doc_ids[i])], dtype=np.uint64))
                out_d.append(np.array([i]))
    if not out_h:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return np.concatenate(out_h), np.concatenate(out_d).astype(np.int64)


def _unique_pairs(h: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash, doc) pairs without repeats (a shingle counts once per document)."""
    order = np.lexsort((h, d))
    h, d = h[order], d[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    return h[keep], d[keep]


class EvalIndex:
    """The shingles of the domain documents being checked, sorted for lookup."""

    def __init__(self, texts: list[str], n: int):
        self.n = n
        self.vocab: dict[str, int] = {}
        ids = [self._ids(t, grow=True) for t in texts]
        self.words = np.array([len(a) for a in ids], dtype=np.int64)
        h, d = _unique_pairs(*shingles(ids, n))
        order = np.argsort(h, kind="stable")
        self.hash, self.doc = h[order], d[order]
        self.uniq = np.unique(self.hash)
        self.size = np.bincount(self.doc, minlength=len(texts))  # shingles per document
        self.seen = np.zeros(len(self.uniq), dtype=bool)  # occurs anywhere in generic train

    def _ids(self, text: str, grow: bool) -> np.ndarray:
        ws = words(text)
        if grow:
            vocab = self.vocab
            return np.array([vocab.setdefault(w, len(vocab) + 1) for w in ws], dtype=np.int64)
        get = self.vocab.get
        return np.array([get(w, _UNKNOWN) for w in ws], dtype=np.int64)

    def match(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a chunk of generic texts: (generic index, eval index, shared shingles) of
        every pair that shares at least one shingle."""
        h, g = shingles([self._ids(t, grow=False) for t in texts], self.n)
        if not len(self.uniq) or not len(h):
            return (np.zeros(0, np.int64),) * 3
        pos = np.minimum(np.searchsorted(self.uniq, h), len(self.uniq) - 1)
        hit = self.uniq[pos] == h
        self.seen[pos[hit]] = True
        h, g = _unique_pairs(h[hit], g[hit])
        lo, hi = np.searchsorted(self.hash, h, "left"), np.searchsorted(self.hash, h, "right")
        reps = hi - lo
        starts = np.repeat(lo - np.cumsum(reps) + reps, reps) + np.arange(reps.sum())
        e = self.doc[starts]
        key = np.repeat(g, reps) * len(self.size) + e
        key, count = np.unique(key, return_counts=True)
        return key // len(self.size), key % len(self.size), count

    def seen_per_doc(self) -> np.ndarray:
        """Per document: how many of its shingles occur anywhere in the generic train split."""
        pos = np.searchsorted(self.uniq, self.hash)
        return np.bincount(self.doc, weights=self.seen[pos].astype(np.float64), minlength=len(self.size))


def scan(index: EvalIndex, generic: list[str], threshold: float) -> tuple[np.ndarray, dict[int, set[int]]]:
    """Stream the generic texts past the index: (best containment of each indexed document,
    {indexed document: generic indexes where its containment >= threshold})."""
    best = np.zeros(len(index.size))
    hits: dict[int, set[int]] = {}
    start = 0
    while start < len(generic):
        stop, budget = start, 0
        while stop < len(generic) and (stop == start or budget < CHUNK_WORDS):
            budget += generic[stop].count(" ") + 1
            stop += 1
        g, e, count = index.match(generic[start:stop])
        score = count / np.maximum(index.size[e], 1)
        np.maximum.at(best, e, score)
        over = score >= threshold
        for gi, ei in zip((g[over] + start).tolist(), e[over].tolist()):
            hits.setdefault(ei, set()).add(gi)
        start = stop
    return best, hits


def _split_rows(corpus_dir: Path, set_name: str, splits: tuple[str, ...]) -> dict[str, dict[str, list]]:
    table = read_table(corpus_dir, set_name, ["id", "text", "source", "split"]).to_pydict()
    out = {s: {"id": [], "text": [], "source": []} for s in splits}
    for i, t, src, s in zip(table["id"], table["text"], table["source"], table["split"]):
        if s in out:
            out[s]["id"].append(i)
            out[s]["text"].append(t)
            out[s]["source"].append(src)
    return out


def find_overlap(corpus_dir: str | Path, cfg) -> dict:
    """The overlap report of a corpus (``cfg``: the run's CorpusConfig).

    ``splits``: one row per (domain, split): documents, words, documents affected (their
    containment in one generic train document >= the threshold), their words, how many
    generic documents they overlap (``generic_sources``: how many per generic source), and
    ``ngrams_seen`` (the share of the split's n-grams
    found anywhere in the generic train split). ``affected``: per "domain/split", each
    affected document's id, best containment and the ids of the generic documents it
    overlaps. ``drop_ids``: every overlapping generic train document id, sorted.
    """
    corpus_dir = Path(corpus_dir)
    n, thr = cfg.overlap_ngram, cfg.overlap_threshold
    parts = []  # (domain, split, ids, texts)
    for domain in list_domains(corpus_dir):
        rows = _split_rows(corpus_dir, domain, EVAL_SPLITS)
        parts += [(domain, s, rows[s]["id"], rows[s]["text"]) for s in EVAL_SPLITS]
    index = EvalIndex([t for *_, texts in parts for t in texts], n)
    generic = _split_rows(corpus_dir, GENERIC, ("train",))["train"]
    best, hits = scan(index, generic["text"], thr)
    seen = index.seen_per_doc()

    rows, affected, drop = [], {}, set()
    offset = 0
    for domain, split, ids, texts in parts:
        sl = slice(offset, offset + len(texts))
        offset += len(texts)
        local = [i for i in range(sl.start, sl.stop) if i in hits]
        gens = set().union(*(hits[i] for i in local)) if local else set()
        drop |= gens
        size = int(index.size[sl].sum())
        rows.append(
            {
                "domain": domain,
                "split": split,
                "docs": len(texts),
                "words": int(index.words[sl].sum()),
                "docs_affected": len(local),
                "words_affected": int(sum(index.words[i] for i in local)),
                "generic_docs": len(gens),
                "generic_sources": dict(sorted(Counter(generic["source"][j] for j in gens).items())),
                "ngrams_seen": round(float(seen[sl].sum()) / size, 4) if size else 0.0,
                "max_containment": round(float(best[sl].max()), 4) if len(texts) else 0.0,
            }
        )
        affected[f"{domain}/{split}"] = [
            {
                "id": ids[i - sl.start],
                "containment": round(float(best[i]), 4),
                "generic": sorted(generic["id"][j] for j in hits[i]),
            }
            for i in local
        ]
    drop_ids = sorted(generic["id"][j] for j in drop)
    return {
        "method": "exact word n-gram containment",
        "ngram": n,
        "threshold": thr,
        "words": "lowercased \\w+ runs",
        "generic_train_docs": len(generic["text"]),
        "splits": rows,
        "affected": affected,
        "drop_ids": drop_ids,
    }


def format_report(report: dict) -> str:
    """The per-domain, per-split table of a report (and what was dropped, if anything)."""
    rows = [
        [r["domain"], r["split"], r["docs"], r["docs_affected"], r["words"], r["words_affected"], r["generic_docs"],
         round(100 * r["ngrams_seen"], 2)]
        for r in report["splits"]
    ]
    head = (
        f"overlap with the generic train split: documents whose word {report['ngram']}-grams are at least "
        f"{report['threshold']:g} contained in one generic train document (words = lowercased \\w+ runs)"
    )
    table = text_table(
        ["domain", "split", "docs", "docs hit", "words", "words hit", "generic docs", f"% {report['ngram']}-grams seen"], rows
    )
    dropped = report.get("dropped")
    tail = []
    if dropped is not None:
        verb = "dropped" if dropped["applied"] else "would drop (corpus.drop_overlap = false)"
        tail = [f"generic train documents {verb}: {dropped['docs']:,} ({dropped['words']:,} words)"]
    return "\n".join([head, table, *tail])
