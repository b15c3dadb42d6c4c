"""Specialization-set sizes: parse "1M" / "250k" / "all" and slice the domain's train windows.

A size is a number of training tokens of the domain's train split. The slice is a prefix
of one seeded permutation of the train windows, so it is deterministic, spread over the
whole split (not only its first documents), and nested: the 250k set is inside the 1M set.
"""

from __future__ import annotations

import re

import numpy as np

from ..core.errors import SpeclmError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGbB]?)\s*$")
_MULT = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}


def parse_size(size: str | int) -> int | None:
    """Tokens in a size: "250k" -> 250000, "1M" -> 1000000, "1.5M", "4096"; "all" -> None."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise SpeclmError(f"size must be positive, got {size}")
        return size
    text = str(size).strip()
    if text.lower() == "all":
        return None
    m = _SIZE.match(text)
    if not m:
        raise SpeclmError(f"bad size {size!r}: expected a token count such as 250k, 1M, 4096 or 'all'")
    tokens = int(round(float(m.group(1)) * _MULT[m.group(2).lower()]))
    if tokens <= 0:
        raise SpeclmError(f"size must be positive, got {size!r}")
    return tokens


def size_label(size: str | int) -> str:
    """The canonical folder name of a size: "all", or the token count with k/M, e.g. 250k, 1M."""
    tokens = parse_size(size)
    if tokens is None:
        return "all"
    for mult, suffix in ((1_000_000, "M"), (1_000, "k")):
        if tokens % mult == 0:
            return f"{tokens // mult}{suffix}"
    return str(tokens)


def size_windows(size: str | int, n_windows: int, window: int, domain: str = "domain") -> int:
    """How many train windows a size takes (at least one); refuses a size the split cannot hold."""
    tokens = parse_size(size)
    if n_windows <= 0:
        raise SpeclmError(f"{domain}: the train split has no windows")
    if tokens is None:
        return n_windows
    available = n_windows * window
    if tokens > available:
        raise SpeclmError(
            f"size {size} ({tokens} tokens) is larger than the {domain} train split "
            f"({available} tokens in {n_windows} windows); use a smaller size or 'all'"
        )
    return max(1, tokens // window)


def slice_indices(size: str | int, n_windows: int, window: int, seed: int = 0, domain: str = "domain") -> np.ndarray:
    """The train-window indices of a size: a prefix of a seeded permutation, sorted."""
    n = size_windows(size, n_windows, window, domain)
    perm = np.random.default_rng([seed, 0x5123]).permutation(n_windows)
    return np.sort(perm[:n]).astype(np.int64)
