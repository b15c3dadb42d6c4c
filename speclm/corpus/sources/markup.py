"""Text formats: man pages (groff), POD (pod2text), HTML (html.parser), fortune files,
the POS-tagged Brown corpus, and the plain-text helpers the other sources share."""

from __future__ import annotations

import gzip
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from speclm.corpus.sources.fetch import SourceUnavailable

RENDER_TIMEOUT_S = 60


def read_maybe_gzip(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when it ends in .gz."""
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def decode(raw: bytes) -> str:
    """UTF-8, else Latin-1 (old docs and man pages)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# --- man pages -------------------------------------------------------------------------

_OVERSTRIKE = re.compile(r".\x08")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def render_man(path: Path) -> str:
    """Plain text of a (possibly gzipped) man page: ``groff -Tutf8 -man -P-cbou``.
    Pages that are only ``.so`` links to another page render to (almost) nothing."""
    source = read_maybe_gzip(path)
    try:
        proc = subprocess.run(
            ["groff", "-Tutf8", "-man", "-P-cbou", "-t", "-e"],
            input=source, capture_output=True, timeout=RENDER_TIMEOUT_S,
        )
    except FileNotFoundError:
        raise SourceUnavailable("groff is not installed (apt-get install groff)") from None
    except subprocess.TimeoutExpired:
        return ""
    text = proc.stdout.decode("utf-8", errors="replace")
    return _ANSI.sub("", _OVERSTRIKE.sub("", text))


def is_so_link(path: Path) -> bool:
    """True for a man page that is only ``.so other/page`` (an alias)."""
    head = read_maybe_gzip(path)[:200].lstrip()
    return head.startswith(b".so ") and head.count(b"\n") <= 1


# --- POD -------------------------------------------------------------------------------


def render_pod(path: Path) -> str:
    """Plain text of a (possibly gzipped) POD file, through Perl's Pod::Text (pod2text)."""
    source = read_maybe_gzip(path)
    try:
        proc = subprocess.run(["pod2text", "-"], input=source, capture_output=True, timeout=RENDER_TIMEOUT_S)
    except FileNotFoundError:
        raise SourceUnavailable("pod2text (perl) is not installed") from None
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout.decode("utf-8", errors="replace")


# --- HTML ------------------------------------------------------------------------------

_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
               "table", "dt", "dd", "ul", "ol", "dl", "section", "title", "blockquote", "hr"}
_SKIP_TAGS = {"script", "style", "head"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP_TAGS:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag):
        if tag in _SKIP_TAGS and self.skip:
            self.skip -= 1
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self.skip:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """Visible text of an HTML page: tags dropped, entities decoded, blocks on their own
    lines, <script>/<style>/<head> skipped, <pre> kept as is."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


# --- fortune files ---------------------------------------------------------------------


def split_fortunes(text: str) -> list[str]:
    """The fortunes of a fortune file: the text between lines holding only ``%``."""
    return [chunk.strip("\n") for chunk in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE) if chunk.strip()]


# --- Brown corpus ----------------------------------------------------------------------

_TAG = re.compile(r"/[^\s/]+(?=\s|$)")


def strip_brown_tags(text: str) -> str:
    """Plain text of a POS-tagged Brown file (``The/at jury/nn said/vbd ./.``): tags
    dropped, quotes and punctuation spacing restored."""
    lines = []
    for line in text.splitlines():
        words = _TAG.sub("", line.strip())
        words = words.replace("``", '"').replace("''", '"')
        words = re.sub(r" ([.,;:?!)])", r"\1", words)
        words = re.sub(r"\( ", "(", words)
        lines.append(words)
    return "\n".join(lines)
