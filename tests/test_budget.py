"""A budget before training: --budget sizes the pretraining so the whole grid fits, refuses
with the minimum when nothing fits, and the warnings and the CPU rate the dry run uses."""

from __future__ import annotations

import re

import pytest

from speclm.core.errors import SpeclmError
from speclm.core.run import open_run


@pytest.fixture(scope="module")
def tokens_run(tmp_path_factory):
    """An imported run (tiny preset, small vocabulary and window) with its tokens built."""
    from conftest import SMALL, stdlib_texts
    from speclm.cli import main

    root = tmp_path_factory.mktemp("budget")
    (root / "generic.jsonl").write_text("".join('{"text": %s}\n' % __import__("json").dumps(t)
                                               for t in stdlib_texts(60, 0, 1500)), encoding="utf-8")
    (root / "notes").mkdir()
    for i, t in enumerate(stdlib_texts(40, 60, 1200)):
        (root / "notes" / f"n{i}.txt").write_text(t, encoding="utf-8")
    run = root / "run"
    for args in (["corpus", "import", "--run", run, *SMALL, "--generic", root / "generic.jsonl", "--domain",
                  f"notes={root / 'notes'}"], ["run", "--run", run, "--until", "tokens"]):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            assert not e.code
    return run


METHODS = ["slm", "slm-is"]


def test_the_sized_grid_fits_the_budget_and_one_more_step_would_not(tokens_run):
    from speclm.grid.budgeting import Budget, _with_steps, fresh_shards, grid_shape, size_pretraining
    from speclm.grid.dryrun import jobs

    run = open_run(tokens_run, None, [], save=False)
    shards = fresh_shards(run)
    for flops in (3e10, 1e11):
        s = size_pretraining(run, Budget(str(flops), flops), METHODS, shards)
        assert s.total <= flops < s.total + s.per_step
        # the dry run's own table at that length adds up to the sizing's total
        vocab, window, domains, test, train = grid_shape(run, shards)
        table = jobs(_with_steps(run, s.steps), METHODS, run.config.methods.sizes, domains, test, vocab, window, train)
        assert sum(j.flops for j in table) == pytest.approx(s.total, rel=1e-9)


def test_a_budget_that_fits_nothing_names_a_minimum_that_fits(tokens_run):
    from speclm.grid.budgeting import Budget, fresh_shards, size_pretraining

    run = open_run(tokens_run, None, [], save=False)
    shards = fresh_shards(run)
    with pytest.raises(SpeclmError) as e:
        size_pretraining(run, Budget("1e6", 1e6), METHODS, shards)
    msg = str(e.value)
    assert "fits nothing" in msg and "\n" not in msg
    need = float(re.search(r"give at least ([0-9.e+]+) FLOPs", msg).group(1))
    s = size_pretraining(run, Budget(str(need), need), METHODS, shards)  # the minimum named fits
    assert s.steps >= max(1, run.config.train.warmup_steps) and s.total <= need
    with pytest.raises(SpeclmError, match="fits nothing"):  # and 1% less does not (it is rounded up to 3 digits)
        size_pretraining(run, Budget("less", need * 0.99), METHODS, shards)


def test_budget_forms(tokens_run, monkeypatch, tmp_path):
    from speclm.grid.budgeting import parse_budget

    monkeypatch.setenv("SPECLM_CACHE", str(tmp_path))
    run = open_run(tokens_run, None, [], save=False)
    assert parse_budget("3e15", run).flops == 3e15 and parse_budget("2.5e9 FLOPs", run).flops == 2.5e9
    one, two = parse_budget("1h@h100", run), parse_budget("2 hours on H100", run)
    assert two.flops == pytest.approx(2 * one.flops) and one.flops > 1e17
    cpu = parse_budget("0.5h@cpu", run)
    assert 0 < cpu.flops < one.flops and "this CPU" in cpu.describe()
    for bad in ("abc", "0", "-1", "1h@tpu", "1h"):
        with pytest.raises(SpeclmError):
            parse_budget(bad, run)


def test_dry_run_with_a_budget_on_the_cli(cli, tokens_run, monkeypatch, tmp_path):
    monkeypatch.setenv("SPECLM_CACHE", str(tmp_path))
    code, out, err = cli("run", "--run", tokens_run, "--dry-run", "--budget", "1e12")
    assert code == 0, err
    assert re.search(r"budget 1e\+12 FLOPs: pretraining sized to [0-9,]+ steps", out)
    assert "total all:" in out
    code, out, err = cli("run", "--run", tokens_run, "--dry-run", "--budget", "1e5")
    assert code == 2 and "fits nothing" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("grid", "--run", tokens_run, "--budget", "1e5", "-m", "slm")
    assert code == 2 and "fits nothing" in err


def test_warnings_on_generic_passes_and_the_specialization_ratio(tokens_run):
    from speclm.grid.budgeting import data_warnings, fresh_shards

    run = open_run(tokens_run, None, [], save=False)
    shards = fresh_shards(run)
    generic = len(shards.windows("generic", "train")) * shards.window
    many = data_warnings(run, shards, 10.0 * generic)
    assert any("reads the generic train split 10.0 times" in w for w in many)
    assert not any("generic train split" in w for w in data_warnings(run, shards, 2.0 * generic))
    spec = len(shards.windows("notes", "train")) * shards.window  # methods.sizes has "all"
    assert any("only 50.0x the largest specialization set" in w for w in data_warnings(run, shards, 50.0 * spec))
    assert not any("specialization set" in w for w in data_warnings(run, shards, 200.0 * spec))


def test_the_cpu_rate_keeps_the_best_reading_per_machine_and_dates_it(tmp_path, monkeypatch):
    import json

    from speclm.grid.cpurate import cache_file, measure
    from speclm.model.transformer import named_shape

    monkeypatch.setenv("SPECLM_CACHE", str(tmp_path))
    monkeypatch.delenv("SPECLM_REMEASURE_CPU", raising=False)
    shape = named_shape("tiny", 300, max_seq_len=16)
    first = measure(shape, 16, 2, "tiny")
    assert not first.cached and first.flops_per_s > 0 and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", first.measured)
    assert cache_file().is_file() and str(cache_file()).startswith(str(tmp_path))
    # a reading taken under load (far below this machine's rate) does not stay: the next call replaces it
    cache = json.loads(cache_file().read_text())
    (key,) = cache
    cache[key]["flops_per_s"] = first.flops_per_s / 1000
    cache[key]["measured"] = "2000-01-01 00:00 UTC"
    cache_file().write_text(json.dumps(cache))
    again = measure(shape, 16, 2, "tiny")
    assert not again.cached and again.flops_per_s > first.flops_per_s / 1000 and again.measured != "2000-01-01 00:00 UTC"
    # a better reading than any this call can take stays, with its date
    cache = json.loads(cache_file().read_text())
    cache[key]["flops_per_s"] = again.flops_per_s * 1000
    cache_file().write_text(json.dumps(cache))
    best = measure(shape, 16, 2, "tiny")
    assert best.cached and best.flops_per_s == again.flops_per_s * 1000
    other = measure(named_shape("tiny", 300, max_seq_len=16), 16, 4, "tiny, batch 4")  # another shape: its own entry
    assert not other.cached and len(json.loads(cache_file().read_text())) == 2
    monkeypatch.setenv("SPECLM_REMEASURE_CPU", "1")
    assert not measure(shape, 16, 2, "tiny").cached
