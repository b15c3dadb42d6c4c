"""The corpus stage: get the documents (tiny, default or imported), split and store them.

``build_corpus(run)`` dispatches on ``run.config.corpus.source``:
- ``tiny``: the small corpus that ships inside the package;
- ``default``: built from registry packages (``speclm.corpus.default.collect_default``);
- ``import``: the user's own files, given once with ``speclm corpus import``. The
  manifest remembers their paths and content hashes, so later runs reuse the corpus, and
  re-read the files when they or the corpus config changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core import manifest
from ..core.errors import SpeclmError
from ..core.run import Run
from .default import TINY_DIR
from .doc import Doc
from .store import GENERIC, SUMMARY, check_domain_name, read_summary, write_corpus

STAGE = "corpus"
SOURCES = ("tiny", "default", "import")


@dataclasses.dataclass
class ImportSpec:
    """What `speclm corpus import` was given; saved in the manifest's config."""

    generic: str
    domains: dict[str, str]
    text_field: str = "text"
    hf_split: str | None = None

    def resolved(self) -> "ImportSpec":
        """The same spec with every existing path made absolute (a later run may start elsewhere)."""

        def fix(p: str) -> str:
            path = Path(p).expanduser()
            return str(path.resolve()) if path.exists() else p

        return dataclasses.replace(self, generic=fix(self.generic), domains={k: fix(v) for k, v in self.domains.items()})

    def paths(self) -> dict[str, str]:
        return {GENERIC: self.generic, **{f"domain:{k}": v for k, v in self.domains.items()}}


def _stage_config(run: Run, spec: ImportSpec | None = None) -> dict:
    cfg = dataclasses.asdict(run.config.corpus)
    cfg.pop("cache_dir", None)  # where packages are cached does not change the corpus
    for key in ("drop_overlap", "overlap_threshold", "overlap_ngram"):  # the overlap stage's own settings
        cfg.pop(key, None)
    if spec is not None:
        cfg["import"] = dataclasses.asdict(spec)
    return cfg


def _input_hashes(spec: ImportSpec, recorded: dict[str, str] | None = None) -> dict[str, str]:
    """Content hash of each imported path. A path that is gone keeps its recorded hash,
    so an unchanged corpus stays usable; a rebuild would then fail with a clear error."""
    out = {}
    for key, p in spec.paths().items():
        path = Path(p).expanduser()
        if path.exists():
            out[key] = manifest.hash_tree(path)
        elif recorded and key in recorded:
            out[key] = recorded[key]
        else:
            out[key] = f"name:{p}"  # a hub dataset name
    return out


def _saved_summary(corpus_dir: Path) -> dict:
    return read_summary(corpus_dir)


def _collect(run: Run) -> tuple[dict[str, list[Doc]], list[str]]:
    """({set name: documents}, ["skipped <source>: <why>", ...])."""
    source = run.config.corpus.source
    if source == "tiny":
        from .default import tiny_corpus

        return tiny_corpus(), []
    if source == "default":
        from .default import collect_default

        return collect_default(run.config.corpus)
    raise SpeclmError(f"corpus.source {source!r} is not one of {', '.join(SOURCES)}")


def read_import(spec: ImportSpec, max_doc_mb: float) -> dict[str, list[Doc]]:
    """Read the generic set and every domain of an import spec."""
    from .readers import read_all

    kw = dict(text_field=spec.text_field, split=spec.hf_split, max_doc_mb=max_doc_mb)
    sets = {GENERIC: read_all(spec.generic, "the generic set", **kw)}
    for name, path in spec.domains.items():
        check_domain_name(name)
        sets[name] = read_all(path, f"domain {name!r}", **kw)
    for name, docs in sets.items():
        warn_suspicious(name, docs)
    warn_same_as_generic(sets)
    return sets


def warn_same_as_generic(sets: dict[str, list[Doc]]) -> None:
    """Warn when a domain holds the generic set's documents (the same file given twice?):
    specializing on it measures nothing the generic model does not already see."""
    import sys

    generic = {d.text for d in sets.get(GENERIC, [])}
    for name, docs in sets.items():
        if name == GENERIC or not docs:
            continue
        same = sum(1 for d in docs if d.text in generic)
        if same == len(docs):
            print(f"speclm: warning: domain {name!r} holds only documents of the generic set (the same file "
                  "twice?); its specialization would measure nothing", file=sys.stderr)


