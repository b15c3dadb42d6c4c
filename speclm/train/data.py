"""Batch samplers over token windows (``speclm.tokens.shards.Windows``).

A sampler is a pure function of a seed and a position: ``sampler.batch(position)``
returns the same batch every time, so a resumed run restarts the data stream exactly
where it stopped by remembering one integer. Under DDP the loop asks rank ``r`` of
``W`` for position ``p * W + r``; samplers know nothing of it.

A batch is ``(inputs, targets)`` (int64 ``[B, window]``), or ``(inputs, targets,
extras)`` where ``extras`` is a dict of per-example tensors (e.g. ``{"cluster": ids}``)
that the default loss passes to ``model(inputs, targets, **extras)``.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Protocol, Sequence

import numpy as np
import torch

from ..core.errors import SpeclmError


class WindowsLike(Protocol):
    """What samplers read: the documented ``Windows`` API."""

    def __len__(self) -> int: ...

    def batch(self, idx: np.ndarray) -> np.ndarray: ...


class ArrayWindows:
    """Non-overlapping windows over an in-memory token stream, with the ``Windows`` API
    (``len``, ``w[i]``, ``w.batch(idx)``): window i is ``tokens[i*window : i*window + window + 1]``."""

    def __init__(self, tokens: np.ndarray, window: int):
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or window <= 0:
            raise SpeclmError("ArrayWindows needs a 1-D token array and a positive window")
        self.tokens, self.window = tokens, window
        self.n = max(0, (len(tokens) - 1) // window)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = i * self.window
        return self.tokens[s : s + self.window + 1].astype(np.int64)

    def batch(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        offsets = idx[:, None] * self.window + np.arange(self.window + 1)[None, :]
        return self.tokens[offsets].astype(np.int64)


def window_length(windows) -> int:
    w = getattr(windows, "window", None)
    if w is None:
        w = len(windows.batch(np.zeros(1, dtype=np.int64))[0]) - 1
    return int(w)


def to_batch(rows: np.ndarray, extras: Optional[Mapping[str, np.ndarray]] = None, idx: Optional[np.ndarray] = None):
    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    x, y = t[:, :-1], t[:, 1:]
    if not extras:
        return x, y
    return x, y, {k: torch.from_numpy(np.asarray(v[idx])) for k, v in extras.items()}


class WindowSampler:
    """Shuffled epochs over windows.

    ``indices`` picks which windows (repeats allowed: a resampled stream such as
    importance sampling's is just an index array); default: all of them. Epoch ``e`` is
    a permutation of ``indices`` drawn from ``(seed, e)``; batches run across epoch
    boundaries, so every position is defined. ``extras`` maps a name to an array aligned
    with the windows (e.g. cluster ids); each batch carries their values.
    """

    def __init__(
        self,
        windows: WindowsLike,
        batch_size: int,
        seed: int = 0,
        indices: Optional[Sequence[int] | np.ndarray] = None,
        extras: Optional[Mapping[str, np.ndarray]] = None,
        shuffle: bool = True,
    ):
        if batch_size <= 0:
            raise SpeclmError(f"batch size must be positive, got {batch_size}")
        self.windows, self.batch_size, self.seed, self.shuffle = windows, batch_size, seed, shuffle
        self.indices = np.arange(len(windows), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        if len(self.indices) == 0:
            raise SpeclmError("no training windows to sample from (the split is empty or too small for one window)")
        if self.indices.min() < 0 or self.indices.max() >= len(windows):
            raise SpeclmError(f"window indices out of range [0, {len(windows)})")
        self.extras = dict(extras or {})
        for k, v in self.extras.items():
            if len(v) != len(windows):
                raise SpeclmError(f"extra {k!r} has {len(v)} values for {len(windows)} windows")
        self.seq_len = window_length(windows)
        self._perms: dict[int, np.ndarray] = {}

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = self.indices[rng.permutation(len(self.indices))]
        return self._perms[epoch]

    def window_ids(self, position: int) -> np.ndarray:
        n = len(self.indices)
        offsets = position * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epochs, within = offsets // n, offsets % n
        out = np.empty(self.batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self._epoch_order(int(e))[within[m]]
        return out

    def batch(self, position: int):
        idx = self.window_ids(position)
        return to_batch(self.windows.batch(idx), self.extras, idx)

    def epochs_at(self, position: int) -> float:
        return position * self.batch_size / len(self.indices)


class ClusterBatchSampler:
    """Micro-batches that each hold windows of one cluster only (so one expert per batch).

    Epoch e: each cluster's windows in a seeded order, cut into batches of ``batch_size``
    (a cluster's last, short batch is topped up from the start of its own order), and the
    batches of all clusters shuffled together. Every window is seen once per epoch, the
    clusters in proportion to their sizes, and ``batch(position)`` is a pure function of
    (seed, position) like :class:`WindowSampler` (so a run resumes).
    """

    def __init__(self, windows, batch_size: int, assign: np.ndarray, seed: int = 0, extra_name: str = "expert"):
        if batch_size <= 0:
            raise SpeclmError(f"batch size must be positive, got {batch_size}")
        assign = np.asarray(assign, dtype=np.int64)
        if len(assign) != len(windows):
            raise SpeclmError(f"{len(assign)} cluster ids for {len(windows)} windows")
        if len(assign) == 0:
            raise SpeclmError("no training windows to sample from")
        self.windows, self.batch_size, self.seed, self.assign, self.extra_name = windows, batch_size, seed, assign, extra_name
        self.clusters = [np.flatnonzero(assign == c) for c in np.unique(assign)]
        self.n_batches = sum(math.ceil(len(m) / batch_size) for m in self.clusters)
        self.seq_len = window_length(windows)
        self._epochs: dict[int, np.ndarray] = {}

    def _epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            if len(self._epochs) > 2:
                self._epochs.clear()
            rng = np.random.default_rng([self.seed, epoch, 0x9E])
            batches = []
            for members in self.clusters:
                order = members[rng.permutation(len(members))]
                n = math.ceil(len(order) / self.batch_size)
                padded = np.resize(order, n * self.batch_size)  # tops up from the start of the order
                batches.append(padded.reshape(n, self.batch_size))
            all_batches = np.concatenate(batches)
            self._epochs[epoch] = all_batches[rng.permutation(len(all_batches))]
        return self._epochs[epoch]

    def window_ids(self, position: int) -> np.ndarray:
        return self._epoch(position // self.n_batches)[position % self.n_batches]

    def batch(self, position: int):
        idx = self.window_ids(position)
        return to_batch(self.windows.batch(idx), {self.extra_name: self.assign}, idx)


def eval_indices(n_windows: int, max_windows: int = 0) -> np.ndarray:
    """A deterministic, evenly spread subset of at most ``max_windows`` windows (0 = all)."""
    if max_windows <= 0 or max_windows >= n_windows:
        return np.arange(n_windows, dtype=np.int64)
    return np.unique(np.linspace(0, n_windows - 1, max_windows).round().astype(np.int64))
