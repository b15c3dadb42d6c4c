"""Shared fixtures: small real texts, user input files, and a CLI runner."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from speclm.corpus.doc import Doc

_STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_texts(n: int, start: int = 0, max_chars: int = 2000) -> list[str]:
    """``n`` real, varied texts: slices of the standard library's own sources and docs."""
    files = sorted(p for p in _STDLIB.glob("*.py"))
    texts = []
    for p in files[start:]:
        text = p.read_text(encoding="utf-8", errors="replace")[:max_chars].strip()
        if text:
            texts.append(text)
        if len(texts) == n:
            return texts
    raise RuntimeError(f"not enough stdlib files for {n} texts")


def make_docs(n: int, prefix: str = "d", start: int = 0, max_chars: int = 2000) -> list[Doc]:
    return [Doc(id=f"{prefix}:{i}", text=t, source=prefix) for i, t in enumerate(stdlib_texts(n, start, max_chars))]


@pytest.fixture
def user_files(tmp_path) -> dict[str, Path]:
    """A generic JSONL file and two domains (a .txt folder with a sub-folder, a Parquet file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "input"
    root.mkdir()
    generic = root / "generic.jsonl"
    with open(generic, "w", encoding="utf-8") as f:
        for t in stdlib_texts(60, 0, 1500):
            f.write(json.dumps({"text": t, "meta": 1}) + "\n")
    notes = root / "notes"
    (notes / "sub").mkdir(parents=True)
    for i, t in enumerate(stdlib_texts(12, 60, 1200)):
        (notes / ("sub" if i % 2 else "") / f"n{i:02d}.txt").write_text(t, encoding="utf-8")
    table = root / "code.parquet"
    pq.write_table(pa.table({"text": stdlib_texts(12, 80, 1200)}), table)
    return {"generic": generic, "notes": notes, "code": table, "root": root}


SMALL = ["--preset", "tiny", "--set", "tokens.vocab_size=300", "--set", "tokens.window=16"]

# Config overrides (``open_run(..., overrides)``) that keep real stages to seconds in tests.
# A few steps of training, with evaluation, checkpoints and logs all exercised:
# The tiny grid tests' training: 3 pretraining steps, one validation and checkpoint at the end.
FAST_GRID_TRAIN = [
    "train.max_steps=3",
    "train.warmup_steps=1",
    "train.eval_every=3",
    "train.eval_batches=1",
    "train.checkpoint_every=3",
]
FAST_TRAIN = [
    "train.max_steps=4",
    "train.warmup_steps=1",
    "train.eval_every=2",
    "train.eval_batches=2",
    "train.checkpoint_every=2",
    "train.log_every=2",
]
# Sentence-BERT is the slow part: embed a small sample with short chunks, propagate to the
# other windows; k-means for k=2 and 4 with few iterations.
FAST_CLUSTERS = [
    "clusters.ks=[2, 4]",
    "clusters.embed_sample=48",
    "clusters.embed_sample_other=4",
    "clusters.chunk_pieces=16",
    "clusters.window_embedding='first'",
    "clusters.niter=5",
]


# -- the tiny preset's data stages, built once for the whole suite -----------------------------
# The grid and method tests start from the tiny corpus, its tokens and (for the methods that
# read them) its clusters. Each module takes a copy (tiny_copy) with its own overrides; a
# stage whose config the overrides change is rebuilt in the copy, as in any run folder.
_JOBS = ("config.toml", "pretrain", "specialize", "eval", "train", "curves", "seed-*", ".*.lock")


@pytest.fixture(scope="session")
def tiny_tokens(tmp_path_factory) -> Path:
    """A run folder of the tiny preset with its corpus and tokens built (never changed: copy it)."""
    from speclm.core.run import open_run
    from speclm.corpus.stage import build_corpus
    from speclm.tokens.stage import build_tokens

    run = open_run(tmp_path_factory.mktemp("tiny-tokens") / "run", "tiny", FAST_CLUSTERS)
    build_corpus(run)
    build_tokens(run)
    return run.path


@pytest.fixture(scope="session")
def tiny_clusters(tmp_path_factory, tiny_tokens) -> Path:
    """tiny_tokens plus its clusters (FAST_CLUSTERS: k=2 and 4; never changed: copy it)."""
    from speclm.clusters.stage import build_clusters

    run = tiny_copy(tiny_tokens, tmp_path_factory.mktemp("tiny-clusters") / "run", FAST_CLUSTERS)
    build_clusters(run, progress=False)
    return run.path


def tiny_copy(base: Path, dest: Path, overrides: list[str]):
    """A new run folder ``dest`` holding ``base``'s data stages (no jobs, no config), opened
    with the tiny preset and ``overrides``; returns the Run."""
    import shutil

    from speclm.core.run import open_run

    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(*_JOBS))
    return open_run(dest, "tiny", overrides)


@pytest.fixture
def cli(capsys):
    """Run ``speclm ARGS...`` in-process; returns (exit code, stdout, stderr)."""
    from speclm.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def imported_run(tmp_path, user_files, cli):
    """A run folder with an imported corpus (generic + notes + code); returns its path."""
    run = tmp_path / "run"
    code, out, err = cli(
        "corpus", "import", "--run", run, *SMALL,
        "--generic", user_files["generic"], "--domain", f"notes={user_files['notes']}", "--domain", f"code={user_files['code']}",
    )
    assert code == 0, err
    return run


class Killed(Exception):
    pass


class KillAt:
    """A sampler that dies when asked for a given position (a killed process)."""

    def __init__(self, sampler, position):
        self.sampler, self.position, self.seq_len = sampler, position, sampler.seq_len

    def batch(self, position):
        if position >= self.position:
            raise Killed()
        return self.sampler.batch(position)
