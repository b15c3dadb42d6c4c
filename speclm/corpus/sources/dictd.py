"""dictd dictionaries: a gzip (dictzip) ``.dict.dz`` of entries and a ``.index`` of
``headword<TAB>offset<TAB>length`` lines whose numbers are base64 digits
(alphabet ``A-Za-z0-9+/``, most significant first).

Several headwords can point at one entry: entries are deduplicated by offset. The
``00database...`` / ``00-database-...`` entries are the dictionary's own metadata and are
skipped.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from speclm.corpus.doc import Doc

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}


def b64_number(digits: str) -> int:
    """Decode a dictd base64 number ("b" -> 27, "BA" -> 64)."""
    value = 0
    for c in digits:
        try:
            value = value * 64 + _B64_VALUE[c]
        except KeyError:
            raise ValueError(f"not a dictd base64 number: {digits!r}") from None
    return value


def read_index(index_path: Path) -> list[tuple[str, int, int]]:
    """(headword, offset, length) for every line of a dictd index."""
    rows = []
    for line in Path(index_path).read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        rows.append((parts[0], b64_number(parts[1]), b64_number(parts[2])))
    return rows


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_entries(dict_path: Path, index_path: Path) -> list[tuple[int, str, str]]:
    """(offset, first headword, text) of each distinct entry, in file order."""
    with gzip.open(dict_path, "rb") as f:  # dictzip is plain gzip to a sequential reader
        data = f.read()
    seen: dict[int, tuple[int, str, str]] = {}
    for word, offset, length in read_index(index_path):
        if word.startswith(("00database", "00-database")) or offset in seen:
            continue
        seen[offset] = (offset, word, _decode(data[offset : offset + length]))
    return [seen[o] for o in sorted(seen)]


def dictd_docs(folder: Path, name: str, source: str, keep=None, clean=None) -> list[Doc]:
    """Documents of the dictd dictionary ``<folder>/<name>.dict.dz`` + ``<name>.index``:
    one per entry, id ``<source>:<offset>``. ``keep(text)`` filters entries and
    ``clean(text)`` rewrites them."""
    folder = Path(folder)
    docs = []
    for offset, _word, text in read_entries(folder / f"{name}.dict.dz", folder / f"{name}.index"):
        if keep is not None and not keep(text):
            continue
        docs.append(Doc(f"{source}:{offset}", clean(text) if clean else text, source))
    return docs


_GCIDE_BRACES = re.compile(r"[{}]")
_SOURCE_TAG = re.compile(r"^\s*\[([^\]\n]+)\]\s*$", re.MULTILINE)


def strip_gcide_markup(text: str) -> str:
    """Drop GCIDE's ``{...}`` cross-reference/italic braces, keeping what they enclose."""
    return _GCIDE_BRACES.sub("", text)


def is_wordnet_only(text: str) -> bool:
    """True for a GCIDE entry whose every source line (``[WordNet 1.5]``,
    ``[1913 Webster]``, ``[PJC]``...) names WordNet: those overlap the wordnet domain."""
    tags = _SOURCE_TAG.findall(text)
    return bool(tags) and all(t.strip().startswith("WordNet") for t in tags)
