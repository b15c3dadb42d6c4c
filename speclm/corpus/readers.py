"""Read a user's own documents: JSONL, a JSON array, CSV, Parquet (each also gzipped:
``.jsonl.gz``, ``.csv.gz`` ...), a folder of .txt files (and of such data files, e.g. a
Hugging Face dataset repository's ``data/`` folder), a Hugging Face ``datasets`` dataset
saved to disk, or (with internet) a hub dataset name.

Every reader yields :class:`speclm.corpus.doc.Doc`. A document's ``id`` is its place in
the input (``file.jsonl:12``, ``notes/a.txt``, ``train:3``), so it stays the same when the
user appends documents, and the stable split of the store does not move it. Bad input
raises :class:`speclm.errors.SpeclmError` naming the file (and the byte offset for
non-UTF-8 text); empty documents are skipped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import socket
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from ..core.errors import SpeclmError
from .doc import Doc

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv")
TEXT_SUFFIXES = (".txt",)
DATA_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES
ACCEPTED = ".jsonl, .json, .csv, .tsv, .parquet (each also .gz), .txt, a folder of them or a saved dataset"


def kind(path: Path) -> str:
    """A file's type suffix, ``.gz`` looked through: ``a.jsonl.gz`` -> ``.jsonl``."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        return suffixes[-2] if len(suffixes) > 1 else ""
    return suffixes[-1] if suffixes else ""


