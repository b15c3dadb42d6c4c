"""Atomic writes: a temporary file in the same folder, fsync, then rename.

A killed run never leaves a half-written artifact under its final name, so a later run
can trust any file that exists.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private files (0600) and folders (0700); an artifact gets the
# permissions any other new file of this process would get (0644/0755 under umask 022)
_UMASK = _read_umask()
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _size(p: Path) -> int:
    try:
        if p.is_dir():
            return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
        return p.stat().st_size
    except OSError:
        return 0


def _write_error(e: OSError, path: Path, nbytes: int | None = None):
    """A full disk or a folder we may not write: the one-line error naming the file (and how
    much was being written); None for any other OSError (a bug: keep the traceback)."""
    from .errors import SpeclmError

    if e.errno == errno.ENOSPC:  # whichever file the write was for, the disk is full
        size = f" while writing {nbytes:,} bytes" if nbytes else ""
        return SpeclmError(f"no space left on the device holding {path}{size}; free some space (or move the run "
                           f"folder) and rerun the same command: it resumes")
    if e.filename and not os.path.abspath(str(e.filename)).startswith(os.path.abspath(path.parent)):
        return None  # e.g. an input file that could not be read: not ours to explain
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SpeclmError(f"cannot write {path}: {e.strerror}; make {path.parent} writable or choose another run folder")
    if e.errno in (errno.ENOTDIR, errno.EEXIST) and not path.parent.is_dir():
        return SpeclmError(f"cannot write {path}: {path.parent} is not a folder")
    return None


@contextlib.contextmanager
def _disk_errors(path: Path, nbytes=None) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        err = _write_error(e, path, nbytes() if callable(nbytes) else nbytes)
        if err is None:
            raise
        raise err from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success, fsync and rename it into place.

    Use it for writers that want a file name (numpy, pyarrow, safetensors, tokenizers).
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    with _disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _disk_errors(path, lambda: _size(tmp_path)):
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp_path, FILE_MODE)
            os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with _disk_errors(Path(path), len(data)):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_npy(path: str | os.PathLike, array) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None):
    """``np.load`` without pickle; a crafted or damaged file (object array, bad header,
    truncated) is a one-line error naming it, never code run or a traceback."""
    import numpy as np

    from .errors import SpeclmError

    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpeclmError(f"{path} is not a plain numeric .npy array ({first}); rebuild the stage that wrote it with --force") from None
    except OSError as e:
        raise SpeclmError(f"{path} cannot be read ({e.strerror or e}); rebuild the stage that wrote it with --force") from None


def _artifact_modes(folder: Path) -> None:
    """Every file and folder under ``folder`` gets the mode of any other artifact (some
    writers, e.g. safetensors, create private 0600 files)."""
    os.chmod(folder, DIR_MODE)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), DIR_MODE)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, FILE_MODE)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` whole.

    For stages whose output is a folder of many files: readers see either the old
    folder or the complete new one, never a mix.
    """
    path = Path(path)
    with _disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _disk_errors(path, lambda: _size(tmp)):
            yield tmp
        _artifact_modes(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer of ``path`` left behind (``.NAME.*.tmp`` files and
    folders, ``.NAME.old``). A writer killed between the two renames of
    :func:`atomic_dir` leaves no ``path`` but a complete ``.NAME.old``: that one is put
    back, not removed. Call it before rebuilding ``path``, never while another process
    writes it (hold its lock). Returns the removed paths."""
    path = Path(path)
    if not path.parent.exists():
        return []
    stale = [p for p in path.parent.glob(f".{path.name}.*.tmp")]
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists() and not path.is_symlink():
        os.replace(old, path)
        _fsync_dir(path.parent)
    elif old.exists():
        stale.append(old)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file or folder (and its ``.NAME.old``) if there; hold the writer's lock."""
    path = Path(path)
    for p in (path, path.with_name(f".{path.name}.old")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line and flush it (logs; a torn last line is skipped by readers)."""
    path = Path(path)
    line = json.dumps(row, sort_keys=True, default=str) + "\n"
    with _disk_errors(path, len(line)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def read_jsonl_numbered(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(1-based line number, row) for each JSON object of a JSONL file, blank lines skipped
    (they keep their numbers), a torn (incomplete) last line skipped; a bad line elsewhere
    is a one-line error naming it. For readers whose own checks of a row name its line."""
    rows: list[tuple[int, dict]] = []
    path = Path(path)
    if not path.exists():
        return rows
    from .errors import SpeclmError

    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1:  # a torn last line: a writer was killed mid-row
                break
            row = None
        if not isinstance(row, dict):  # a torn or edited line in the middle: never guess, say where
            raise SpeclmError(
                f"{path} line {i + 1} is not a JSON object (torn or edited); delete or repair that line "
                f"and rerun (a deleted results row is recomputed)"
            )
        rows.append((i + 1, row))
    return rows


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of JSON objects, skipping a torn (incomplete) last line; a bad line
    elsewhere is a one-line error naming it (see :func:`read_jsonl_numbered`)."""
    return [row for _, row in read_jsonl_numbered(path)]


def read_json_file(path: str | Path, fix: str, want: type = dict) -> Any:
    """The JSON of a file speclm wrote, as a ``want`` (a dict by default); an empty, torn,
    unreadable or wrong-shaped file is one line naming the file and ``fix`` (what to do:
    a command with ``--force`` or ``--restart``, or delete the file)."""
    from .errors import SpeclmError

    p = Path(path)
    text = read_required_text(p, fix, "a JSON file")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise SpeclmError(f"{p} is damaged (not valid JSON); {fix}") from None
    if not isinstance(obj, want):
        raise SpeclmError(f"{p} is damaged (a JSON {type(obj).__name__}, not {_kind(want)}); {fix}")
    return obj


def _kind(want: type) -> str:
    return {dict: "an object", list: "a list"}.get(want, want.__name__)


def read_required_json(path: str | Path, missing: str, fix: str = "") -> Any:
    """The parsed JSON object at ``path``; ``SpeclmError(missing)`` when the file is not there.

    ``missing`` is the one-line message the user sees, best naming the command that writes it
    (a stage summary, a job's record); ``fix`` what to do when the file is damaged (default:
    the same advice as ``missing``).
    """
    from .errors import SpeclmError

    p = Path(path)
    if not p.exists():
        raise SpeclmError(missing)
    return read_json_file(p, fix or f"rebuild it ({missing.split(': ', 1)[-1]})")


def read_required_text(path: str | Path, fix: str, kind: str = "a file") -> str:
    """The text of a file speclm wrote (a config, a summary): an undecodable, unreadable,
    folder-shaped or empty file is one line naming it and ``fix``."""
    from .errors import SpeclmError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpeclmError(f"{p} is damaged (not text); {fix}") from None
    except IsADirectoryError:
        raise SpeclmError(f"{p} is a folder, not {kind}; {fix}") from None
    except OSError as e:
        raise SpeclmError(f"{p} cannot be read ({e.strerror or e}); {fix}") from None
    if not text.strip():
        raise SpeclmError(f"{p} is empty; {fix}")
    return text
