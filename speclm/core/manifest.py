"""Manifests: the one way speclm decides "is this already done, for this config?".

Each stage folder holds ``manifest.json`` with the hash of the stage's config section,
the fingerprints of its inputs (an upstream stage's fingerprint, or a user file's
content hash) and the list of outputs it wrote. The stage's own ``fingerprint`` hashes
all of that, so downstream stages chain on it without rehashing big files.

A method's job folder (a pretraining or a specialization) uses the same file: the
manifest is written with ``done: false`` when the job starts (so a killed job resumes in
the same folder, and a folder left by another config is wiped) and again with ``done:
true`` and the job's summary when it finishes (:func:`open_job`, :func:`finish_job`).
The training loop keeps its own resume state inside the folder (``checkpoint/``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import atomic

MANIFEST = "manifest.json"


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _canonical(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def hash_obj(obj: Any) -> str:
    """sha256 of the canonical JSON of obj (dataclasses, dicts, lists, scalars)."""
    blob = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def hash_tree(path: str | Path) -> str:
    """Content hash of a file or of every file under a folder (names and bytes)."""
    path = Path(path)
    if path.is_file():
        return hash_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(hash_file(p).encode())
    return h.hexdigest()


def read(stage_dir: str | Path) -> dict | None:
    p = Path(stage_dir) / MANIFEST
    if not p.exists():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    # a manifest of another shape (a list, no fingerprint) is stale, never a traceback
    return m if isinstance(m, dict) and isinstance(m.get("fingerprint"), str) else None


def fingerprint(stage: str, config: Any, inputs: Mapping[str, str]) -> str:
    return hash_obj({"stage": stage, "config": config, "inputs": dict(inputs)})


def is_fresh(stage_dir: str | Path, stage: str, config: Any, inputs: Mapping[str, str]) -> bool:
    """True when the stage folder holds a finished manifest for exactly this config and
    these inputs, and every output it lists still exists."""
    m = read(stage_dir)
    if m is None or m.get("fingerprint") != fingerprint(stage, config, inputs) or not m.get("done", True):
        return False
    return all((Path(stage_dir) / o).exists() for o in m.get("outputs", []))


def write(
    stage_dir: str | Path,
    stage: str,
    config: Any,
    inputs: Mapping[str, str],
    outputs: Iterable[str],
    summary: Mapping[str, Any] | None = None,
    done: bool = True,
) -> dict:
    """Write the manifest last, after every output is in place (``done=False``: a job that
    has started, see :func:`open_job`)."""
    m = {
        "stage": stage,
        "done": done,
        "fingerprint": fingerprint(stage, config, inputs),
        "config": _canonical(config),
        "inputs": dict(inputs),
        "outputs": sorted(outputs),
        "summary": _canonical(summary or {}),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_json(Path(stage_dir) / MANIFEST, m)
    return m


def require_fingerprint(stage_dir: str | Path, what: str) -> str:
    """The fingerprint of an upstream stage, or a clear error telling which command to run."""
    from .errors import SpeclmError

    m = read(stage_dir)
    if m is None and (Path(stage_dir) / MANIFEST).exists():
        raise SpeclmError(
            f"{Path(stage_dir) / MANIFEST} is corrupt (not a stage manifest): rebuild it with `speclm {what} --force`"
        )
    if m is None:
        raise SpeclmError(f"{what} not found in {stage_dir}: run `speclm {what}` first")
    return m["fingerprint"]


# -- method jobs: a folder that one training writes, keyed by what it was computed from --

JOB = "job"


def _legacy_job(folder: Path, key_hash: str) -> dict | None:
    """A job folder written before jobs had manifests (job.json + done.json): its manifest,
    when it was made for the same key, so finished work is not redone."""
    try:
        old = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(old, dict) or old.get("hash") != key_hash:
        return None
    done = folder / "done.json"
    summary = json.loads(done.read_text(encoding="utf-8")) if done.exists() else {}
    return write(folder, JOB, old["key"], {}, [], summary, done=done.exists())


_JOB_LOCKS: dict[str, Any] = {}


def _lock_job(folder: Path) -> None:
    """Hold ``folder``'s lock from :func:`open_job` to :func:`finish_job`: a second
    process on the same job waits (saying so), then finds it done."""
    import contextlib
    import sys

    from .locks import hold

    name = str(folder.resolve())
    if name in _JOB_LOCKS:
        return
    stack = contextlib.ExitStack()
    stack.enter_context(hold(folder, f"job {folder}", log=lambda m: print(f"speclm: {m}", file=sys.stderr, flush=True)))
    _JOB_LOCKS[name] = stack


def release_job(folder: str | Path) -> None:
    """Let other processes at a job folder (done by :func:`finish_job`; a job that failed
    keeps its lock until this process ends, when the OS frees it)."""
    stack = _JOB_LOCKS.pop(str(Path(folder).resolve()), None)
    if stack is not None:
        stack.close()


def open_job(folder: str | Path, key: Mapping[str, Any], force: bool = False) -> bool:
    """Prepare a job folder for ``key``. True when it already holds the finished job for
    this key. A folder made for another key (the config or the inputs changed), or any
    folder under ``force``, is wiped; a started job for the same key is kept, so the
    training loop resumes it. The job's lock is held from here to :func:`finish_job`."""
    folder = Path(folder)
    _lock_job(folder)
    try:
        done = _open_job(folder, key, force)
    except BaseException:
        release_job(folder)
        raise
    if done:
        release_job(folder)
    return done


def _open_job(folder: Path, key: Mapping[str, Any], force: bool) -> bool:
    import shutil

    want = fingerprint(JOB, key, {})
    m = read(folder)
    if m is None and folder.exists():
        m = _legacy_job(folder, hash_obj(key))
    if folder.exists() and (force or m is None or m.get("fingerprint") != want):
        shutil.rmtree(folder)
        m = None
    if m is not None and m.get("done"):
        return True
    if m is None:
        write(folder, JOB, key, {}, [], done=False)
    return False


def finish_job(folder: str | Path, summary: Mapping[str, Any]) -> None:
    """Mark a job finished with its summary (written last)."""
    m = read(folder)
    if m is None:
        raise RuntimeError(f"{folder}: finish_job without open_job")
    write(folder, JOB, m["config"], {}, [], summary, done=True)
    release_job(folder)


def is_done(folder: str | Path) -> bool:
    m = read(folder)
    return bool(m and m.get("done"))


def job_key(folder: str | Path) -> dict:
    """The key a job folder was made for."""
    m = read(folder)
    if m is None:
        from .errors import SpeclmError

        raise SpeclmError(f"{folder} holds no job (no {MANIFEST})")
    return m["config"]


def job_summary(folder: str | Path) -> dict:
    """What a finished job reported."""
    m = read(folder)
    if m is None or not m.get("done"):
        from .errors import SpeclmError

        raise SpeclmError(f"{folder} is not finished (no finished {MANIFEST})")
    return m.get("summary", {})