def warn_suspicious(name: str, docs: list[Doc]) -> None:
    """Warn (not fail: the data is the user's call) on a set that is mostly duplicates, or
    holds documents of nothing but NUL characters (a binary file read as text?)."""
    import sys

    nul = sum(1 for d in docs if not d.text.replace("\x00", "").strip())
    if nul:
        print(f"speclm: warning: {name}: {nul} of {len(docs)} documents are only NUL characters "
              "(a binary file read as text?)", file=sys.stderr)
    distinct = len({d.text for d in docs})
    if len(docs) >= 4 and distinct * 2 < len(docs):
        print(f"speclm: warning: {name}: only {distinct} of {len(docs)} documents are distinct; "
              "the corpus is mostly duplicates", file=sys.stderr)


def import_corpus(run: Run, spec: ImportSpec, force: bool = False) -> dict:
    """Hold the stage folder's lock (another process building it waits) around :func:`_import_corpus`."""
    from ..core.locks import hold_stage

    with hold_stage(run.corpus_dir, f"corpus of {run.path}"):
        return _import_corpus(run, spec, force)


def _import_corpus(run: Run, spec: ImportSpec, force: bool = False) -> dict:
    """`speclm corpus import`: read the user's files and write the corpus."""
    if run.config.corpus.source != "import":
        raise SpeclmError("import_corpus needs corpus.source = 'import' in the run config")
    if not spec.domains:
        raise SpeclmError("give at least one domain: --domain NAME=PATH")
    for name in spec.domains:
        check_domain_name(name)
    spec = spec.resolved()
    cfg = _stage_config(run, spec)
    inputs = _input_hashes(spec)
    if not force and manifest.is_fresh(run.corpus_dir, STAGE, cfg, inputs):
        return _saved_summary(run.corpus_dir)
    sets = read_import(spec, run.config.corpus.max_doc_mb)
    summary = write_corpus(run.corpus_dir, sets, run.config.corpus, source="import")
    manifest.write(run.corpus_dir, STAGE, cfg, inputs, [SUMMARY, *_outputs(sets)], summary["total"])
    return summary


def _outputs(sets: dict) -> list[str]:
    return ["generic.parquet" if n == GENERIC else f"domain-{n}.parquet" for n in sets]


def _refuse_over_import(run: Run, source: str, force: bool) -> None:
    """The user's imported corpus is never replaced by another source without ``--force``
    (its inputs are the user's files, which speclm cannot rebuild on its own)."""
    m = manifest.read(run.corpus_dir) if (run.corpus_dir / manifest.MANIFEST).is_file() else None
    saved = ((m or {}).get("config") or {}).get("import") if isinstance(m, dict) else None
    if not saved:
        return
    if not force:
        raise SpeclmError(
            f"{run.corpus_dir} holds your imported corpus (generic {saved.get('generic')!r}, domains "
            f"{', '.join(sorted(saved.get('domains', {})))}); building the {source!r} corpus would delete it. "
            f"Keep corpus.source='import', or pass --force to delete {run.corpus_dir} and build the {source!r} corpus"
        )


def build_corpus(run: Run, force: bool = False) -> dict:
    """Hold the stage folder's lock (another process building it waits) around :func:`_build_corpus`."""
    from ..core.locks import hold_stage

    with hold_stage(run.corpus_dir, f"corpus of {run.path}"):
        return _build_corpus(run, force)


def _build_corpus(run: Run, force: bool = False) -> dict:
    """Build (or reuse) the corpus of ``run``; returns its summary."""
    corpus_dir = run.corpus_dir
    source = run.config.corpus.source
    if source == "import":
        m = manifest.read(corpus_dir)
        saved = (m or {}).get("config", {}).get("import")
        if not saved:
            raise SpeclmError(
                f"corpus.source is 'import' but nothing was imported into {run.path}: run "
                f"`speclm corpus import --run {run.path} --generic PATH --domain NAME=PATH` first"
            )
        spec = ImportSpec(**saved)
        cfg = _stage_config(run, spec)
        inputs = _input_hashes(spec, m.get("inputs"))
        if not force and manifest.is_fresh(corpus_dir, STAGE, cfg, inputs):
            return _saved_summary(corpus_dir)
        return import_corpus(run, spec, force=True)
    if source not in SOURCES:
        raise SpeclmError(f"corpus.source {source!r} is not one of {', '.join(SOURCES)}")
    _refuse_over_import(run, source, force)
    cfg = _stage_config(run)
    inputs = {"source": source}
    if source == "tiny" and TINY_DIR.exists():  # the shipped files: an upgrade rebuilds the corpus
        inputs["data"] = manifest.hash_tree(TINY_DIR)
    if not force and manifest.is_fresh(corpus_dir, STAGE, cfg, inputs):
        return _saved_summary(corpus_dir)
    sets, skipped = _collect(run)
    summary = write_corpus(corpus_dir, sets, run.config.corpus, source=source, skipped=skipped)
    manifest.write(corpus_dir, STAGE, cfg, inputs, [SUMMARY, *_outputs(sets)], summary["total"])
    return summary
