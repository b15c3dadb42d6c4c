"""`speclm run --dry-run` (grid/dryrun.py): every shipped preset plans on this CPU without
a corpus and exits 0 writing nothing; with built tokens it checks every size against every
domain's train split and refuses a size that does not fit, in one line, before any work."""

from pathlib import Path

import pytest

from speclm.tokens.stage import build_tokens

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "speclm" / "configs").glob("*.toml"))


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_dry_runs_without_writing(cli, tmp_path, monkeypatch, preset):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", "--preset", preset, "--run", tmp_path / "run", "--dry-run")
    assert code == 0, err
    assert list(tmp_path.iterdir()) == [], "a dry run wrote something"
    assert "nothing will be written" in out and "tokens not built yet" in out
    lines = out.splitlines()
    assert any(line.startswith("pretrain   slm ") for line in lines)
    assert any(line.startswith("specialize slm-is / ") for line in lines)
    assert any(line.startswith("evaluate   slm-pn / ") for line in lines)
    assert "H100" in out and any(line.startswith("total all: ") for line in lines)
    if preset == "paper":  # the paper's budget: 240B tokens for the SLM, 127 h on the reference H100
        assert any(line.startswith("pretrain   slm ") and "240.0B" in line and "127 h" in line for line in lines)
    else:  # CPU-sized: also on this CPU, from a measured rate
        assert "this CPU at " in out and "GFLOP/s, the best of" in out and "measured 20" in out


def test_dry_run_checks_sizes_against_the_built_tokens(cli, imported_run):
    from speclm.core.run import open_run

    run = open_run(imported_run, None, [])
    build_tokens(run)
    before = tree(imported_run)
    code, out, err = cli("run", "--run", imported_run, "--dry-run", "--set", 'methods.sizes=["1k", "all"]')
    assert code == 0, err
    assert "tokens built at" in out
    assert any(line.startswith("  checked: notes: ") and "sizes 1k, all fit" in line for line in out.splitlines())
    assert "?" not in out.split("evaluate", 1)[1].splitlines()[0]  # test tokens known: evaluations estimated
    code, out, err = cli("run", "--run", imported_run, "--dry-run", "--set", 'methods.sizes=["1k", "50M"]')
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "size 50M" in err and "train split" in err, err
    assert tree(imported_run) == before, "a dry run wrote into the run folder"
