"""Regenerate the tiny corpus that ships in speclm/data/tiny/ (one gzipped JSONL per set).

Uses the default corpus's own extractors on public-domain or permissively licensed
sources only (see speclm/data/LICENSES.md), and a deterministic sample of each (stable
hash of the document id, see speclm.corpus.sources.normalize.sample_docs), so running it
twice gives the same bytes. Needs the packages' downloads (cached) and, for the World
English Bible, `diatheke` (the builder installs it when run as root).

    .venv/bin/python scripts/make_tiny_corpus.py [--cache DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from speclm.corpus.default import TINY_DIR, write_docs
from speclm.corpus.doc import Doc
from speclm.corpus.sources.catalog import DOMAINS, GENERIC
from speclm.corpus.sources.normalize import clean_docs, dedup_docs, sample_docs, text_mb

# set -> [(source name, MB of text to keep, largest document kept in characters)]
PLAN = {
    "generic": [("devil", 0.15, 0), ("jargon", 0.10, 0), ("spdx", 0.05, 20_000), ("python_doc", 0.05, 20_000),
                ("web_bible", 0.05, 0)],
    "kjv": [("kjv", 0.10, 0)],
    "shakespeare": [("shakespeare", 0.10, 0)],
    "python_code": [("python_code", 0.10, 8_000)],
    "legal": [("legal", 0.10, 8_000)],
}


def build(cache_dir: str) -> dict[str, list[Doc]]:
    by_name = {s.name: s for s in GENERIC + DOMAINS}
    sets = {}
    for set_name, parts in PLAN.items():
        docs: list[Doc] = []
        for name, mb, max_chars in parts:
            got = clean_docs(by_name[name].get(cache_dir), keep_indent=by_name[name].keep_indent)
            if max_chars:
                got = [d for d in got if len(d.text) <= max_chars]
            docs += sample_docs(got, mb)
        sets[set_name] = dedup_docs(docs)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="", help="download cache (default $SPECLM_CACHE or ~/.cache/speclm)")
    parser.add_argument("--out", default=str(TINY_DIR), help="output folder")
    args = parser.parse_args()
    out = Path(args.out)
    sets = build(args.cache)
    for old in out.glob("*.jsonl.gz"):
        if old.name[: -len(".jsonl.gz")] not in sets:
            old.unlink()
    for set_name, docs in sets.items():
        path = out / f"{set_name}.jsonl.gz"
        write_docs(path, docs)
        print(f"{set_name}: {len(docs)} documents, {text_mb(docs):.3f} MB of text, {path.stat().st_size / 1e6:.3f} MB on disk")


if __name__ == "__main__":
    main()
