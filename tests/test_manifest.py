"""Manifests: a second run is a no-op; a changed config or input recomputes just what depends on it."""

import json

import pytest

from conftest import stdlib_texts
from speclm.core import manifest
from speclm.corpus.stage import ImportSpec, build_corpus, import_corpus
from speclm.core.errors import SpeclmError
from speclm.core.run import open_run
from speclm.tokens.stage import build_tokens


def _mtimes(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def spec(tmp_path):
    gen = tmp_path / "generic.jsonl"
    gen.write_text("\n".join(json.dumps({"text": t}) for t in stdlib_texts(30)) + "\n", encoding="utf-8")
    dom = tmp_path / "dom.jsonl"
    dom.write_text("\n".join(json.dumps({"text": t}) for t in stdlib_texts(8, start=40)) + "\n", encoding="utf-8")
    return ImportSpec(generic=str(gen), domains={"dom": str(dom)})


SMALL = ["corpus.source=import", "tokens.vocab_size=300", "tokens.window=16"]


def _run(tmp_path, extra=()):
    return open_run(tmp_path / "run", "tiny", SMALL + list(extra))


def test_second_run_is_a_no_op(tmp_path, spec):
    run = _run(tmp_path)
    import_corpus(run, spec)
    first_tokens = build_tokens(run)
    before = _mtimes(run.path)
    again = _run(tmp_path)
    assert build_corpus(again)["total"] == json.loads((run.corpus_dir / "summary.json").read_text())["total"]
    assert build_tokens(again) == first_tokens
    assert _mtimes(run.path) == before  # nothing was rewritten


def test_vocab_change_recomputes_tokens_not_corpus(tmp_path, spec):
    run = _run(tmp_path)
    import_corpus(run, spec)
    build_tokens(run)
    corpus_before = _mtimes(run.corpus_dir)
    tokens_fp = manifest.read(run.tokens_dir)["fingerprint"]
    run2 = _run(tmp_path, ["tokens.vocab_size=320"])
    build_corpus(run2)
    summary = build_tokens(run2)
    assert summary["vocab_size"] == 320
    assert manifest.read(run2.tokens_dir)["fingerprint"] != tokens_fp
    assert _mtimes(run.corpus_dir) == corpus_before


def test_corpus_config_change_recomputes_both(tmp_path, spec):
    run = _run(tmp_path)
    import_corpus(run, spec)
    build_tokens(run)
    corpus_fp = manifest.read(run.corpus_dir)["fingerprint"]
    tokens_fp = manifest.read(run.tokens_dir)["fingerprint"]
    run2 = _run(tmp_path, ["corpus.seed=7"])
    build_corpus(run2)
    build_tokens(run2)
    assert manifest.read(run.corpus_dir)["fingerprint"] != corpus_fp
    assert manifest.read(run.tokens_dir)["fingerprint"] != tokens_fp


def test_changed_input_file_reimports(tmp_path, spec):
    run = _run(tmp_path)
    import_corpus(run, spec)
    with open(spec.domains["dom"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "one more document about nothing"}) + "\n")
    summary = build_corpus(_run(tmp_path))
    assert summary["sets"]["dom"]["total"]["docs"] == 9


def test_import_source_without_import_says_how(tmp_path):
    with pytest.raises(SpeclmError, match="speclm corpus import --run"):
        build_corpus(_run(tmp_path))


def test_tokens_without_corpus_says_what_to_run(tmp_path):
    with pytest.raises(SpeclmError, match="speclm corpus"):
        build_tokens(_run(tmp_path))


def test_a_lost_output_makes_the_stage_stale_and_it_is_rebuilt(tmp_path, spec):
    run = _run(tmp_path)
    import_corpus(run, spec)
    build_tokens(run)
    (run.tokens_dir / "dom" / "test.windows.npy").unlink()  # e.g. a killed or damaged run
    m = manifest.read(run.tokens_dir)
    assert not manifest.is_fresh(run.tokens_dir, "tokens", m["config"], m["inputs"])
    build_tokens(run)
    assert (run.tokens_dir / "dom" / "test.windows.npy").exists()
    assert manifest.is_fresh(run.tokens_dir, "tokens", m["config"], m["inputs"])


