"""`speclm report --compare`: the scale ladder page, from two tiny run folders whose grid rows
are written by hand (no training): one at 2 tokens per parameter, one at 2,000."""

from __future__ import annotations

import json
import math

import pytest

from speclm.core import atomic
from speclm.core.run import open_run
from speclm.report.compare import FILES, LADDER, ROWS, paper_points
from speclm.report.rows import config_hash

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOMAINS = ("kjv", "legal")
SMALL_P, LARGE_P = 1e6, 4e6
NLL = {"slm": 2.5, "slm-is": 2.4, "slm-pn": 2.45, "slm-mix": 2.47, "slm-d": 2.49, "llm": 2.3}


def row(chash, method, domain, nll, tokens, size="16k"):
    large = method == "llm"
    return {"method": method, "domain": domain, "size": size, "config": chash, "seed": 0, "nll": nll,
            "nll_se": 0.01, "ppl": math.exp(nll), "pretrained_nll": nll + 0.5, "pretrained_nll_se": 0.01,
            "small_at_inference": not large, "shared_pretraining": method not in ("slm-is", "slm-is-full"),
            "eval_documents": 20,
            "inference_params": LARGE_P if large else SMALL_P, "generic_valid_nll": 3.0 - (0.2 if large else 0.0),
            "generic_valid_nll_se": 0.01, "extra": {"plan": {"train_tokens": 16_000}},
            "cost": {"generic": {"flops": 6 * tokens * (LARGE_P if large else SMALL_P), "tokens": tokens},
                     "specialization": {"flops": 1e9, "tokens": 16_000}}}


def make_run(path, tokens, shift=0.0, ablation=False, preset="tiny"):
    """A run folder (of ``preset``) with rows of every ladder method (and slm-d) at 16k and 64k;
    ``ablation``: slm-is-full's too (NLL 2.2)."""
    run = open_run(path, preset, [], save=True)
    chash = config_hash(run)
    for s in ("16k", "64k"):
        for m, nll in {**NLL, **({"slm-is-full": 2.2} if ablation else {})}.items():
            for d in DOMAINS:
                delta = 0.0 if m == "slm" else shift
                atomic.append_jsonl(run.eval_dir / "results.jsonl", row(chash, m, d, nll + delta, tokens, s))
    return run


@pytest.fixture
def two_runs(tmp_path):
    return make_run(tmp_path / "small", 2e6), make_run(tmp_path / "large", 2e9, shift=-0.05, ablation=True)


