"""Stage manifests: what a stage was computed from, so reruns are no-ops or recompute.

Each stage folder holds ``manifest.json`` with the hash of the stage's config section,
the fingerprints of its inputs (an upstream stage's fingerprint, or a user file's
content hash) and the list of outputs it wrote. The stage's own ``fingerprint`` hashes
all of that, so downstream stages chain on it without rehashing big files.
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
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def fingerprint(stage: str, config: Any, inputs: Mapping[str, str]) -> str:
    return hash_obj({"stage": stage, "config": config, "inputs": dict(inputs)})


def is_fresh(stage_dir: str | Path, stage: str, config: Any, inputs: Mapping[str, str]) -> bool:
    """True when the stage folder holds a manifest for exactly this config and these
    inputs, and every output it lists still exists."""
    m = read(stage_dir)
    if m is None or m.get("fingerprint") != fingerprint(stage, config, inputs):
        return False
    return all((Path(stage_dir) / o).exists() for o in m.get("outputs", []))


def write(
    stage_dir: str | Path,
    stage: str,
    config: Any,
    inputs: Mapping[str, str],
    outputs: Iterable[str],
    summary: Mapping[str, Any] | None = None,
) -> dict:
    """Write the manifest last, after every output is in place."""
    m = {
        "stage": stage,
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
    if m is None:
        raise SpeclmError(f"{what} not found in {stage_dir}: run `speclm {what}` first")
    return m["fingerprint"]
