"""Config loading: presets, --set overrides, unknown keys and wrong types are refused."""

import pytest

from speclm.core import config
from speclm.core.errors import SpeclmError
from speclm.core.run import open_run


@pytest.mark.parametrize("name", config.presets())
def test_every_preset_loads_and_round_trips(name):
    cfg = config.load(name)
    assert cfg.name == name
    again = config.from_dict(config.Config, config.to_dict(cfg))
    assert again == cfg


def test_presets_include_the_three_scales():
    assert {"tiny", "demo", "paper"} <= set(config.presets())


def test_set_override_changes_one_value():
    base = config.load("tiny")
    cfg = config.load("tiny", ["tokens.vocab_size=512", "corpus.source=import", "corpus.valid_fraction=0.1"])
    assert cfg.tokens.vocab_size == 512 and base.tokens.vocab_size != 512
    assert cfg.corpus.source == "import"
    assert cfg.corpus.valid_fraction == 0.1
    assert cfg.tokens.window == base.tokens.window


def test_int_is_accepted_for_a_float():
    cfg = config.load("tiny", ["corpus.max_doc_mb=3"])
    assert cfg.corpus.max_doc_mb == 3.0 and isinstance(cfg.corpus.max_doc_mb, float)


@pytest.mark.parametrize(
    "override, words",
    [
        ("tokens.vocab_sise=512", ["unknown key", "vocab_sise"]),
        ("nosuchsection.x=1", ["unknown key", "nosuchsection"]),
        ("tokens.vocab_size='big'", ["tokens.vocab_size", "expected int"]),
        ("tokens.vocab_size=true", ["tokens.vocab_size", "expected int"]),
        ("corpus.domains=3", ["corpus.domains", "expected a list"]),
        ("novalue", ["section.key=value"]),
    ],
)
def test_bad_overrides_are_one_line_errors(override, words):
    with pytest.raises(SpeclmError) as e:
        config.load("tiny", [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(SpeclmError, match="unknown preset 'huge'.*tiny"):
        config.load("huge")


def test_bad_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[tokens\nvocab_size = 3", encoding="utf-8")
    with pytest.raises(SpeclmError, match="not valid TOML"):
        config.load(str(p))


def test_run_keeps_its_saved_config(tmp_path):
    open_run(tmp_path / "r", "tiny", ["tokens.vocab_size=700"])
    assert (tmp_path / "r" / "config.toml").exists()
    again = open_run(tmp_path / "r")
    assert again.config.tokens.vocab_size == 700


def test_open_run_without_save_writes_nothing(tmp_path):
    r = open_run(tmp_path / "r", "tiny", save=False)
    assert not (tmp_path / "r").exists()
    r.save_config()
    assert (tmp_path / "r" / "config.toml").exists()


def test_a_changed_preset_file_reaches_a_folder_that_set_nothing(tmp_path):
    """A folder made from a preset alone follows that preset's file when it changes (the
    empty [explicit] table is saved, so nothing reads as hand-set)."""
    preset = tmp_path / "mine.toml"
    preset.write_text('name = "mine"\n[train]\nmax_steps = 11\n', encoding="utf-8")
    open_run(tmp_path / "r", str(preset))
    assert "[explicit]" in (tmp_path / "r" / "config.toml").read_text()
    preset.write_text('name = "mine"\n[train]\nmax_steps = 23\n', encoding="utf-8")
    assert open_run(tmp_path / "r", str(preset)).config.train.max_steps == 23
    open_run(tmp_path / "s", str(preset), ["train.lr=0.005"])
    preset.write_text('name = "mine"\n[train]\nmax_steps = 31\nlr = 0.001\n', encoding="utf-8")
    again = open_run(tmp_path / "s", str(preset)).config.train
    assert (again.max_steps, again.lr) == (31, 0.005)
