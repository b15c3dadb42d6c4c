"""The contamination check (`speclm corpus overlap`): a domain test document leaked into
the generic train split is found and its generic copies dropped; a clean corpus reports
nothing; a bad threshold is one line, exit 2, nothing written."""

import json

import pyarrow.parquet as pq
import pytest

from conftest import make_docs
from speclm.core import manifest
from speclm.core.config import load
from speclm.corpus.doc import Doc
from speclm.corpus.overlap_stage import apply_overlap, overlap_dir
from speclm.corpus.store import read_summary, read_table, set_file, write_corpus
from speclm.core.run import Run


def _write(run_dir, sets, cfg):
    corpus_dir = run_dir / "corpus"
    summary = write_corpus(corpus_dir, sets, cfg)
    outputs = ["summary.json"] + [set_file(corpus_dir, n).name for n in sets]
    manifest.write(corpus_dir, "corpus", {"test": 1}, {"source": "test"}, outputs, summary["total"])
    return corpus_dir


def _split_of(corpus_dir, set_name):
    t = read_table(corpus_dir, set_name, ["id", "split"]).to_pydict()
    return dict(zip(t["id"], t["split"]))


def _edit(text: str) -> str:
    """Change two words in the middle: a near-duplicate, not a copy."""
    ws = text.split(" ")
    for i in (len(ws) // 3, 2 * len(ws) // 3):
        ws[i] = "CHANGED"
    return " ".join(ws)


@pytest.fixture
def corpus(tmp_path):
    """A generic set and a domain; returns (run dir, config, generic docs, domain docs)."""
    cfg = load("tiny").corpus
    generic = make_docs(60, "g", start=0, max_chars=1500)
    notes = make_docs(14, "n", start=70, max_chars=1500)
    return tmp_path / "run", cfg, generic, notes


def _run(run_dir, *overrides):
    return Run(path=run_dir, config=load("tiny", list(overrides)))


def test_clean_corpus_reports_zero(corpus):
    run_dir, cfg, generic, notes = corpus
    corpus_dir = _write(run_dir, {"generic": generic, "notes": notes}, cfg)
    before = manifest.hash_file(set_file(corpus_dir, "generic"))
    report = apply_overlap(_run(run_dir))
    assert all(r["docs_affected"] == 0 and r["docs"] > 0 for r in report["splits"])
    assert report["drop_ids"] == [] and report["dropped"]["docs"] == 0
    assert manifest.hash_file(set_file(corpus_dir, "generic")) == before
    assert json.loads((corpus_dir / "overlap.json").read_text())["splits"] == report["splits"]


def test_leak_is_found_dropped_and_restored(corpus, cli):
    run_dir, cfg, generic, notes = corpus
    corpus_dir = _write(run_dir, {"generic": generic, "notes": notes}, cfg)
    test_doc = next(d for d in notes if _split_of(corpus_dir, "notes")[d.id] == "test")
    filler = generic[0].text
    leaks = [
        Doc(id=f"leak:{i}", text=t, source="g")
        for i, t in enumerate([_edit(test_doc.text), filler + "\n" + test_doc.text + "\n" + filler])
    ]
    with_leaks = generic[:20] + leaks + generic[20:]
    corpus_dir = _write(run_dir, {"generic": with_leaks, "notes": notes}, cfg)
    assert {_split_of(corpus_dir, "generic")[d.id] for d in leaks} == {"train"}, "pick other leak ids"
    original = pq.read_table(set_file(corpus_dir, "generic"))

    code, out, err = cli("corpus", "overlap", "--run", run_dir, "--preset", "tiny")
    assert code == 0, err
    assert "notes" in out and "dropped: 2" in out
    report = json.loads((corpus_dir / "overlap.json").read_text())
    test_row = next(r for r in report["splits"] if r["domain"] == "notes" and r["split"] == "test")
    assert test_row["docs_affected"] == 1 and test_row["generic_docs"] == 2
    assert test_row["words_affected"] > 100 and test_row["generic_sources"] == {"g": 2}
    hit = report["affected"]["notes/test"][0]
    assert hit["id"] == test_doc.id and hit["generic"] == ["leak:0", "leak:1"] and hit["containment"] > 0.8
    assert report["drop_ids"] == ["leak:0", "leak:1"]
    ids = read_table(corpus_dir, "generic", ["id"])["id"].to_pylist()
    assert len(ids) == len(with_leaks) - 2 and not any(i.startswith("leak:") for i in ids)
    assert read_summary(corpus_dir)["sets"]["generic"]["total"]["docs"] == len(with_leaks) - 2

    # a rerun is a no-op; a run killed before its manifest is finished by the next one
    m = (overlap_dir(_run(run_dir)) / "manifest.json").read_text()
    assert apply_overlap(_run(run_dir))["drop_ids"] == report["drop_ids"]
    assert (overlap_dir(_run(run_dir)) / "manifest.json").read_text() == m
    (overlap_dir(_run(run_dir)) / "manifest.json").unlink()
    assert apply_overlap(_run(run_dir))["drop_ids"] == report["drop_ids"]

    # drop_overlap = false puts the original generic set back, rows in their order
    kept = apply_overlap(_run(run_dir, "corpus.drop_overlap=false"))
    assert kept["drop_ids"] == report["drop_ids"] and not kept["dropped"]["applied"]
    assert pq.read_table(set_file(corpus_dir, "generic")).equals(original)
    assert read_summary(corpus_dir)["sets"]["generic"]["total"]["docs"] == len(with_leaks)


@pytest.mark.parametrize("threshold", ["0", "1.5"])
def test_threshold_outside_0_1_is_refused(corpus, cli, threshold):
    run_dir, cfg, generic, notes = corpus
    _write(run_dir, {"generic": generic, "notes": notes}, cfg)
    before = sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    code, _, err = cli("corpus", "overlap", "--run", run_dir, "--set", f"corpus.overlap_threshold={threshold}")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speclm: error: ") and "overlap_threshold" in lines[0]
    assert sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*")) == before
