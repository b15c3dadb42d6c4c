"""``speclm build``: a folder of domain text in, a transformers model folder with a model
card out; resumable; the plan's recommended checkpoint exports the same model."""

from __future__ import annotations

import json
import random

import pytest

from conftest import FAST_CLUSTERS, FAST_GRID_TRAIN

transformers = pytest.importorskip("transformers")

# The tiny preset made faster still: a small vocabulary and window, 3 training steps.
FAST = ["tokens.vocab_size=300", "tokens.window=16", *FAST_GRID_TRAIN, *FAST_CLUSTERS, "methods.finetune_max_steps=[3]",
        "methods.bootstrap=50", "methods.eval_max_windows=48"]


def cooking(root, n: int = 30):
    """A small generated domain: recipes, one per .txt file."""
    rng = random.Random(0)
    ing = "flour sugar butter eggs milk salt garlic onion tomato basil rice lentils carrots thyme lemon honey".split()
    verbs = "chop stir whisk fold simmer bake roast knead season fry".split()
    root.mkdir()
    for i in range(n):
        lines = [f"Recipe {i}: {rng.choice(ing).title()} {rng.choice(['stew', 'bread', 'salad', 'soup'])}", "Ingredients:"]
        lines += [f"- {rng.randint(1, 5)} cups {rng.choice(ing)}" for _ in range(rng.randint(3, 6))]
        lines += [f"{k + 1}. {rng.choice(verbs).title()} the {rng.choice(ing)} for {rng.randint(2, 40)} minutes."
                  for k in range(rng.randint(3, 6))]
        (root / f"r{i:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _sets(*items):
    return [x for item in items for x in ("--set", item)]


def test_build_from_a_folder_of_text_to_a_transformers_model(cli, tmp_path):
    import torch
    import yaml

    domain = cooking(tmp_path / "cooking")
    out, run = tmp_path / "my-model", tmp_path / "run"
    args = ["build", "--domain", f"cooking={domain}", "--generic", "tiny", "--out", out, "--run", run, *_sets(*FAST)]
    code, text, err = cli(*args)
    assert code == 0, err
    # the recipe says where it comes from; the dry run comes before any training
    assert "recipe: slm-is, from the paper's Figure 1: N=1 domain" in text
    assert text.index("dry run of") < text.index("grid: 2 methods x 1 domains x 1 sizes")
    rows = [json.loads(x) for x in (run / "eval" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == ["slm", "slm-is"]  # the recipe and the baseline, nothing more
    assert {r["size"] for r in rows} == {"all"}
    assert "perplexity on the cooking test split:" in text and "vs the plain SLM" in text
    assert f"model: {out} (slm-is, domain cooking" in text
    sample = text.split("sample:\n", 1)[1].splitlines()
    assert len([s for s in sample if s.startswith("  ")][:3]) == 3

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "transformers" and "slm-is" in meta["tags"] and meta["datasets"] == ["cooking"]
    assert "plain small model (slm" in card and "95% interval" in card
    assert "| generic | devil | public domain" in card  # the shipped generic set's sources keep their licences
    assert "| cooking | cooking | not recorded by speclm" in card
    gen = json.loads((out / "generation_config.json").read_text())
    assert "max_length" not in gen

    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ids = tok("Recipe 3: Garlic soup", return_tensors="pt")
    with torch.no_grad():
        new = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert new.shape[1] == ids["input_ids"].shape[1] + 8 or int(new[0, -1]) == gen["eos_token_id"]

    # resumable: the same command again trains nothing and keeps the export
    sha = json.loads((out / "speclm-export.json").read_text())["model_sha256"]
    code, text, err = cli(*args)
    assert code == 0, err
    assert "0 rows to do" in text and "already holds this checkpoint" in text
    assert json.loads((out / "speclm-export.json").read_text())["model_sha256"] == sha

    # `speclm run` on the build's run folder trains nothing and ends with the report's first
    # line, then the recommendation (checkpoint and export command)
    code, text, err = cli("run", "--run", run)
    assert code == 0, err
    lines = text.splitlines()
    first = next(i for i, x in enumerate(lines) if x.startswith("report: This "))
    rec = next(i for i, x in enumerate(lines) if x.startswith("recommended checkpoint: "))
    assert first < rec and lines[rec + 1].startswith(f"export it: speclm export --run {run} --recommended")

    # the plan names the same checkpoint, and `export --recommended` writes the same weights
    code, text, err = cli("plan", "--run", run, "--size", "all")
    assert code == 0, err
    assert "recommended checkpoint: " in text and f"export it: speclm export --run {run} --recommended" in text
    code, text, err = cli("export", "--run", run, "--recommended", "--out", tmp_path / "again")
    assert code == 0, err
    assert (tmp_path / "again" / "README.md").is_file()
    plan = json.loads((run / "eval" / "recommended.json").read_text())["models"][0]
    again = json.loads((tmp_path / "again" / "speclm-export.json").read_text())
    assert again["checkpoint"] == plan["checkpoint"]


def test_build_refuses_bad_input_before_writing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    domain = cooking(tmp_path / "cooking", 4)
    for args, match in [
        (["--domain", f"cooking={tmp_path / 'nope'}"], "path not found"),
        (["--domain", f"bad name={domain}"], "bad name"),
        (["--domain", f"cooking={domain}", "--generic", "huge"], "--generic huge"),
        (["--domain", f"cooking={domain}", "--n-domains", "0"], "--n-domains"),
    ]:
        code, out, err = cli("build", *args, "--out", tmp_path / "m")
        assert code == 2, (args, err)
        assert err.startswith("speclm: error:") and match in err and len(err.strip().splitlines()) == 1
    (tmp_path / "runs" / "tiny").mkdir(parents=True)  # `speclm run`'s default run folder is not a build's
    (tmp_path / "runs" / "tiny" / "config.toml").write_text("[corpus]\nsource = 'tiny'\n")
    code, out, err = cli("build", "--domain", f"cooking={domain}", "--out", tmp_path / "tiny")
    assert code == 2 and "not a build" in err and sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == ["config.toml"]
    import shutil

    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    code, out, err = cli("build", "--domain", f"cooking={domain}", "--out", tmp_path / "full")
    assert code == 2 and "not empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cooking", "full"]  # no run folder, no model folder
    (domain / "latin.txt").write_bytes(b"caf\xe9 au lait\n")  # found only when the files are read
    code, out, err = cli("build", "--domain", f"cooking={domain}", "--out", tmp_path / "m")
    assert code == 2 and "not UTF-8" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cooking", "full"]


def test_every_source_speclm_ships_or_fetches_has_a_licence():
    from speclm.corpus.default import tiny_corpus
    from speclm.corpus.licences import UNKNOWN, corpus_licences, licence_of
    from speclm.corpus.sources.catalog import DOMAINS, GENERIC_SOURCES

    for s in GENERIC_SOURCES + DOMAINS:
        assert licence_of(s.name) != UNKNOWN, s.name
    for name, docs in tiny_corpus().items():
        for source in {d.source for d in docs}:
            assert licence_of(source) != UNKNOWN, (name, source)
    rows = corpus_licences({"sources": {"generic": {"devil": {}}, "mine": {"notes": {}}}})
    assert rows == [{"set": "generic", "source": "devil", "licence": licence_of("devil")},
                    {"set": "mine", "source": "notes", "licence": UNKNOWN}]
