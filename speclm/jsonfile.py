"""Reading a JSON file that an earlier step must have written (a stage summary, a job's record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import SpeclmError


def read_required_json(path: str | Path, missing: str) -> Any:
    """The parsed JSON at ``path``; ``SpeclmError(missing)`` when the file is not there.

    ``missing`` is the one-line message the user sees, best naming the command that writes it.
    """
    p = Path(path)
    if not p.exists():
        raise SpeclmError(missing)
    return json.loads(p.read_text(encoding="utf-8"))