def _open(path: Path):
    """The file's bytes as a binary stream; a ``.gz`` file decompressed on the fly."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_bytes(path: Path) -> bytes:
    try:
        with _open(path) as f:
            return f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise SpeclmError(f"{path}: cannot read it ({e}); is it a complete file?") from None
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_size(text: str, max_doc_mb: float, where: str) -> None:
    limit = max_doc_mb * 1e6
    # len(text) <= UTF-8 bytes <= 4 * len(text): encode only when it could matter.
    if len(text) > limit or (4 * len(text) > limit and len(text.encode("utf-8")) > limit):
        mb = len(text.encode("utf-8")) / 1e6
        raise SpeclmError(
            f"{where}: document of {mb:.2f} MB is larger than corpus.max_doc_mb = {max_doc_mb:g} MB; "
            "split it, or raise the limit with --set corpus.max_doc_mb=N"
        )


def _decode(data: bytes, path: Path, base_offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpeclmError(
            f"{path}: not UTF-8 text: invalid byte 0x{data[e.start]:02x} at byte offset {base_offset + e.start}; "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _doc(doc_id: str, text, source: str, where: str, text_field: str, max_doc_mb: float) -> Doc | None:
    if not isinstance(text, str):
        raise SpeclmError(
            f"{where}: field {text_field!r} is {type(text).__name__}, not a string; name the text field with --text-field"
        )
    if not text.strip():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate (JSON "\ud800"): no UTF-8 text can hold it
        raise SpeclmError(
            f"{where}: field {text_field!r} holds a lone surrogate (U+{ord(text[e.start]):04X}) at character "
            f"{e.start}, which is not text; fix or drop that document"
        ) from None
    _check_size(text, max_doc_mb, where)
    return Doc(id=doc_id, text=text, source=source)


def _json_array(path: Path, text_field: str, max_doc_mb: float) -> Iterator[Doc]:
    """A ``.json`` file holding one array: of objects (the text in ``text_field``) or of strings."""
    try:
        rows = json.loads(_decode(_read_bytes(path), path))
    except json.JSONDecodeError as e:
        raise SpeclmError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); expected an array of objects "
                          "or one JSON object per line") from None
    except RecursionError:
        raise SpeclmError(f"{path}: JSON nested too deeply to read") from None
    if not isinstance(rows, list):
        raise SpeclmError(f"{path}: expected a JSON array of objects (or one JSON object per line), got {type(rows).__name__}")
    for i, row in enumerate(rows):
        where = f"{path} item {i}"
        if isinstance(row, dict):
            if text_field not in row:
                fields = ", ".join(sorted(map(str, row))) or "none"
                raise SpeclmError(f"{where}: no field {text_field!r} (fields: {fields}); name the text field with --text-field")
            text = row[text_field]
        elif isinstance(row, str):
            text = row
        else:
            raise SpeclmError(f"{where}: expected an object or a string, got {type(row).__name__}")
        doc = _doc(f"{path.name}:{i}", text, path.name, where, text_field, max_doc_mb)
        if doc is not None:
            yield doc


def _starts_array(path: Path) -> bool:
    try:
        with _open(path) as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except (OSError, EOFError) as e:
        raise SpeclmError(f"{path}: cannot read it ({e}); is it a complete file?") from None
    return head.startswith(b"[")


def read_jsonl(path: Path, text_field: str = "text", max_doc_mb: float = 100.0) -> Iterator[Doc]:
    """One JSON object per line (``.jsonl``, ``.json``, ``.ndjson``, each also ``.gz``), or
    for a file whose text starts with ``[``, one JSON array; the document is ``text_field``.
    A line's string field ``source``, when it has one, names where the document came from
    (speclm's own corpus files keep their sources, and so their licences, through an
    import); else the file's name does."""
    if _starts_array(path):
        yield from _json_array(path, text_field, max_doc_mb)
        return
    offset = 0
    with _open(path) as f:
        for lineno, raw in enumerate(f, start=1):
            line = _decode(raw, path, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SpeclmError(f"{path} line {lineno}: not valid JSON ({e.msg}); expected one JSON object per line") from None
            except RecursionError:
                raise SpeclmError(f"{path} line {lineno}: JSON nested too deeply to read; expected one flat JSON object per line") from None
            if not isinstance(row, dict):
                raise SpeclmError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
            if text_field not in row:
                fields = ", ".join(sorted(map(str, row))) or "none"
                raise SpeclmError(
                    f"{path} line {lineno}: no field {text_field!r} (fields: {fields}); name the text field with --text-field"
                )
            source = row.get("source") if isinstance(row.get("source"), str) and row.get("source") else path.name
            doc = _doc(f"{path.name}:{lineno}", row[text_field], source, f"{path} line {lineno}", text_field, max_doc_mb)
            if doc is not None:
                yield doc


def read_parquet(path: Path, text_field: str = "text", max_doc_mb: float = 100.0) -> Iterator[Doc]:
    """A Parquet file; the document is the ``text_field`` column, read batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(_read_bytes(path)) if path.name.lower().endswith(".gz") else path)
    except (pa.ArrowException, OSError) as e:
        raise SpeclmError(f"{path}: cannot read Parquet file ({e}); is it a complete .parquet file?") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise SpeclmError(f"{path}: no column {text_field!r} (columns: {', '.join(names)}); name the text column with --text-field")
    row = 0
    try:
        for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
            column = batch.column(0)
            binary = pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
            for value in column.to_pylist():
                if binary and value is not None:
                    value = _decode(value, path)
                if value is not None:
                    doc = _doc(f"{path.name}:{row}", value, path.name, f"{path} row {row}", text_field, max_doc_mb)
                    if doc is not None:
                        yield doc
                row += 1
    except pa.ArrowException as e:
        raise SpeclmError(f"{path}: cannot read Parquet file ({e}); is it a complete .parquet file?") from None


def read_csv(path: Path, text_field: str = "text", max_doc_mb: float = 100.0) -> Iterator[Doc]:
    """A CSV file (``.tsv``: tab-separated) with a header row; the document is the ``text_field`` column."""
    text = _decode(_read_bytes(path), path)
    csv.field_size_limit(max(csv.field_size_limit(), int(max_doc_mb * 4e6) + 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if kind(path) == ".tsv" else ",")
    try:
        header = next(reader, None)
        if header is None:
            return
        if text_field not in header:
            raise SpeclmError(f"{path}: no column {text_field!r} in its header (columns: {', '.join(header)}); "
                              "name the text column with --text-field")
        col = header.index(text_field)
        for row in reader:
            if not row:
                continue
            where = f"{path} line {reader.line_num}"
            if col >= len(row):
                raise SpeclmError(f"{where}: {len(row)} fields, but the header names {len(header)}")
            doc = _doc(f"{path.name}:{reader.line_num}", row[col], path.name, where, text_field, max_doc_mb)
            if doc is not None:
                yield doc
    except csv.Error as e:
        raise SpeclmError(f"{path} line {reader.line_num}: not valid CSV ({e})") from None


def read_data_file(path: Path, text_field: str = "text", max_doc_mb: float = 100.0) -> Iterator[Doc]:
    """One file of documents, by its type (``.gz`` looked through)."""
    k = kind(path)
    if k in JSONL_SUFFIXES:
        return read_jsonl(path, text_field, max_doc_mb)
    if k in PARQUET_SUFFIXES:
        return read_parquet(path, text_field, max_doc_mb)
    if k in CSV_SUFFIXES:
        return read_csv(path, text_field, max_doc_mb)
    if k in TEXT_SUFFIXES:
        return (d for d in [read_text_file(path, path, max_doc_mb)] if d is not None)
    raise SpeclmError(f"{path}: unknown file type {k or '(none)'}; use {ACCEPTED}")


def read_text_file(path: Path, root: Path, max_doc_mb: float = 100.0) -> Doc | None:
    data = _read_bytes(path)
    rel = path.relative_to(root).as_posix() if path != root else path.name
    if len(data) > max_doc_mb * 1e6:
        _check_size(data.decode("utf-8", errors="replace"), max_doc_mb, str(path))
    return _doc(rel, _decode(data, path), root.name, str(path), "text", max_doc_mb)


def read_txt_folder(root: Path, max_doc_mb: float = 100.0, text_field: str = "text") -> Iterator[Doc]:
    """Every ``*.txt`` (or ``*.txt.gz``) file under ``root`` (recursive, sorted) is one
    document; every data file there (JSONL, JSON, CSV, Parquet, each also gzipped: a dataset
    repository's ``data/`` folder) gives its documents, ids prefixed with its path."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts)
                   and kind(p) in TEXT_SUFFIXES + DATA_SUFFIXES)
    if not files:
        raise SpeclmError(f"{root}: folder holds no .txt files nor data files ({ACCEPTED}), "
                          "and is not a saved Hugging Face dataset")
    for p in files:
        if kind(p) in TEXT_SUFFIXES:
            doc = read_text_file(p, root, max_doc_mb)
            if doc is not None:
                yield doc
            continue
        rel = p.relative_to(root).as_posix()
        for doc in read_data_file(p, text_field, max_doc_mb):
            yield Doc(id=rel + doc.id[len(p.name):], text=doc.text, source=doc.source)


def is_saved_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _rows(ds, text_field: str, where: str, prefix: str, source: str, max_doc_mb: float) -> Iterator[Doc]:
    if text_field not in ds.column_names:
        raise SpeclmError(
            f"{where}: no column {text_field!r} (columns: {', '.join(ds.column_names)}); name the text column with --text-field"
        )
    column = (t for batch in ds.select_columns([text_field]).iter(batch_size=1000) for t in batch[text_field])
    for i, text in enumerate(column):
        if text is None:
            continue
        doc = _doc(f"{prefix}{i}", text, source, f"{where} row {i}", text_field, max_doc_mb)
        if doc is not None:
            yield doc


def _hf_docs(obj, text_field: str, where: str, split: str | None, source: str, max_doc_mb: float) -> Iterator[Doc]:
    """A Dataset, or a DatasetDict: one split if ``split`` is named, else every split."""
    if hasattr(obj, "column_names") and not isinstance(obj.column_names, dict):
        yield from _rows(obj, text_field, where, "", source, max_doc_mb)
        return
    names = list(obj.keys())
    if split is not None:
        if split not in obj:
            raise SpeclmError(f"{where}: no split {split!r} (splits: {', '.join(names)})")
        names = [split]
    for name in names:
        yield from _rows(obj[name], text_field, f"{where} split {name}", f"{name}:", source, max_doc_mb)


def read_saved_hf(path: Path, text_field: str = "text", split: str | None = None, max_doc_mb: float = 100.0) -> Iterator[Doc]:
    """A dataset saved with ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    try:
        import datasets
    except ImportError:
        raise SpeclmError(f"{path} is a saved Hugging Face dataset: install the `datasets` package (pip install speclm[hf])") from None
    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises many types for a damaged folder
        raise SpeclmError(f"{path}: cannot load the saved Hugging Face dataset ({type(e).__name__}: {e})") from None
    yield from _hf_docs(obj, text_field, str(path), split, path.name, max_doc_mb)


def read_hub(name: str, text_field: str = "text", split: str | None = None, max_doc_mb: float = 100.0) -> Iterator[Doc]:
    """A dataset from the Hugging Face hub (needs internet; never used by the defaults)."""
    try:
        import datasets
    except ImportError:
        raise SpeclmError(f"{name!r} is not a file or folder, and the `datasets` package is not installed to try the hub") from None
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    try:
        if not offline:  # fail at once without network instead of after a minute of retries
            socket.getaddrinfo(host, 443)
    except OSError:
        raise SpeclmError(
            f"{name!r} is not a file or folder here, and the Hugging Face hub ({host}) cannot be reached "
            "(no network); give a path to JSONL, Parquet, a .txt folder or a saved dataset"
        ) from None
    datasets.logging.set_verbosity_error()
    try:
        obj = datasets.load_dataset(name, split=split)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SpeclmError(
            f"{name!r} is not a file or folder here, and loading it from the Hugging Face hub failed "
            f"({type(e).__name__}: {first[:200]}); give a path to JSONL, Parquet, a .txt folder or a saved dataset"
        ) from None
    yield from _hf_docs(obj, text_field, f"hub dataset {name}", None, name, max_doc_mb)


def looks_like_hub_name(spec: str) -> bool:
    p = Path(spec)
    return bool(_HUB_NAME.match(spec)) and not spec.startswith(".") and kind(p) not in DATA_SUFFIXES + TEXT_SUFFIXES


def read_docs(spec: str | Path, text_field: str = "text", split: str | None = None, max_doc_mb: float = 100.0) -> Iterator[Doc]:
    """Documents from a path (JSONL, Parquet, .txt file or folder, saved HF dataset) or,
    when nothing on disk matches and ``spec`` looks like one, a hub dataset name."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if is_saved_hf_dataset(path):
            return read_saved_hf(path, text_field, split, max_doc_mb)
        return read_txt_folder(path, max_doc_mb, text_field)
    if path.is_file():
        return read_data_file(path, text_field, max_doc_mb)
    if path.exists():  # a device, a pipe, a socket: never read as documents
        raise SpeclmError(f"{path} is not a regular file or folder (a device or a pipe); give a path to JSONL, "
                          "Parquet, a .txt file or folder, or a saved dataset")
    if looks_like_hub_name(str(spec)):
        return read_hub(str(spec), text_field, split, max_doc_mb)
    raise SpeclmError(f"path not found: {spec}")


def read_all(spec: str | Path, what: str, **kwargs) -> list[Doc]:
    """Every document of ``spec`` as a list; an input without documents is an error."""
    docs = list(read_docs(spec, **kwargs))
    if not docs:
        raise SpeclmError(f"{what} ({spec}) holds no documents: every text is empty")
    return docs
