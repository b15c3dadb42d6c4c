"""The one rule for every output path a user names (``--out``, ``--name``), checked before
anything is written (docs/reliability.md):

- a ``--name`` is a plain file name (letters, digits, ``.``, ``_``, ``-``; no folder, not
  hidden, not empty): the file stays in the folder the command writes to;
- an ``--out`` file is a new file, or a file this command wrote before (known by its kind
  and content); never a folder, never a file of a run (config, manifest, parquet, token
  shard, checkpoint file) or any other existing file;
- an ``--out`` folder is new, empty, or one this command wrote before (known by its marker).

Each refusal is one line (a :class:`SpeclmError`: exit 2).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .errors import SpeclmError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_name(name: str, what: str = "--name") -> str:
    """A results file name under the run's ``eval/`` folder: a plain name, never a path."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith("."):
        raise SpeclmError(f"{what} {name!r} is not a plain file name (letters, digits, '.', '_', '-'; "
                          "no folder, not hidden, not empty): the file goes under the run's eval/ folder")
    return name


def check_out_file(path: str | Path, suffix: str, is_own: Callable[[Path], bool], kind: str,
                   what: str = "--out") -> Path:
    """``path`` as an output file of kind ``kind`` (e.g. "an eval result"), or a one-line refusal."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise SpeclmError(f"{what} {str(path)!r} is not a file name; give a new {suffix} file")
    if p.suffix.lower() != suffix:
        raise SpeclmError(f"{what} {p} must be a {suffix} file ({kind}); give a new file name ending in {suffix}")
    if p.is_symlink():
        raise SpeclmError(f"{what} {p} is a link; give a new {suffix} file")
    if p.exists():
        if p.is_dir():
            raise SpeclmError(f"{what} {p} is a folder; give a new {suffix} file")
        if not is_own(p):
            raise SpeclmError(f"{what} {p} exists and is not {kind} written by speclm; it is left as it was: "
                              f"give a new file name")
    if p.parent.exists() and not p.parent.is_dir():
        raise SpeclmError(f"{what} {p}: {p.parent} is a file, not a folder")
    return p


def check_out_folder(path: str | Path, is_own: Callable[[Path], bool], kind: str, what: str = "--out") -> Path:
    """``path`` as an output folder: new, empty, or ``kind`` that this command wrote before."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SpeclmError(f"{what} {p} is a file; give a new or empty folder")
    if p.is_dir() and any(p.iterdir()) and not is_own(p):
        raise SpeclmError(f"{what} {p} is not empty and not {kind}; give a new or empty folder")
    return p
