"""Every bad input of the issue, through the CLI: exit code 2, one line on stderr, nothing written."""

import json

import pytest

from conftest import SMALL


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _assert_one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("speclm: error: ")
    for w in words:
        assert w in lines[0], lines[0]


def _import(cli, run, generic, *domains, extra=()):
    args = ["corpus", "import", "--run", run, *SMALL, *extra, "--generic", generic]
    for d in domains:
        args += ["--domain", d]
    return cli(*args)


def test_missing_path(cli, tmp_path, user_files):
    run = tmp_path / "run"
    code, _, err = _import(cli, run, user_files["generic"], f"law={tmp_path / 'nope' / 'law.jsonl'}")
    _assert_one_line_error(code, err, "path not found", "law.jsonl")
    assert not run.exists()


def test_unreadable_parquet(cli, tmp_path, user_files):
    bad = tmp_path / "broken.parquet"
    data = user_files["code"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    run = tmp_path / "run"
    code, _, err = _import(cli, run, user_files["generic"], f"code={bad}")
    _assert_one_line_error(code, err, "cannot read Parquet", "broken.parquet")
    assert not run.exists()


def test_empty_domain(cli, tmp_path, user_files):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "  \n"}) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    code, _, err = _import(cli, run, user_files["generic"], f"notes={user_files['notes']}", f"void={empty}")
    _assert_one_line_error(code, err, "domain 'void'", "no documents")
    assert not run.exists()


def test_non_utf8_bytes(cli, tmp_path, user_files):
    (user_files["notes"] / "latin1.txt").write_bytes("déjà vu".encode("latin-1"))
    run = tmp_path / "run"
    code, _, err = _import(cli, run, user_files["generic"], f"notes={user_files['notes']}")
    _assert_one_line_error(code, err, "latin1.txt", "not UTF-8", "byte offset 1")
    assert not run.exists()


def test_document_over_the_size_limit(cli, tmp_path, user_files):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        (big / f"small{i}.txt").write_text("a small document", encoding="utf-8")
    (big / "huge.txt").write_text("word " * 1000, encoding="utf-8")  # 5 kB
    run = tmp_path / "run"
    code, _, err = _import(cli, run, user_files["generic"], f"big={big}", extra=["--set", "corpus.max_doc_mb=0.004"])
    _assert_one_line_error(code, err, "huge.txt", "corpus.max_doc_mb")
    assert not run.exists()


def test_two_domains_with_the_same_name(cli, tmp_path, user_files):
    run = tmp_path / "run"
    code, _, err = _import(cli, run, user_files["generic"], f"x={user_files['notes']}", f"x={user_files['code']}")
    _assert_one_line_error(code, err, "domain 'x' is given twice")
    assert not run.exists()


def test_unsafe_domain_name(cli, tmp_path, user_files):
    run = tmp_path / "run"
    code, _, err = _import(cli, run, user_files["generic"], f"../x={user_files['notes']}")
    _assert_one_line_error(code, err, "not a safe identifier")
    assert not run.exists()


def test_vocabulary_too_small(cli, imported_run):
    before = _files(imported_run)
    config = (imported_run / "config.toml").read_text()
    code, _, err = cli("tokens", "--run", imported_run, "--set", "tokens.vocab_size=200")
    _assert_one_line_error(code, err, "tokens.vocab_size = 200", "at least 257")
    assert _files(imported_run) == before
    assert (imported_run / "config.toml").read_text() == config


def test_window_longer_than_the_data(cli, imported_run):
    before = _files(imported_run)
    code, _, err = cli("tokens", "--run", imported_run, "--set", "tokens.window=4096")
    _assert_one_line_error(code, err, "window length 4096", "lower tokens.window")
    assert _files(imported_run) == before  # no tokens folder, no temporary folder


@pytest.mark.parametrize("args, words", [(["--set", "tokens.vocab_sise=3"], "unknown key"), (["--preset", "nope"], "unknown preset")])
def test_bad_config_on_the_command_line(cli, tmp_path, args, words):
    code, _, err = cli("tokens", "--run", tmp_path / "run", *args)
    _assert_one_line_error(code, err, words)
    assert not (tmp_path / "run").exists()
