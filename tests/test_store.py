"""Corpus store: deterministic stable splits, Parquet layout, summary, validation."""

import json

import pyarrow.parquet as pq
import pytest

from conftest import make_docs
from speclm.corpus import store
from speclm.core.sections import CorpusConfig
from speclm.corpus.doc import Doc
from speclm.core.errors import SpeclmError


def _ids(n, prefix="doc"):
    return [f"{prefix}-{i}" for i in range(n)]


def test_same_seed_same_split_and_other_seed_differs():
    ids = _ids(500)
    a = store.assign_splits(ids, 0, 0.1, 0.1, 1)
    b = store.assign_splits(ids, 0, 0.1, 0.1, 1)
    c = store.assign_splits(ids, 1, 0.1, 0.1, 1)
    assert (a == b).all()
    assert (a != c).any()


def test_split_does_not_depend_on_order():
    ids = _ids(300)
    a = dict(zip(ids, store.assign_splits(ids, 3, 0.1, 0.1, 1)))
    rev = ids[::-1]
    b = dict(zip(rev, store.assign_splits(rev, 3, 0.1, 0.1, 1)))
    assert a == b


def test_adding_documents_moves_no_other_document():
    ids = _ids(400)
    before = dict(zip(ids, store.assign_splits(ids, 0, 0.1, 0.1, 5)))
    more = ids + _ids(200, "new")
    after = dict(zip(more, store.assign_splits(more, 0, 0.1, 0.1, 5)))
    assert all(after[i] == before[i] for i in ids)


def test_fractions_are_roughly_respected():
    split = store.assign_splits(_ids(4000), 0, 0.05, 0.1, 1)
    assert abs((split == "test").mean() - 0.1) < 0.02
    assert abs((split == "valid").mean() - 0.05) < 0.02


def test_small_sets_get_min_eval_docs_and_keep_a_train_doc():
    split = store.assign_splits(_ids(20), 0, 0.05, 0.05, 5)
    assert (split == "test").sum() >= 5 and (split == "valid").sum() >= 5
    split = store.assign_splits(_ids(3), 0, 0.05, 0.05, 50)
    assert sorted(split) == ["test", "train", "valid"]
    split = store.assign_splits(_ids(10), 0, 0.45, 0.5, 1)
    assert (split == "train").sum() >= 1


def test_fewer_than_three_documents_is_an_error():
    with pytest.raises(SpeclmError, match="at least 3 documents"):
        store.assign_splits(_ids(2), 0, 0.1, 0.1, 1)


def test_bad_fractions_are_an_error():
    with pytest.raises(SpeclmError, match="sum below 1"):
        store.assign_splits(_ids(10), 0, 0.6, 0.5, 1)


def _sets():
    return {"generic": make_docs(40, "g"), "law": make_docs(10, "l", start=40), "poems": make_docs(8, "p", start=50)}


def test_write_corpus_layout_and_readers(tmp_path):
    cfg = CorpusConfig(min_eval_docs=2)
    sets = _sets()
    summary = store.write_corpus(tmp_path / "corpus", sets, cfg, source="test")
    d = tmp_path / "corpus"
    assert store.list_domains(d) == ["law", "poems"]
    assert store.list_sets(d) == ["generic", "law", "poems"]
    table = pq.read_table(d / "domain-law.parquet")
    assert table.column_names == ["id", "text", "source", "domain", "split"]
    assert set(table["domain"].to_pylist()) == {"law"}
    assert set(pq.read_table(d / "generic.parquet")["domain"].to_pylist()) == {"generic"}
    by_id = {doc.id: doc.text for doc in sets["law"]}
    rows = table.to_pylist()
    assert {r["id"]: r["text"] for r in rows} == by_id
    for split in store.SPLITS:
        want = [r["text"] for r in rows if r["split"] == split]
        assert store.read_texts(d, "law", split) == want
        assert len(want) >= 1
    # the summary counts what was written
    saved = json.loads((d / "summary.json").read_text())
    assert saved == summary
    law = summary["sets"]["law"]
    assert sum(law[s]["docs"] for s in store.SPLITS) == law["total"]["docs"] == 10
    nbytes = sum(len(t.encode()) for t in by_id.values())
    assert abs(law["total"]["mb"] - nbytes / 1e6) < 1e-3
    assert summary["sources"]["law"]["l"]["docs"] == 10
    assert summary["total"]["docs"] == 58
    text = store.format_summary(summary)
    assert "poems" in text and "generic" in text


def test_rewrite_removes_a_dropped_domain(tmp_path):
    cfg = CorpusConfig(min_eval_docs=1)
    store.write_corpus(tmp_path / "c", _sets(), cfg)
    sets = _sets()
    del sets["poems"]
    store.write_corpus(tmp_path / "c", sets, cfg)
    assert store.list_domains(tmp_path / "c") == ["law"]
    assert not list((tmp_path).glob(".c.*"))  # no temporary folder left


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s.update(law=[]), "domain 'law' is empty"),
        (lambda s: s.update({"bad name": s.pop("law")}), "not a safe identifier"),
        (lambda s: s.update({"../up": s.pop("law")}), "not a safe identifier"),
        (lambda s: s["law"].append(Doc(id=s["law"][0].id, text="x", source="l")), "duplicate document id"),
        (lambda s: s["poems"].append(Doc(id="big", text="é" * 6000, source="p")), "larger than corpus.max_doc_mb"),
        (lambda s: s.pop("generic"), "needs a generic set"),
    ],
)
def test_invalid_sets_write_nothing(tmp_path, change, match):
    sets = _sets()
    change(sets)
    with pytest.raises(SpeclmError, match=match):
        store.write_corpus(tmp_path / "corpus", sets, CorpusConfig(max_doc_mb=0.01, min_eval_docs=1))
    assert not (tmp_path / "corpus").exists()
    assert list(tmp_path.iterdir()) == []


def test_reading_a_missing_corpus_says_what_to_run(tmp_path):
    with pytest.raises(SpeclmError, match="speclm corpus"):
        store.read_texts(tmp_path, "generic", "train")


def test_hash_is_stable_across_processes():
    # the split must not depend on Python's per-process string hash randomisation
    import subprocess
    import sys

    code = "from speclm.corpus.store import assign_splits; print(list(assign_splits([str(i) for i in range(50)], 0, .2, .2, 1)))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(outs) == 1
    assert eval(outs.pop()) == list(store.assign_splits([str(i) for i in range(50)], 0, 0.2, 0.2, 1))