def test_page_has_a_column_per_run_every_finding_and_the_figure(cli, two_runs):
    a, b = two_runs
    before_b = {p.name: p.read_bytes() for p in b.eval_dir.iterdir()}
    code, out, err = cli("report", "--compare", a.path, b.path)
    assert code == 0, err
    folder = a.eval_dir / "compare"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    md = (folder / "compare.md").read_text(encoding="utf-8")
    findings = md.split("## The paper's findings, per run")[1].split("## ")[0]
    head = next(line for line in findings.splitlines() if line.startswith("| finding"))
    assert head.split("|")[2:4] == [" small ", " large "]  # one column per run, in the order given
    for title in ROWS:  # every finding, finding 4 in its two parts, a cell per run
        line = next(x for x in findings.splitlines() if x.startswith(f"| {title}: "))
        assert line.count("|") == 4
    assert (folder / "compare-ladder.png").read_bytes()[:8] == PNG_MAGIC
    assert "data:image/png;base64," in (folder / "compare.html").read_text(encoding="utf-8")
    # the second run's folder is untouched: only compare files, only in the first run's eval/compare
    assert {p.name: p.read_bytes() for p in b.eval_dir.iterdir()} == before_b

    facts = json.loads((folder / "compare.json").read_text(encoding="utf-8"))
    small, large = facts["runs"]
    assert small["tokens_per_param_slm"] == pytest.approx(2.0) and large["tokens_per_param_slm"] == pytest.approx(2000)
    # the ablation slm-is-full (slm-is at the full budget): a ladder row where a run has it, a dash elsewhere
    assert small["ladder"]["slm-is-full"] is None
    assert large["ladder"]["slm-is-full"]["delta"] == pytest.approx(2.2 - 0.05 - NLL["slm"])
    assert "| slm-is-full | – | -0.350 ± 0.021 (unpaired) | an ablation, not in the paper |" in md
    assert "slm-is-full: an ablation of slm-is (at the full pretraining budget), not in the paper" in md
    f3_large = large["findings"]["3"]["text"]
    assert "slm-is-full vs slm-is" in f3_large and "slm-is-full" not in small["findings"]["3"]["text"]
    for m in LADDER[:-1]:  # the macro difference to slm at the smallest size, from the hand-written rows
        assert small["ladder"][m]["delta"] == pytest.approx(NLL[m] - NLL["slm"])
        assert large["ladder"][m]["delta"] == pytest.approx(NLL[m] - 0.05 - NLL["slm"])
        assert small["ladder"][m]["half"] > 0 and small["ladder"][m]["what"] == f"{m} − slm at 16k"
    # no operating curves: slm_saturated cannot be measured, so finding 3 is not testable and says which premise
    f3 = small["findings"]["3"]
    assert f3["verdict"] == "not testable at this scale" and "slm_saturated" in f3["failed_keys"]
    assert "not testable: slm_saturated" in md
    # finding 1 is decided by a difference: fine-tuning gains 0.5 nats for every method
    assert small["findings"]["1"]["deciding"]["delta"] == pytest.approx(-0.5)
    assert "| tokens per parameter, small model (slm) | 2.0 | 2,000.0 |" in md
    # the paper's values: llm from Table 4 (14.4 vs 18.2), slm-is not tabulated
    assert facts["paper"]["llm"]["delta"] == pytest.approx(math.log(14.4 / 18.2))
    assert paper_points()["slm-is"] is None and "slm-is: not tabulated" in md


def test_out_folder_and_the_run_option(cli, two_runs, tmp_path):
    a, b = two_runs
    code, out, err = cli("report", "--run", b.path, "--compare", a.path, "--out", tmp_path / "page")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "page").iterdir()) == sorted(FILES)
    assert not (a.eval_dir / "compare").exists() and not (b.eval_dir / "compare").exists()
    assert "| finding | large | small |" in (tmp_path / "page" / "compare.md").read_text(encoding="utf-8")


def test_columns_are_named_by_preset_where_the_presets_differ(cli, two_runs, tmp_path):
    a, _ = two_runs
    other = make_run(tmp_path / "run", 2e8, preset="demo")  # a generic folder name: the preset names it
    code, _, err = cli("report", "--compare", a.path, other.path, "--out", tmp_path / "page")
    assert code == 0, err
    facts = json.loads((tmp_path / "page" / "compare.json").read_text(encoding="utf-8"))
    assert facts["labels"] == ["tiny", "demo"]
    assert "# speclm scale ladder: tiny, demo" in (tmp_path / "page" / "compare.md").read_text(encoding="utf-8")


def test_a_run_without_rows_is_a_one_line_error_naming_it(cli, two_runs, tmp_path):
    a, _ = two_runs
    empty = open_run(tmp_path / "empty", "tiny", [], save=True)
    code, _, err = cli("report", "--compare", a.path, empty.path)
    assert code == 2 and err.startswith("speclm: error:") and err.count("\n") == 1
    assert f"--compare {empty.path}" in err and "no grid results" in err
    assert not (a.eval_dir / "compare").exists()  # nothing half-written
    for args, match in (([a.path], "two runs or more"), ([a.path, tmp_path / "nowhere"], "no run folder"),
                        (["--out", a.eval_dir / "results.jsonl", a.path, a.path], "is a file")):
        code, _, err = cli("report", "--compare", *args)
        assert code == 2 and match in err and err.count("\n") == 1, err
