"""`speclm report`: the paper's tables from the run's grid, with intervals, and the findings checked.

The end-to-end test runs a tiny grid, writes the report, and checks each number the report
prints against the results file; the findings are checked on hand-made rows whose verdict
is known."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from conftest import tiny_copy
from speclm.core import atomic
from speclm.report.evidence import difference, group, macro
from speclm.report.findings import Grid

FAST = [
    "train.max_steps=3", "train.warmup_steps=1", "train.eval_every=3", "train.eval_batches=1",
    "train.checkpoint_every=3", "methods.sizes=['2k']", "methods.finetune_max_steps=[2]", "methods.finetune_eval_every=2",
]


def row(method, domain, nll, se=0.01, size="1k", pre=None, gen=0.0, spec=1.0, shared=True, small=True, seed=0):
    return {"method": method, "domain": domain, "size": size, "nll": nll, "nll_se": se, "ppl": math.exp(nll),
            "pretrained_nll": pre, "seed": seed, "shared_pretraining": shared, "small_at_inference": small,
            "cost": {"generic": {"flops": gen, "tokens": 1e6}, "specialization": {"flops": spec, "tokens": 1e3}}}


DOMAINS = ["a", "b", "c"]
ENT = {"a": {"4": {"entropy": 0.2}}, "b": {"4": {"entropy": 0.8}}, "c": {"4": {"entropy": 1.3}}}


def grid_of(rows):
    g = group(rows)
    return Grid(g, DOMAINS, ["1k"], list(dict.fromkeys(r["method"] for r in rows)), ENT)


def test_estimates_combine_seeds_and_domains():
    rs = [row("slm", "a", 2.0, 0.03, seed=0), row("slm", "a", 2.2, 0.03, seed=1)]
    e = macro(group(rs), "slm", "1k", ["a"])
    assert e.nll == pytest.approx(2.1)
    seeds_se = 0.2 / math.sqrt(2) / math.sqrt(2)  # sd of (2.0, 2.2) over sqrt(2)
    assert e.se == pytest.approx(math.sqrt((math.sqrt(2 * 0.03 ** 2) / 2) ** 2 + seeds_se ** 2))
    assert e.half_width == pytest.approx((math.exp(2.1 + 1.959964 * e.se) - math.exp(2.1 - 1.959964 * e.se)) / 2)
    two = macro(group([row("slm", "a", 2.0, 0.03), row("slm", "b", 3.0, 0.04)]), "slm", "1k", ["a", "b"])
    assert two.nll == pytest.approx(2.5) and two.se == pytest.approx(0.05 / 2)
    assert macro(group([row("slm", "a", 2.0)]), "slm", "1k", ["a", "b"]) is None  # incomplete: no macro


def test_difference_is_the_macro_of_per_domain_differences():
    rs = [row("a1", d, 2.0 + i) for i, d in enumerate(DOMAINS)] + [row("b1", d, 2.5 + i, se=0.02) for i, d in enumerate(DOMAINS)]
    d = difference(group(rs), "a1", "b1", "1k", DOMAINS)
    assert d.delta == pytest.approx(-0.5) and d.se == pytest.approx(math.sqrt(3 * (0.01 ** 2 + 0.02 ** 2)) / 3)
    assert d.significant and "ratio 0.607" in d.text()


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, tiny_tokens):
    from speclm.grid.experiment import run_grid

    torch.set_num_threads(1)
    run = tiny_copy(tiny_tokens, tmp_path_factory.mktemp("report") / "run", FAST)
    run_grid(run, methods=["slm", "slm-nopt"], domains=["kjv", "legal"], sizes=["2k"], log=lambda s: None)
    return run


def test_report_numbers_are_the_results_files(grid_run, cli):
    code, out, err = cli("report", "--run", str(grid_run.path))
    assert code == 0, err
    assert (grid_run.path / "eval" / "report.html").resolve().as_uri() in out  # a clickable file:// address
    md = (grid_run.path / "eval" / "report.md").read_text()
    facts = json.loads((grid_run.path / "eval" / "report.json").read_text())
    rows = atomic.read_jsonl(grid_run.path / "eval" / "results.jsonl")
    lines = md.splitlines()
    assert lines[0].startswith("# speclm report") and "not testable at this scale" in lines[2]
    assert "## Where this run stands against the paper's regime" in md
    for m in ("slm", "slm-nopt"):
        mine = [r for r in rows if r["method"] == m]
        size_row = next(ln for ln in lines if ln.startswith(f"| {m} |") and ln.count("|") == 5)  # method, 2 domains, macro
        for r in mine:  # each per-domain cell of the size table is the row's perplexity
            assert f"{r['ppl']:.2f}" in size_row, (m, r["domain"], size_row)
        macro_ppl = math.exp(sum(r["nll"] for r in mine) / len(mine))
        assert f"{macro_ppl:.2f}" in md
        assert facts["tables"]["table4"][m]["2k"]["nll"] == pytest.approx(sum(r["nll"] for r in mine) / len(mine))
    assert [f["n"] for f in facts["findings"]] == [1, 2, 3, 4, 5, 6, 7]
    assert all(f"**{f['title']}. {f['claim']}** *{f['verdict']}.*" in md for f in facts["findings"])
    pr = facts["premises"]
    for key, kind in (("slm_gain_last_doubling_nats", (float, type(None))), ("slm_saturated", bool),
                      ("large_beats_small", bool), ("is_max_passes", (float, type(None))), ("domains", int)):
        assert key in pr and isinstance(pr[key], kind), (key, pr.get(key))
    assert pr["domains"] == 2 and pr["slm_saturated"] is False  # no large model in this grid: not measured, not met
    assert facts["cost_totals"]["slm"][0] == max(r["cost"]["generic"]["flops"] for r in rows if r["method"] == "slm")
    html = (grid_run.path / "eval" / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and not re.search(r"<img[^>]+src=\"(?!data:)", html)


def test_report_without_a_grid_is_one_line(tmp_path, cli):
    from speclm.core.run import open_run

    open_run(tmp_path / "r", "tiny", [], save=True)
    code, out, err = cli("report", "--run", str(tmp_path / "r"))
    assert code == 2 and "no grid results" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "eval" / "report.md").exists()


def test_differences_are_paired_on_the_same_test_documents(grid_run):
    rows = atomic.read_jsonl(grid_run.path / "eval" / "results.jsonl")
    g = group(rows)
    paired = difference(g, "slm", "slm-nopt", "2k", ["kjv", "legal"], grid_run.path, replicates=200)
    unpaired = difference(g, "slm", "slm-nopt", "2k", ["kjv", "legal"])
    assert paired.paired and not unpaired.paired
    assert paired.delta == pytest.approx(unpaired.delta, abs=1e-9)  # the same point estimate
    assert 0 < paired.se < unpaired.se  # the shared documents' noise cancels


def test_before_fine_tuning_uses_its_own_interval():
    rs = [dict(row("slm", "a", 2.0, se=0.01, pre=3.0), pretrained_nll_se=0.2)]
    e = macro(group(rs), "slm", "1k", ["a"], "pretrained_nll")
    assert e.nll == pytest.approx(3.0) and e.se == pytest.approx(0.2)  # not the fine-tuned row's 0.01


# The report in a real browser: headless Chromium (Debian's `chromium`; make test installs it
# where it can) loads eval/report.html; a script run after the page's load event records what
# the browser made of it, and --dump-dom hands that back.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=10000"]
PROBE = """<script>window.addEventListener('load', () => {
  const shown = el => { if (!el) return false; const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.display !== 'none' && s.visibility !== 'hidden'; };
  const h = [...document.querySelectorAll('h2')].find(e => e.textContent.startsWith("The paper's findings"));
  const probe = {images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
                 findings: shown(h), findings_body: h ? shown(h.nextElementSibling) : false,
                 findings_text: h && h.nextElementSibling ? h.nextElementSibling.textContent.length : 0};
  const pre = document.createElement('pre'); pre.id = 'speclm-probe'; pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});</script>"""


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browse(html_path, tmp_path) -> dict:
    """What headless Chromium saw of a copy of ``html_path`` with the probe added."""
    import subprocess

    tmp_path.mkdir(parents=True, exist_ok=True)
    page = tmp_path / "page.html"
    page.write_text(html_path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="speclm-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"chromium printed no probe (exit {proc.returncode}): {proc.stderr[-2000:]}"
    import html as htmllib

    return json.loads(htmllib.unescape(m.group(1)))


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (apt-get install chromium; make test "
                    "does where it can): the report was not opened in a browser")
def test_report_html_in_a_real_browser(grid_run, cli, tmp_path):
    code, _, err = cli("report", "--run", str(grid_run.path))
    assert code == 0, err
    report = grid_run.path / "eval" / "report.html"
    seen = _browse(report, tmp_path / "ok")
    assert seen["images"], "the report shows no picture"
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert seen["findings"] and seen["findings_body"] and seen["findings_text"] > 20, seen
    # the probe can fail: the same page with one picture broken is caught
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,AAAA",
                             report.read_text(encoding="utf-8"), count=1), encoding="utf-8")
    assert any(i["width"] == 0 for i in _browse(broken, tmp_path / "broken")["images"])
