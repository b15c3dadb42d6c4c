"""Issue 21, the damage matrix: every kind of file a run folder holds, damaged four ways
(empty, cut short, garbage, the wrong JSON type), against every command that reads it.

Each cell expects either a refusal (exit 2, one line on stderr naming the damaged file) or
the rebuild the docs promise (a torn or deleted results row is computed again), and in both
cases no other file changed (sha256 of every file before and after). One tiny run (corpus,
tokens, one grid row, one `speclm train`) is built once for the module; each cell damages
one file, runs one command in this process and puts the file back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import FAST_GRID_TRAIN

GRID = ["--methods", "slm", "--domains", "kjv", "--sizes", "2k"]
FAST = ["tokens.vocab_size=300", "tokens.window=16", *FAST_GRID_TRAIN, "methods.sizes=['2k']",
        "methods.finetune_max_steps=[2]", "methods.finetune_eval_every=1", "methods.bootstrap=10",
        "methods.eval_max_windows=8"]
TRAIN: list[str] = []  # `speclm train` with the run's own (tiny) training settings
CKPT = "pretrain/slm/final"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny run every cell damages (built once, ~20 s)."""
    import torch

    from speclm.cli import main
    from speclm.core.run import open_run
    from speclm.corpus.stage import build_corpus
    from speclm.grid.experiment import run_grid
    from speclm.tokens.stage import build_tokens

    torch.set_num_threads(1)
    run = open_run(tmp_path_factory.mktemp("damage") / "run", "tiny", FAST)
    build_corpus(run)
    build_tokens(run)
    run_grid(run, methods=["slm"], domains=["kjv"], sizes=["2k"], log=lambda s: None)
    try:
        main(["train", "--run", str(run.path), *TRAIN])
    except SystemExit as e:
        assert not e.code
    return run.path


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "cut":  # cut short: the first half (a killed writer without atomic writes)
        path.write_bytes(data[: max(1, len(data) // 2)])
    elif how == "garbage":
        path.write_bytes(b"\x00\xff garbage \xfe{[\n" * 3)
    elif how == "type":  # valid, but the wrong JSON / TOML type
        path.write_bytes(b"corpus = 3\n" if path.suffix == ".toml" else
                         b"[1, 2]\n" if path.suffix == ".jsonl" else b"[1, 2, 3]\n")
    else:  # pragma: no cover
        raise ValueError(how)


def _command(name: str, run: Path, out: Path) -> list[str]:
    ck = str(run / CKPT)
    return {
        "tokens": ["tokens", "--run", run],
        "tokens --force": ["tokens", "--run", run, "--force"],
        "train": ["train", "--run", run, *TRAIN],
        "train kjv": ["train", "--run", run, *TRAIN, "--set-name", "kjv", "--out", out / "ft"],
        "grid": ["grid", "--run", run, *GRID],
        "report": ["report", "--run", run],
        "plan": ["plan", "--run", run, "--out", out / "plan.png"],
        "eval": ["eval", "--run", run, "--checkpoint", ck, "--on", "kjv", "--max-windows", "2", "--out",
                 out / "ev.json"],
        "generate": ["generate", "--run", run, "--checkpoint", ck, "--max-new-tokens", "2"],
        "export": ["export", "--run", run, "--checkpoint", ck, "--out", out / "hf"],
        "corpus summary": ["corpus", "summary", "--run", run],
        "corpus build": ["corpus", "build", "--run", run],
    }[name]


JSON4 = ("empty", "cut", "garbage", "type")
BIN3 = ("empty", "cut", "garbage")
# file kind -> (path in the run, damages, commands that read it)
KINDS = {
    "config": ("config.toml", JSON4, ("tokens", "train", "grid", "report", "eval")),
    "corpus summary": ("corpus/summary.json", JSON4, ("corpus summary", "corpus build")),
    "corpus manifest": ("corpus/manifest.json", JSON4, ("tokens",)),
    "corpus parquet": ("corpus/domain-kjv.parquet", BIN3, ("tokens --force",)),
    "generic parquet": ("corpus/generic.parquet", BIN3, ("tokens --force",)),
    "tokens summary": ("tokens/summary.json", JSON4, ("tokens",)),
    "tokens manifest": ("tokens/manifest.json", JSON4, ("train", "eval")),
    "token shard": ("tokens/kjv/train.tokens.bin", BIN3, ("train kjv",)),
    "test shard": ("tokens/kjv/test.tokens.bin", BIN3, ("eval",)),
    "window index": ("tokens/kjv/train.windows.npy", BIN3, ("train kjv",)),
    "checkpoint json": (f"{CKPT}/model.json", JSON4, ("eval", "generate", "export")),
    "checkpoint weights": (f"{CKPT}/model.safetensors", BIN3, ("eval", "generate", "export")),
    "train record": ("train/generic/tiny/train.json", JSON4, ("train",)),
    "results": ("eval/results.jsonl", JSON4, ("report", "plan", "grid")),
}
# Cells whose promised outcome is a rebuild (exit 0), with the files the command may write:
# the results file holds one row, so an emptied file or a torn last line leaves no row; the
# grid computes the row again (docs/reliability.md: "a torn results row is recomputed").
# Garbage on several lines is refused: a bad line that is not the last is never guessed at.
REBUILD = {("results", d, "grid"): ("eval/",) for d in ("empty", "cut")}
CELLS = [(k, d, c) for k, (_, damages, cmds) in KINDS.items() for d in damages for c in cmds]


def test_the_matrix_has_at_least_60_cells():
    assert len(CELLS) >= 60, len(CELLS)


@pytest.mark.parametrize("kind, damage, command", CELLS, ids=["/".join(c) for c in CELLS])
def test_damaged_file(base, tmp_path, cli, kind, damage, command):
    run = tmp_path / "run"
    shutil.copytree(base, run)
    rel = KINDS[kind][0]
    _damage(run / rel, damage)
    before = _digests(run)
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = cli(*_command(command, run, out))
    after = _digests(run)
    owned = REBUILD.get((kind, damage, command))
    if owned is None:
        lines = [ln for ln in err.strip().splitlines() if ln.startswith(("speclm: error", "Traceback"))]
        assert code == 2, (code, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("speclm: error: "), err[-2000:]
        assert Path(rel).name in lines[0], lines[0]
        assert after == before
        assert not any(out.iterdir())  # nothing written where the command would write
    else:
        assert code == 0, err[-2000:]
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        assert changed and all(p.startswith(owned) for p in changed), changed
        rows = [json.loads(ln) for ln in (run / "eval/results.jsonl").read_text().splitlines()]
        assert [r["method"] for r in rows] == ["slm"]  # the row again, the damage gone


# ---- results rows: each job counts once; a bad row is named by its line --------------------


def _rows(run: Path) -> list[str]:
    return (run / "eval/results.jsonl").read_text().splitlines()


def test_duplicated_rows_count_once_with_a_warning(base, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(base, run)
    code, _, err = cli("report", "--run", run)
    assert code == 0, err
    once = json.loads((run / "eval/report.json").read_text())
    lines = _rows(run)
    (run / "eval/results.jsonl").write_text("\n".join(lines + lines) + "\n")
    code, _, err = cli("report", "--run", run)
    assert code == 0, err
    assert "line 2 repeats the row of line 1" in err and "counts once" in err
    assert json.loads((run / "eval/report.json").read_text()) == once  # the same report, intervals included


@pytest.mark.parametrize("edit, words", [
    ({"nll": float("nan")}, "line 2: its nll is nan"),
    ({"nll": None}, "line 2: its nll is None"),
    ({"method": "slm-bogus"}, "line 2: unknown method 'slm-bogus'"),
])
def test_a_doubtful_row_is_named_by_line_and_left_out(base, tmp_path, cli, edit, words):
    run = tmp_path / "run"
    shutil.copytree(base, run)
    row = json.loads(_rows(run)[0])
    bad = {**row, "domain": "legal", **edit}
    (run / "eval/results.jsonl").write_text(_rows(run)[0] + "\n" + json.dumps(bad) + "\n")
    code, _, err = cli("report", "--run", run)
    assert code == 0, err
    assert words in err and "left out" in err
    assert "legal" not in json.loads((run / "eval/report.json").read_text())["domains"]


def test_a_row_of_the_wrong_shape_is_one_line(base, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(base, run)
    row = json.loads(_rows(run)[0])
    (run / "eval/results.jsonl").write_text(json.dumps({**row, "domain": ["kjv"]}) + "\n")
    before = _digests(run)
    for cmd in ("report", "grid"):
        code, _, err = cli(*_command(cmd, run, tmp_path))
        assert code == 2 and err.count("speclm: error") == 1 and "line 1 is not a grid row" in err, err
    assert _digests(run) == before


def test_a_damaged_pretrained_cache_is_computed_again(base, tmp_path, cli):
    """eval/pretrained/*.json caches the pretrained model's NLL: garbage there is recomputed."""
    run = tmp_path / "run"
    shutil.copytree(base, run)
    (cache,) = (run / "eval/pretrained").glob("*.json")
    want = json.loads(cache.read_text())
    for damage in ("garbage", "type"):
        _damage(cache, damage)
        (run / "eval/results.jsonl").unlink()
        code, _, err = cli(*_command("grid", run, tmp_path))
        assert code == 0, err
        got = json.loads(cache.read_text())
        assert got.keys() == want.keys()
        assert got["kjv/test"]["nll"] == pytest.approx(want["kjv/test"]["nll"], rel=1e-5)


@pytest.mark.parametrize("damage", JSON4)
def test_a_damaged_clusters_summary_names_the_file_and_force(tmp_path, damage):
    """`speclm clusters` on a fresh stage reads clusters/summary.json back (no Sentence-BERT here)."""
    from speclm.clusters.stage import read_summary
    from speclm.core.errors import SpeclmError

    cdir = tmp_path / "clusters"
    cdir.mkdir()
    (cdir / "summary.json").write_text(json.dumps({"ks": [2, 4], "tables": {}}))
    assert read_summary(cdir)["ks"] == [2, 4]
    _damage(cdir / "summary.json", damage)
    with pytest.raises(SpeclmError, match=r"summary\.json .*speclm clusters --force"):
        read_summary(cdir)
