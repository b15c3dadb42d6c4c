"""Licence texts: SPDX (npm spdx-license-list, CC0) and ScanCode (PyPI licensedcode-data,
CC-BY-4.0)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from speclm.corpus.doc import Doc


def spdx_docs(licenses_dir: Path) -> list[Doc]:
    """One document per ``<KEY>.json`` of spdx-license-list: its ``licenseText``;
    id ``spdx:<KEY>``."""
    docs = []
    for path in sorted(Path(licenses_dir).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        text = data.get("licenseText") or ""
        docs.append(Doc(f"spdx:{path.stem}", text, "spdx"))
    return docs


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)
_SPDX_KEY = re.compile(r"^spdx_license_key:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", re.MULTILINE)


def split_front_matter(text: str) -> tuple[str, str]:
    """(YAML front matter, body) of a ScanCode ``.LICENSE`` file; front matter "" if none."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return "", text
    return m.group(1), text[m.end():]


def spdx_key_of(front_matter: str) -> str | None:
    """The ``spdx_license_key`` named in ScanCode front matter, or None."""
    m = _SPDX_KEY.search(front_matter)
    return m.group(1).strip() if m else None


def scancode_docs(licenses_dir: Path, skip_spdx_keys: set[str] = frozenset()) -> list[Doc]:
    """One document per ScanCode ``*.LICENSE`` file (its body, front matter dropped),
    id ``scancode:<key>``, skipping those whose spdx_license_key is in
    ``skip_spdx_keys`` (compared case-insensitively)."""
    skip = {k.lower() for k in skip_spdx_keys}
    docs = []
    for path in sorted(Path(licenses_dir).glob("*.LICENSE")):
        front, body = split_front_matter(path.read_text(encoding="utf-8", errors="replace"))
        key = spdx_key_of(front)
        if key and key.lower() in skip:
            continue
        docs.append(Doc(f"scancode:{path.stem}", body, "scancode"))
    return docs
