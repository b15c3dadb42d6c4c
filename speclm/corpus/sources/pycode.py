"""Python source: the standard library on disk (``sysconfig.get_paths()['stdlib']``,
PSF licence), tests, site-packages and generated/vendored folders excluded."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from speclm.corpus.doc import Doc

EXCLUDED_DIRS = {"test", "tests", "site-packages", "dist-packages", "idle_test", "__pycache__",
                 "lib2to3", "turtledemo", "config-3.11-x86_64-linux-gnu"}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def python_files(root: Path) -> list[Path]:
    """``**/*.py`` under ``root``, without test folders, ``test_*.py`` and site-packages."""
    root = Path(root)
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_") or path.is_symlink():
            continue
        out.append(path)
    return out


def python_code_docs(root: Path | None = None) -> list[Doc]:
    """One document per module, id ``python_code:<relative/path.py>``."""
    root = Path(root) if root else stdlib_dir()
    docs = []
    for path in python_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append(Doc(f"python_code:{path.relative_to(root).as_posix()}", text, "python_code"))
    return docs
