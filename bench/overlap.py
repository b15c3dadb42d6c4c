"""Overlap detection: exact word n-gram containment (speclm.corpus.overlap) against
MinHash LSH (datasketch), for speed and recall on constructed near-duplicates.

    PYTHONPATH=. python bench/overlap.py --corpus runs/demo/corpus --generic-mb 50

Leaks: domain valid/test documents copied into a generic set of about --generic-mb MB
(the corpus's generic train split, topped up with synthetic Zipf text built from its
vocabulary), each in one of several ways: verbatim, with p% of its words replaced, or
pasted into a generic document 1x or 3x its length. Recall = share of the leaks whose
own generic document is found; other pairs = (domain document, generic document) pairs
found that are not a planted leak (on real text they include real overlaps).
datasketch is needed only here (pip install datasketch).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from speclm.corpus.overlap import EvalIndex, scan, words
from speclm.corpus.store import list_domains, read_texts

LONG = 50  # words: shorter domain documents (dictionary entries) are reported apart
VARIANTS = ("copy", "edit2", "edit5", "edit10", "inside1x", "inside3x")


def _edit(text: str, p: float, vocab: list[str], rng: random.Random) -> str:
    return " ".join(rng.choice(vocab) if rng.random() < p else w for w in text.split())


def build(corpus_dir: str, generic_mb: float, n_leaks: int, seed: int):
    rng = random.Random(seed)
    evals = [t for d in list_domains(corpus_dir) for s in ("valid", "test") for t in read_texts(corpus_dir, d, s)]
    generic = read_texts(corpus_dir, "generic", "train")
    vocab = sorted({w for t in generic[:2000] for w in t.split()})
    size = sum(len(t) for t in generic)
    if size < generic_mb * 1e6:  # top up with Zipf-distributed words (documents of ~800 words)
        nprng = np.random.default_rng(seed)
        ranks = np.minimum(nprng.zipf(1.2, size=int((generic_mb * 1e6 - size) / 6)), len(vocab)) - 1
        ws = np.array(vocab, dtype=object)[ranks]
        generic += [" ".join(ws[i : i + 800]) for i in range(0, len(ws), 800)]
    base = list(generic)
    leaks = []  # (eval index, variant, generic index)
    longs = [i for i, t in enumerate(evals) if len(words(t)) >= LONG]
    shorts = [i for i, t in enumerate(evals) if len(words(t)) < LONG]
    picks = rng.sample(longs, min(len(longs), n_leaks // 2))
    picks += rng.sample(shorts, min(len(shorts), n_leaks - len(picks)))
    for e in picks:
        variant = VARIANTS[len(leaks) % len(VARIANTS)]
        text = evals[e]
        if variant.startswith("edit"):
            text = _edit(text, int(variant[4:]) / 100, vocab, rng)
        elif variant.startswith("inside"):
            filler = rng.choice(base).split()
            k = int(variant[6]) * len(text.split())
            filler = (filler * (k // max(1, len(filler)) + 1))[:k]
            cut = rng.randrange(len(filler) + 1)
            text = " ".join(filler[:cut]) + " " + text + " " + " ".join(filler[cut:])
        leaks.append((e, variant, len(generic)))
        generic.append(text)
    return evals, generic, leaks


def exact(evals, generic, n, thr):
    t0 = time.perf_counter()
    index = EvalIndex(evals, n)
    _, hits = scan(index, generic, thr)
    return {(e, g) for e, gs in hits.items() for g in gs}, time.perf_counter() - t0


def minhash(evals, generic, n, thr, num_perm=128):
    from datasketch import MinHash, MinHashLSH

    def sketches(texts):
        out = []
        for t in texts:
            ws = words(t)
            sh = {" ".join(ws[i : i + n]).encode() for i in range(max(1, len(ws) - n + 1))}
            m = MinHash(num_perm=num_perm)
            m.update_batch(list(sh))
            out.append(m)
        return out

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=thr, num_perm=num_perm)
    gen = sketches(generic)
    for i, m in enumerate(gen):
        lsh.insert(i, m)
    pairs = set()
    for e, m in enumerate(sketches(evals)):
        for g in lsh.query(m):
            if m.jaccard(gen[g]) >= thr:
                pairs.add((e, g))
    return pairs, time.perf_counter() - t0


def by_source(corpus_dir: str, n: int) -> None:
    """Per domain and generic source: % of the domain's valid/test n-grams that occur in
    that source's train documents, and how many of its documents are >= 0.5 contained in
    one of them (the corpus's known risks: web_bible/kjv, spdx/legal, gcide/wordnet,
    python_doc/python_code)."""
    from speclm.corpus.store import read_table

    g = read_table(corpus_dir, "generic", ["text", "source", "split"]).to_pydict()
    sources = sorted(set(g["source"]))
    for domain in list_domains(corpus_dir):
        evals = read_texts(corpus_dir, domain, "valid") + read_texts(corpus_dir, domain, "test")
        cells = []
        for src in sources:
            index = EvalIndex(evals, n)
            texts = [t for t, s, sp in zip(g["text"], g["source"], g["split"]) if s == src and sp == "train"]
            _, hits = scan(index, texts, 0.5)
            seen = index.seen_per_doc().sum() / max(1, index.size.sum())
            if seen >= 0.001 or hits:
                cells.append(f"{src} {100 * seen:.2f}% ({len(hits)} docs)")
        print(f"{domain} ({len(evals)} valid+test docs), {n}-grams seen in: " + "; ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--generic-mb", type=float, default=0)
    ap.add_argument("--leaks", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="exact13,exact8,minhash5")
    ap.add_argument("--by-source", type=int, default=0, help="only print the per-source overlap for this n")
    args = ap.parse_args()
    if args.by_source:
        return by_source(args.corpus, args.by_source)
    evals, generic, leaks = build(args.corpus, args.generic_mb, args.leaks, args.seed)
    mb = sum(len(t.encode()) for t in generic) / 1e6
    print(f"{len(evals)} domain docs, {len(generic)} generic docs ({mb:.1f} MB), {len(leaks)} leaks")
    planted = {(e, g) for e, _, g in leaks}
    for method in args.methods.split(","):
        kind, n = method.rstrip("0123456789"), int(method[len(method.rstrip("0123456789")) :])
        pairs, secs = (exact if kind == "exact" else minhash)(evals, generic, n, 0.5)
        print(f"{method:9s} {secs:7.1f} s  other pairs: {len(pairs - planted)}")
        for name, ok in (("long", lambda k: k >= LONG), ("short", lambda k: k < LONG)):
            found = {v: [(e, g) in pairs for e, vv, g in leaks if vv == v and ok(len(words(evals[e])))] for v in VARIANTS}
            rec = " ".join(f"{v} {100 * np.mean(f):.0f}%" for v, f in found.items() if f)
            print(f"    recall, {name} documents ({sum(map(len, found.values()))} leaks): {rec}")


if __name__ == "__main__":
    main()
