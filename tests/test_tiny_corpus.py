"""The tiny corpus that ships in the package: present, loadable, sized for the tiny preset."""

from pathlib import Path

from speclm.corpus.default import TINY_DIR, tiny_corpus
from speclm.corpus.doc import Doc


def test_tiny_corpus_loads_with_generic_and_three_domains():
    sets = tiny_corpus()
    assert list(sets)[0] == "generic"
    domains = [name for name in sets if name != "generic"]
    assert len(domains) >= 3
    for name, docs in sets.items():
        assert all(isinstance(d, Doc) for d in docs)
        assert all(d.text.strip() == d.text and d.text for d in docs), name
        ids = [d.id for d in docs]
        assert len(ids) == len(set(ids)), f"duplicate ids in {name}"


def test_tiny_corpus_sizes():
    sets = tiny_corpus()
    mb = {name: sum(len(d.text.encode("utf-8")) for d in docs) / 1e6 for name, docs in sets.items()}
    # ~3 bytes/token at most: enough for ~1,500 generic and ~150 domain 64-token windows
    assert mb["generic"] >= 0.3
    assert len(sets["generic"]) >= 200
    for name in sets:
        if name != "generic":
            assert mb[name] >= 0.05, name
            assert len(sets[name]) >= 20, name
    on_disk = sum(p.stat().st_size for p in Path(TINY_DIR).iterdir() if p.is_file())
    assert on_disk <= 2_000_000


def test_every_source_is_named_in_the_licences_file():
    licences = (Path(TINY_DIR).parent / "LICENSES.md").read_text(encoding="utf-8")
    sources = {d.source for docs in tiny_corpus().values() for d in docs}
    for source in sources:
        assert f"`{source}`" in licences, f"source {source} has no licence entry"