def test_fingerprint_depends_on_config_and_inputs():
    a = manifest.fingerprint("s", {"x": 1}, {"up": "h"})
    assert a == manifest.fingerprint("s", {"x": 1}, {"up": "h"})
    assert a != manifest.fingerprint("s", {"x": 2}, {"up": "h"})
    assert a != manifest.fingerprint("s", {"x": 1}, {"up": "g"})


def test_import_records_absolute_paths(tmp_path, spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = ImportSpec(generic="generic.jsonl", domains={"dom": "dom.jsonl"})
    run = _run(tmp_path)
    import_corpus(run, rel)
    saved = manifest.read(run.corpus_dir)["config"]["import"]
    assert saved["generic"] == str(tmp_path.resolve() / "generic.jsonl")
    monkeypatch.chdir(tmp_path / "run")
    before = _mtimes(run.corpus_dir)
    build_corpus(_run(tmp_path))  # from another folder: still fresh, nothing rewritten
    assert _mtimes(run.corpus_dir) == before


def test_a_killed_build_leaves_nothing_that_survives_the_next(tmp_path, spec):
    run = _run(tmp_path)
    import_corpus(run, spec)
    # what a kill during the tokens build leaves: a half-filled temporary folder, no tokens/
    stale = tmp_path / "run" / ".tokens.killed.tmp"
    (stale / "generic").mkdir(parents=True)
    (stale / "generic" / "train.tokens.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(SpeclmError):
        from speclm.tokens.shards import TokenShards

        TokenShards(run.tokens_dir)
    build_tokens(run)
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.endswith(".lock")) == ["config.toml", "corpus", "tokens"]


def test_atomic_artifacts_get_ordinary_permissions(tmp_path):
    """Temp files are private (0600/0700) while written; the artifact under its final name
    gets the mode any new file of the process gets (0644/0755 under umask 022)."""
    import os
    import stat

    from speclm.core import atomic

    old = os.umask(0o022)
    try:
        f = tmp_path / "a.json"
        atomic.write_json(f, {"x": 1})
        with atomic.atomic_dir(tmp_path / "d") as d:
            (d / "inner.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == atomic.FILE_MODE
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == atomic.DIR_MODE


def test_method_jobs_go_through_the_manifest(tmp_path):
    from speclm.core import manifest

    job = tmp_path / "pretrain" / "slm"
    key = {"seed": 0, "train": {"lr": 1e-3}}
    assert manifest.open_job(job, key) is False  # started: a manifest that is not done
    assert not manifest.is_done(job) and manifest.job_key(job) == key
    (job / "partial.bin").write_bytes(b"x")
    assert manifest.open_job(job, key) is False and (job / "partial.bin").exists()  # same key: resumes in place
    manifest.finish_job(job, {"checkpoint": "final", "steps": 3})
    assert manifest.open_job(job, key) is True and manifest.job_summary(job)["steps"] == 3
    assert manifest.open_job(job, {**key, "seed": 1}) is False  # another key: wiped
    assert not (job / "partial.bin").exists() and not manifest.is_done(job)
    with pytest.raises(SpeclmError, match="not finished"):
        manifest.job_summary(job)


def test_a_job_folder_from_before_manifests_is_adopted(tmp_path):
    import json

    from speclm.core import manifest

    job, key = tmp_path / "job", {"seed": 0}
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"hash": manifest.hash_obj(key), "key": key}))
    (job / "done.json").write_text(json.dumps({"checkpoint": "final"}))
    assert manifest.open_job(job, key) is True  # finished work is not redone
    assert manifest.job_summary(job) == {"checkpoint": "final"}
    other = tmp_path / "other"
    other.mkdir()
    (other / "job.json").write_text(json.dumps({"hash": "0" * 64, "key": {"seed": 9}}))
    assert manifest.open_job(other, key) is False and not (other / "job.json").exists()
