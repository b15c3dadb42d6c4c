"""The corpus and tokens commands end to end, through `speclm.cli.main`."""

import tomllib

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
