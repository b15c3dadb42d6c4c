"""Import readers: JSONL, Parquet, .txt folders, saved Hugging Face datasets, and their errors."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import stdlib_texts
from speclm.corpus.readers import read_all, read_docs
from speclm.core.errors import SpeclmError


def _one_line(e):
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_jsonl_reads_the_text_field_and_skips_empty(tmp_path):
    texts = stdlib_texts(5)
    p = tmp_path / "a.jsonl"
    rows = [{"body": t, "n": i} for i, t in enumerate(texts)] + [{"body": "   "}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = read_all(p, "x", text_field="body")
    assert [d.text for d in docs] == texts
    assert [d.id for d in docs] == [f"a.jsonl:{i}" for i in range(1, 6)]
    assert {d.source for d in docs} == {"a.jsonl"}


def test_jsonl_missing_field_names_the_fields(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"content": "hello"}) + "\n", encoding="utf-8")
    with pytest.raises(SpeclmError) as e:
        read_all(p, "x")
    msg = _one_line(e)
    assert "line 1" in msg and "'text'" in msg and "content" in msg and "--text-field" in msg


def test_jsonl_bad_json_and_non_string_text(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(SpeclmError, match="line 2: not valid JSON"):
        read_all(p, "x")
    p.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(SpeclmError, match="is int, not a string"):
        read_all(p, "x")


def test_jsonl_non_utf8_names_file_and_byte_offset(tmp_path):
    p = tmp_path / "a.jsonl"
    first = (json.dumps({"text": "héllo"}, ensure_ascii=False) + "\n").encode()
    second = b'{"text": "caf\xe9"}\n'
    p.write_bytes(first + second)
    with pytest.raises(SpeclmError) as e:
        read_all(p, "x")
    msg = _one_line(e)
    assert str(p) in msg and "0xe9" in msg
    offset = len(first) + second.index(bytes([0xE9]))
    assert f"byte offset {offset}" in msg


def test_parquet_column_and_binary_column(tmp_path):
    texts = stdlib_texts(4)
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"content": texts, "other": list(range(4))}), p)
    assert [d.text for d in read_all(p, "x", text_field="content")] == texts
    with pytest.raises(SpeclmError, match="no column 'text'.*content"):
        read_all(p, "x")
    b = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": pa.array([t.encode() for t in texts] + [b"\xff\xfe"], pa.binary())}), b)
    with pytest.raises(SpeclmError, match="not UTF-8"):
        read_all(b, "x")


def test_corrupt_parquet_is_a_clear_error(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": stdlib_texts(20)}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SpeclmError) as e:
        read_all(bad, "x")
    assert "cannot read Parquet" in _one_line(e)


def test_txt_folder_is_recursive_and_sorted(tmp_path):
    texts = stdlib_texts(4)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for i, t in enumerate(texts):
        (tmp_path / "d" / ("sub" if i % 2 else "") / f"f{i}.txt").write_text(t, encoding="utf-8")
    (tmp_path / "d" / "skip.md").write_text("not a txt", encoding="utf-8")
    docs = read_all(tmp_path / "d", "x")
    assert [d.id for d in docs] == ["f0.txt", "f2.txt", "sub/f1.txt", "sub/f3.txt"]
    assert {d.id: d.text for d in docs}["sub/f3.txt"] == texts[3]


def test_txt_non_utf8_offset(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"abc\x80def")
    with pytest.raises(SpeclmError, match=r"a\.txt: not UTF-8 text: invalid byte 0x80 at byte offset 3"):
        read_all(tmp_path / "d", "x")


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpeclmError, match="no .txt files"):
        read_all(tmp_path / "empty", "x")
    with pytest.raises(SpeclmError, match="path not found"):
        read_all(tmp_path / "nope" / "x.jsonl", "x")
    with pytest.raises(SpeclmError, match="unknown file type .docx"):
        (tmp_path / "a.docx").write_text("text\nhi\n")
        read_all(tmp_path / "a.docx", "x")


def test_document_over_the_size_limit(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"text": "small"}) + "\n" + json.dumps({"text": "x" * 3000}) + "\n", encoding="utf-8")
    with pytest.raises(SpeclmError, match="line 2: document of 0.00 MB is larger than corpus.max_doc_mb"):
        read_all(p, "x", max_doc_mb=0.002)
    assert len(read_all(p, "x", max_doc_mb=0.01)) == 2


def test_all_empty_input_is_an_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"text": ""}) + "\n", encoding="utf-8")
    with pytest.raises(SpeclmError, match="holds no documents"):
        read_all(p, "domain 'x'")


def test_saved_hf_dataset_and_dataset_dict(tmp_path):
    import datasets

    a, b = stdlib_texts(3), stdlib_texts(2, start=3)
    datasets.Dataset.from_dict({"text": a}).save_to_disk(str(tmp_path / "ds"))
    docs = read_all(tmp_path / "ds", "x")
    assert [d.text for d in docs] == a and [d.id for d in docs] == ["0", "1", "2"]
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"body": a}), "validation": datasets.Dataset.from_dict({"body": b})}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    docs = read_all(tmp_path / "dd", "x", text_field="body")
    assert [d.text for d in docs] == a + b
    assert docs[3].id == "validation:0"
    only = read_all(tmp_path / "dd", "x", text_field="body", split="validation")
    assert [d.text for d in only] == b
    with pytest.raises(SpeclmError, match="no split 'test'.*train, validation"):
        read_all(tmp_path / "dd", "x", text_field="body", split="test")
    with pytest.raises(SpeclmError, match="no column 'text'"):
        read_all(tmp_path / "dd", "x")


def test_hub_name_offline_is_one_clear_line(tmp_path):
    # In a subprocess with the hub switched off, so this test never touches the network.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    code = (
        "from speclm.corpus.readers import read_all\n"
        "from speclm.core.errors import SpeclmError\n"
        "try:\n    read_all('someone/no-such-dataset', 'x')\n"
        "except SpeclmError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("ERR")]
    assert len(lines) == 1, out.stdout + out.stderr
    assert "someone/no-such-dataset" in lines[0] and "hub" in lines[0]


def test_read_docs_is_lazy_and_dispatches(tmp_path):
    p = tmp_path / "one.txt"
    p.write_text("a single document", encoding="utf-8")
    assert [d.text for d in read_docs(p)] == ["a single document"]


def _gz(path, data: bytes):
    import gzip

    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def test_gzipped_json_array_csv_and_parquet_give_the_same_documents(tmp_path):
    import io

    texts = stdlib_texts(4, 10, 300)
    jsonl = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    files = {
        "a.jsonl.gz": _gz(tmp_path / "a.jsonl.gz", jsonl),
        "b.json": tmp_path / "b.json",
        "c.json.gz": _gz(tmp_path / "c.json.gz", json.dumps(texts).encode()),
        "d.csv.gz": tmp_path / "d.csv.gz",
        "e.parquet.gz": tmp_path / "e.parquet.gz",
    }
    files["b.json"].write_text(json.dumps([{"text": t, "n": i} for i, t in enumerate(texts)]), encoding="utf-8")
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "text"])
    for i, t in enumerate(texts):
        w.writerow([i, t])  # texts hold newlines, commas and quotes: CSV quoting keeps them
    _gz(files["d.csv.gz"], buf.getvalue().encode())
    pbuf = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), pbuf)
    _gz(files["e.parquet.gz"], pbuf.getvalue())
    for name, path in files.items():
        docs = read_all(path, name)
        assert [d.text for d in docs] == texts, name
        assert docs[0].source == name


def test_folder_of_data_files_and_txt_gz(tmp_path):
    texts = stdlib_texts(3, 20, 200)
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:2]), encoding="utf-8")
    _gz(root / "notes.txt.gz", texts[2].encode())
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_text("not a document", encoding="utf-8")
    docs = read_all(root, "repo")
    assert sorted(d.text for d in docs) == sorted(texts)
    assert {d.id for d in docs} == {"data/train.jsonl:1", "data/train.jsonl:2", "notes.txt.gz"}


def test_bad_csv_json_and_gzip_are_one_line_errors(tmp_path):
    (tmp_path / "a.csv").write_text("title,body\nx,y\n", encoding="utf-8")
    with pytest.raises(SpeclmError) as e:
        read_all(tmp_path / "a.csv", "a")
    assert "no column 'text'" in _one_line(e) and "title, body" in str(e.value)
    (tmp_path / "b.json").write_text('[{"text": "a"}, 3]', encoding="utf-8")
    with pytest.raises(SpeclmError) as e:
        read_all(tmp_path / "b.json", "b")
    assert "item 1" in _one_line(e)
    (tmp_path / "c.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(SpeclmError) as e:
        read_all(tmp_path / "c.jsonl.gz", "c")
    assert "c.jsonl.gz" in _one_line(e)
