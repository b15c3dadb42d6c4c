"""Every bad input of the issue, through the CLI: exit code 2, one line on stderr, nothing written."""

import json

import pytest

from conftest import SMALL


def _files(folder):
    """Every file under ``folder``, but the stage locks' anchor files (``.NAME.lock``: empty,
    no data; an OS lock needs a file that outlives each holder)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(".lock"))


def _assert_one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("speclm: error: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def import_is_refused(cli, tmp_path, user_files):
    """Check that ``speclm corpus import`` of the generic file and ``domains`` fails with one
    line naming ``words``, and writes no run folder."""

    def check(*domains: str, words: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
        run = tmp_path / "run"
        args = ["corpus", "import", "--run", run, *SMALL, *extra, "--generic", user_files["generic"]]
        for d in domains:
            args += ["--domain", d]
        code, _, err = cli(*args)
        _assert_one_line_error(code, err, *words)
        assert not run.exists()

    return check


def test_missing_path(import_is_refused, tmp_path):
    import_is_refused(f"law={tmp_path / 'nope' / 'law.jsonl'}", words=("path not found", "law.jsonl"))


def test_unreadable_parquet(import_is_refused, tmp_path, user_files):
    bad = tmp_path / "broken.parquet"
    data = user_files["code"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    import_is_refused(f"code={bad}", words=("cannot read Parquet", "broken.parquet"))


def test_empty_domain(import_is_refused, tmp_path, user_files):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "  \n"}) + "\n", encoding="utf-8")
    import_is_refused(f"notes={user_files['notes']}", f"void={empty}", words=("domain 'void'", "no documents"))


def test_non_utf8_bytes(import_is_refused, user_files):
    (user_files["notes"] / "latin1.txt").write_bytes("déjà vu".encode("latin-1"))
    import_is_refused(f"notes={user_files['notes']}", words=("latin1.txt", "not UTF-8", "byte offset 1"))


def test_document_over_the_size_limit(import_is_refused, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        (big / f"small{i}.txt").write_text("a small document", encoding="utf-8")
    (big / "huge.txt").write_text("word " * 1000, encoding="utf-8")  # 5 kB
    import_is_refused(f"big={big}", words=("huge.txt", "corpus.max_doc_mb"), extra=("--set", "corpus.max_doc_mb=0.004"))


def test_two_domains_with_the_same_name(import_is_refused, user_files):
    import_is_refused(f"x={user_files['notes']}", f"x={user_files['code']}", words=("domain 'x' is given twice",))


def test_unsafe_domain_name(import_is_refused, user_files):
    import_is_refused(f"../x={user_files['notes']}", words=("not a safe identifier",))


def test_vocabulary_too_small(cli, imported_run):
    before = _files(imported_run)
    config = (imported_run / "config.toml").read_text()
    code, _, err = cli("tokens", "--run", imported_run, "--set", "tokens.vocab_size=200")
    _assert_one_line_error(code, err, "tokens.vocab_size = 200", "at least 257")
    assert _files(imported_run) == before
    assert (imported_run / "config.toml").read_text() == config


def test_window_longer_than_the_data(cli, imported_run):
    assert cli("corpus", "overlap", "--run", imported_run)[0] == 0  # the upstream stage, complete on its own
    before = _files(imported_run)
    code, _, err = cli("tokens", "--run", imported_run, "--set", "tokens.window=4096")
    _assert_one_line_error(code, err, "window length 4096", "lower tokens.window")
    assert _files(imported_run) == before  # no tokens folder, no temporary folder


@pytest.mark.parametrize("args, words", [(["--set", "tokens.vocab_sise=3"], "unknown key"), (["--preset", "nope"], "unknown preset")])
def test_bad_config_on_the_command_line(cli, tmp_path, args, words):
    code, _, err = cli("tokens", "--run", tmp_path / "run", *args)
    _assert_one_line_error(code, err, words)
    assert not (tmp_path / "run").exists()


# -- issue 13, items 9 and 10: damaged files and faults, one line each ---------------------


def test_lone_surrogate_in_jsonl(import_is_refused, tmp_path):
    bad = tmp_path / "sur.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "half \\ud800 a pair"}\n', encoding="utf-8")
    import_is_refused(f"sur={bad}", words=("sur.jsonl line 2", "lone surrogate", "U+D800"))


def test_deeply_nested_json(import_is_refused, tmp_path):
    bad = tmp_path / "deep.jsonl"
    bad.write_text('{"text": "ok"}\n' + "[" * 100000 + "]" * 100000 + "\n", encoding="utf-8")
    import_is_refused(f"deep={bad}", words=("deep.jsonl line 2", "nested too deeply"))


def test_duplicates_and_nul_text_warn_but_import(cli, tmp_path, user_files):
    dup = tmp_path / "dup.jsonl"
    rows = [{"text": "the same words again"}] * 9 + [{"text": "\x00\x00\x00"}, {"text": "one other text"}]
    dup.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, err = cli("corpus", "import", "--run", tmp_path / "run", *SMALL, "--generic", user_files["generic"],
                       "--domain", f"dup={dup}")
    assert code == 0, err
    assert "speclm: warning: dup: 1 of 11 documents are only NUL" in err
    assert "speclm: warning: dup: only 3 of 11 documents are distinct" in err


def _checkpoint(tmp_path):
    from test_nothing_lost import _tiny_checkpoint

    return _tiny_checkpoint(tmp_path)


def _damage_model_json(ck, edit):
    meta = json.loads((ck / "model.json").read_text())
    (ck / "model.json").write_text(json.dumps(edit(meta)))


@pytest.mark.parametrize("damage, words", [
    (lambda ck: (ck / "model.json").write_text("[1, 2]"), ("model.json is not a checkpoint description",)),
    (lambda ck: (ck / "model.json").write_text('{"shape": 3}'), ("model.json is not a checkpoint description",)),
    (lambda ck: _damage_model_json(ck, lambda m: {**m, "shape": {**m["shape"], "vocab_size": 10**12}}),
     ("vocab_size 1000000000000 is absurd",)),
    (lambda ck: _damage_model_json(ck, lambda m: {**m, "shape": {"vocab_size": 300}}), ("model.json", "model shape")),
    (lambda ck: (_damage_model_json(ck, lambda m: {k: v for k, v in m.items() if k != "tokenizer_sha256"}),
                 (ck / "tokenizer.json").write_text('{"model": ')), ("tokenizer.json is not a valid tokenizer.json",)),
    (lambda ck: (ck / "model.safetensors").write_bytes((ck / "model.safetensors").read_bytes()[:5000]),
     ("model.safetensors is truncated or corrupt",)),
    (lambda ck: _damage_model_json(ck, lambda m: {**m, "shape": {**m["shape"], "d_mlp": m["shape"]["d_mlp"] * 2}}),
     ("does not fit this model", "size mismatch for", "torch.Size([")),
])
def test_damaged_checkpoint_is_one_line(tmp_path, cli, damage, words):
    ck = _checkpoint(tmp_path)
    damage(ck)
    code, _, err = cli("generate", "--checkpoint", ck, "--max-new-tokens", "2")
    _assert_one_line_error(code, err, *words)


def test_torn_line_in_the_middle_of_results(tmp_path):
    from speclm.core.atomic import read_jsonl
    from speclm.core.errors import SpeclmError
    from speclm.report.results import grid_rows

    res = tmp_path / "results.jsonl"
    row = {"method": "slm", "domain": "d", "size": "all", "config": "c"}
    res.write_text(json.dumps(row) + "\n" + '{"method": "slm", "dom\n' + json.dumps(row) + "\n" + '{"torn')
    with pytest.raises(SpeclmError, match=r"results.jsonl line 2 is not a JSON object .*delete or repair that line"):
        grid_rows(res, "c")
    res.write_text(json.dumps(row) + "\n[1]\n")
    with pytest.raises(SpeclmError, match="line 2"):
        read_jsonl(res)
    res.write_text(json.dumps(row) + "\n" + '{"torn')  # a torn LAST line is still skipped
    assert read_jsonl(res) == [row]


def test_numbered_jsonl_keeps_line_numbers_and_refuses_a_bad_middle_line(tmp_path):
    from speclm.core.atomic import read_jsonl, read_jsonl_numbered
    from speclm.core.errors import SpeclmError
    from speclm.report.curve_reading import read_curves

    f = tmp_path / "curves.jsonl"
    assert read_jsonl_numbered(f) == []  # no file: no rows
    a, b = {"a": 1}, {"b": 2}
    f.write_text("\n" + json.dumps(a) + "\n  \n\n" + json.dumps(b) + "\n" + '{"torn')
    assert read_jsonl_numbered(f) == [(2, a), (5, b)]  # blank lines keep their numbers, the torn last line goes
    assert read_jsonl(f) == [a, b]
    f.write_text(json.dumps(a) + "\n\n" + '{"b": \n' + json.dumps(b) + "\n")
    for read in (read_jsonl_numbered, read_jsonl, lambda p: read_curves(p, "c")):
        with pytest.raises(SpeclmError, match=r"curves.jsonl line 3 is not a JSON object .*delete or repair that line") as e:
            read(f)
        assert "\n" not in str(e.value)


def test_object_npy_is_refused(tmp_path):
    import numpy as np

    from speclm.core.atomic import load_npy
    from speclm.core.errors import SpeclmError

    p = tmp_path / "x.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(SpeclmError, match=r"x.npy is not a plain numeric .npy array"):
        load_npy(p)
    p.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(SpeclmError, match=r"x.npy is not a plain numeric"):
        load_npy(p)


@pytest.fixture
def tokens_run(cli, imported_run):
    code, _, err = cli("tokens", "--run", imported_run)
    assert code == 0, err
    return imported_run


def test_damaged_tokens_stage_is_one_line(cli, tokens_run):
    """Each damage of tokens/ in turn (restored after): a one-line error naming the file and
    `speclm tokens --force`, never "run `speclm tokens` first"."""
    import numpy as np

    tok = tokens_run / "tokens"
    man = tok / "manifest.json"
    good = {p: p.read_bytes() for p in (man, tok / "tokenizer.json")}
    windows = tok / "generic" / "train.windows.npy"
    good[windows] = windows.read_bytes()
    summary_less = json.dumps({**json.loads(good[man]), "summary": {}})
    damages = [
        (man, b"[1, 2, 3]", ("manifest.json is corrupt", "speclm tokens --force")),
        (man, b'{"fingerprint": "abc", "summ', ("manifest.json is corrupt", "speclm tokens --force")),
        (man, summary_less.encode(), ("manifest.json is corrupt", "speclm tokens --force")),
        (tok / "tokenizer.json", b"{\"version\": \"1.0\", \"model\"", ("tokenizer.json", "speclm tokens --force")),
        (windows, None, ("is not a plain numeric .npy array",)),
    ]
    for path, data, words in damages:
        if data is None:
            np.save(path, np.array([object()], dtype=object), allow_pickle=True)
        else:
            path.write_bytes(data)
        code, _, err = cli("train", "--run", tokens_run, "--set", "train.max_steps=1")
        _assert_one_line_error(code, err, *words)
        assert "first" not in err
        path.write_bytes(good[path])
    man.write_text("[]")  # the clusters stage names the corrupt upstream manifest too
    code, _, err = cli("clusters", "--run", tokens_run)
    _assert_one_line_error(code, err, "manifest.json is corrupt", "speclm tokens --force")


def test_a_manifest_of_the_wrong_shape_is_stale(cli, imported_run, user_files):
    (imported_run / "corpus" / "manifest.json").write_text("[]")
    code, _, err = cli("corpus", "import", "--run", imported_run, "--generic", user_files["generic"],
                       "--domain", f"notes={user_files['notes']}")
    assert code == 0, err  # rebuilt: a manifest we cannot read is never trusted
    assert isinstance(json.loads((imported_run / "corpus" / "manifest.json").read_text()), dict)
