"""Issue 13, "nothing lost": the user's data, the run's config and checkpoints survive
every command (each test fails on the code before the fix)."""

import json

from conftest import SMALL


def _sets(run):
    return sorted(p.name for p in (run / "corpus").glob("*.parquet"))


def test_run_with_a_preset_keeps_the_imported_corpus(imported_run, cli):
    """The README flow: `corpus import`, then `run --preset ...` uses the import, not the preset's corpus."""
    before = _sets(imported_run)
    assert "domain-notes.parquet" in before
    code, out, err = cli("run", "--run", imported_run, "--preset", "tiny", "--until", "corpus")
    assert code == 0, err
    assert _sets(imported_run) == before
    assert json.loads((imported_run / "corpus" / "summary.json").read_text())["source"] == "import"
    assert "source = \"import\"" in (imported_run / "config.toml").read_text()


def test_another_corpus_over_an_import_needs_force(imported_run, cli):
    before = _sets(imported_run)
    code, _, err = cli("corpus", "tiny", "--run", imported_run)
    assert code == 2
    assert "imported corpus" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert _sets(imported_run) == before
    assert "source = \"import\"" in (imported_run / "config.toml").read_text()
    code, _, err = cli("corpus", "tiny", "--run", imported_run, "--force")
    assert code == 0, err
    assert "domain-notes.parquet" not in _sets(imported_run)
