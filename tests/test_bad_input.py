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
