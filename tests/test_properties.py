"""Issue 21: property-based tests (hypothesis) of what reads user input: the ``--set`` parser
and the readers of the user's own files (JSONL, Parquet, .txt) and of the grid's results
rows. Whatever the input, the answer is a value or a one-line SpeclmError, never another
exception; and what the parser accepts is what the config holds."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speclm.core.config import Config, EXPLICIT, load, read_toml, resolve, to_dict, to_toml
from speclm.core.errors import SpeclmError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line(e: SpeclmError) -> None:
    assert str(e).strip() and "\n" not in str(e).strip()


@FAST
@given(st.text(max_size=60))
def test_any_set_item_is_a_config_or_one_line(item):
    try:
        cfg = load("tiny", [item])
    except SpeclmError as e:
        _one_line(e)
    else:
        assert isinstance(cfg, Config)


KEYS = {"tokens.vocab_size": st.integers(-5, 70000), "train.max_steps": st.integers(-3, 10**6),
        "train.lr": st.floats(allow_nan=True, allow_infinity=True), "clusters.ks": st.lists(st.integers(-2, 50), max_size=4),
        "methods.sizes": st.lists(st.sampled_from(["4k", "16k", "all", "1M", ""]), max_size=3),
        "corpus.valid_fraction": st.floats(-1, 2), "model.small": st.sampled_from(["tiny", "cpu-small", "x y", ""])}


def _toml_value(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    return json.dumps(v)


@FAST
@given(st.sampled_from(sorted(KEYS)).flatmap(lambda k: st.tuples(st.just(k), KEYS[k])))
def test_an_accepted_set_is_what_the_config_holds_and_survives_config_toml(kv):
    key, value = kv
    try:
        cfg, explicit = resolve("tiny", [f"{key}={_toml_value(value)}"], None)
    except SpeclmError as e:
        _one_line(e)
        return
    section, name = key.split(".")
    got = getattr(getattr(cfg, section), name)
    assert got == value or (isinstance(value, int) and got == float(value))
    assert explicit[section][name] == got
    with tempfile.TemporaryDirectory() as d:  # config.toml keeps the value and the record
        p = Path(d) / "config.toml"
        p.write_text(to_toml(cfg, explicit), encoding="utf-8")
        back = read_toml(p)
        assert back[EXPLICIT] == explicit
        assert to_dict(load(None, None, back)) == to_dict(cfg)
        again, _ = resolve("demo", None, back)  # another preset keeps the explicit value
        assert getattr(getattr(again, section), name) == got


@FAST
@given(st.lists(st.sampled_from(["tokens.window=32", "tokens.window=64", "seed=3", "train.lr=0.01"]), max_size=5))
def test_the_last_set_of_a_key_wins(items):
    cfg, explicit = resolve("tiny", items, None)
    windows = [int(i.split("=")[1]) for i in items if i.startswith("tokens.window")]
    assert cfg.tokens.window == (windows[-1] if windows else load("tiny").tokens.window)
    assert explicit.get("tokens", {}).get("window") == (windows[-1] if windows else None)


LINES = st.one_of(
    st.text(max_size=40),
    st.builds(lambda t: json.dumps({"text": t}), st.text(max_size=40)),
    st.builds(json.dumps, st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=3),
                                    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))),
)


def _read(path: Path):
    from speclm.corpus.readers import read_docs

    try:
        docs = list(read_docs(str(path)))
    except SpeclmError as e:
        _one_line(e)
        return None
    assert all(isinstance(d.text, str) and d.text for d in docs)
    return docs


@FAST
@given(st.lists(LINES, max_size=8))
def test_jsonl_reader(tmp_path, lines):
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    docs = _read(p)
    array = "\n".join(lines).lstrip("\ufeff \t\r\n").startswith("[")  # the whole file read as one JSON array
    if docs is not None and not array:  # every line was blank or a JSON object with a text field
        texts = [json.loads(ln)["text"] for ln in lines if ln.strip()]
        assert [d.text for d in docs] == [t for t in texts if t.strip()]


@FAST
@given(st.binary(max_size=200))
def test_txt_and_jsonl_readers_on_any_bytes(tmp_path, data):
    for name in ("doc.txt", "doc.jsonl", "doc.parquet"):
        p = tmp_path / name
        p.write_bytes(data)
        _read(p)


@FAST
@given(st.lists(st.one_of(st.none(), st.text(max_size=30)), max_size=6), st.sampled_from(["text", "body"]))
def test_parquet_reader(tmp_path, texts, column):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({column: pa.array(texts, type=pa.string())}), p)
    docs = _read(p)
    if column != "text":
        assert docs is None
    elif docs is not None:
        assert [d.text for d in docs] == [t for t in texts if t is not None and t.strip()]


ROWS = st.dictionaries(st.sampled_from(["method", "domain", "size", "seed", "nll", "config"]),
                       st.one_of(st.text(max_size=6), st.integers(-2, 3), st.floats(), st.lists(st.integers(), max_size=2),
                                 st.none()), max_size=6)


@FAST
@given(st.lists(ROWS, max_size=6))
def test_results_rows_reader(tmp_path, rows):
    from speclm.report.results import seed_rows

    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps({**r, "config": "h"}) + "\n" for r in rows), encoding="utf-8")
    warnings: list[str] = []
    try:
        got = seed_rows(p, "h", warn=warnings.append)
    except SpeclmError as e:
        _one_line(e)
        assert "line" in str(e)
        return
    for r in got.values():  # what is kept is a well-formed row with a finite NLL
        assert isinstance(r["nll"], (int, float)) and math.isfinite(r["nll"])
    assert all("line" in w for w in warnings)


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_a_preset_gives_one_config_whatever_the_folder_held(preset):
    """The property behind the own-data recipe: resolving a preset over any earlier saved
    config (without explicit values) gives the preset's config."""
    fresh, _ = resolve(preset, None, None)
    for other in ("tiny", "demo", "paper", "cpu-full"):
        saved = to_dict(load(other))
        saved[EXPLICIT] = {}
        cfg, _ = resolve(preset, None, saved)
        assert to_dict(cfg) == to_dict(fresh)
