"""The corpus and tokens commands end to end, through `speclm.cli.main`."""

import tomllib

import pytest

from speclm.tokens.shards import TokenShards


def test_import_records_source_and_input_hashes(cli, imported_run, user_files):
    cfg = tomllib.loads((imported_run / "config.toml").read_text())
    assert cfg["corpus"]["source"] == "import"
    m = (imported_run / "corpus" / "manifest.json").read_text()
    from speclm.core import manifest

    inputs = manifest.read(imported_run / "corpus")["inputs"]
    assert inputs["generic"] == manifest.hash_file(user_files["generic"])
    assert inputs["domain:code"] == manifest.hash_file(user_files["code"])
    assert inputs["domain:notes"] == manifest.hash_tree(user_files["notes"])
    assert "import" in m


def test_summary_tokens_and_run(cli, imported_run):
    code, out, err = cli("corpus", "summary", "--run", imported_run)
    assert code == 0, err
    assert "notes" in out and "code" in out and "~tokens" in out
    code, out, err = cli("tokens", "--run", imported_run)
    assert code == 0, err
    assert "bytes/token" in out and "vocab 300" in out
    shards = TokenShards(imported_run / "tokens")
    assert shards.sets() == ["generic", "code", "notes"]
    assert len(shards.windows("notes", "train")) > 0
    # a second `speclm tokens` reuses the shards (`speclm run` does the same, then runs the
    # later stages, which are too slow for this test)
    mtime = (imported_run / "tokens" / "tokenizer.json").stat().st_mtime_ns
    code, out, err = cli("tokens", "--run", imported_run)
    assert code == 0, err
    assert (imported_run / "tokens" / "tokenizer.json").stat().st_mtime_ns == mtime


def test_corpus_build_follows_the_config(cli, imported_run):
    code, out, err = cli("corpus", "build", "--run", imported_run)
    assert code == 0, err
    assert "corpus (import)" in out


def test_run_with_import_source_and_nothing_imported(cli, tmp_path):
    code, _, err = cli("run", "--run", tmp_path / "r", "--preset", "tiny", "--set", "corpus.source=import")
    assert code == 2
    assert "speclm corpus import" in err and len(err.strip().splitlines()) == 1


def test_help_lists_the_commands(cli):
    code, out, _ = cli("corpus", "--help")
    assert code == 0
    for name in ("import", "tiny", "build-default", "summary"):
        assert name in out


def test_tiny_corpus_and_tokens_on_the_tiny_preset(cli, tmp_path):
    run = tmp_path / "tiny"
    code, out, err = cli("corpus", "tiny", "--run", run, "--preset", "tiny")
    assert code == 0, err
    assert "corpus (tiny)" in out
    code, out, err = cli("tokens", "--run", run)
    assert code == 0, err
    shards = TokenShards(run / "tokens")
    assert shards.sets()[0] == "generic" and len(shards.domains()) >= 1
    for s in shards.sets():
        for split in ("train", "valid", "test"):
            w = shards.windows(s, split)
            assert len(w) >= 1
            assert w.batch([0]).shape == (1, shards.window + 1)


def test_run_refuses_an_unknown_stage(cli, tmp_path):
    code, _, err = cli("run", "--run", tmp_path / "r", "--preset", "tiny", "--until", "nowhere")
    assert code == 2
    assert "unknown stage 'nowhere'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "corpus").exists()


def _all_commands():
    """Every command path of `speclm` (groups and their subcommands)."""
    import typer

    from speclm.cli import COMMANDS, _resolve

    out = []
    for name, target in COMMANDS:
        obj = _resolve(target)
        out.append([name])
        if isinstance(obj, typer.Typer):
            out += [[name, c.name or c.callback.__name__] for c in obj.registered_commands]
    return out


def test_version(cli):
    from importlib.metadata import version

    code, out, err = cli("--version")
    assert code == 0, err
    assert out.strip() == f"speclm {version('speclm')}"


def test_every_help_has_an_example_and_no_bool_metavar(cli):
    cmds = _all_commands()
    assert ["plan"] in cmds and ["corpus", "import"] in cmds
    for args in [[], *cmds]:
        code, out, err = cli(*args, "--help")
        assert code == 0, (args, err)
        assert "<bool>" not in out and "╭" not in out, args
        assert "Example" in out, f"`speclm {' '.join(args)} --help` shows no example"
        options = out.split("Options:", 1)[-1]
        if "--out" in options:  # each --out says what it writes
            assert "to write" in options.split("--out", 1)[1][:200], args
    code, out, _ = cli("--help")
    assert "--version" in out


def test_plan_n_domains_and_its_old_name(cli):
    code, new, err = cli("plan", "--paper", "--n-domains", "50")
    assert code == 0, err
    code, old, err = cli("plan", "--paper", "--domains", "50")
    assert code == 0, err
    assert new == old
    code, one, _ = cli("plan", "--paper", "--n-domains", "1")
    assert one != new  # the count reaches the advice
    code, out, _ = cli("plan", "--help")
    assert "--n-domains" in out and "--domains " not in out  # the old name works, hidden


@pytest.mark.parametrize("args,words", [
    (["plan", "--bogus"], "--bogus"),
    (["export"], "--out"),
    (["plan", "--paper", "--n-domains", "many"], "--n-domains"),
    (["nosuchcommand"], "nosuchcommand"),
    (["grid", "--workers"], "--workers"),
])
def test_usage_errors_are_one_line(cli, args, words):
    code, out, err = cli(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speclm: error: ") and words in lines[0], err
    assert "╭" not in err and out == ""
