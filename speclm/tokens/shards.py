"""Read the packed token streams of the tokens stage (memory-mapped; cheap to open).

Layout of ``tokens/`` (see docs/ARCHITECTURE.md):
``<set>/<split>.tokens.bin`` the token stream (uint16, or uint32 for vocabularies over
65,536): each document is preceded by ``<|endoftext|>`` (id 0);
``<set>/<split>.docs.npy`` int64 [n_docs, 2], (start, length) of each document's tokens;
``<set>/<split>.windows.npy`` int64 [n_windows, 2], (start, document index of the first
token). Window ``i`` starts at ``i * window`` and an example is the ``window + 1`` tokens
from there, so a stream of ``n`` tokens has ``(n - 1) // window`` windows.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from ..core import atomic, manifest
from ..core.errors import SpeclmError

SPLITS = ("train", "valid", "test")
FIX = "rebuild the tokens with `speclm tokens --force`"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def stream_paths(tokens_dir: str | Path, set_name: str, split: str) -> dict[str, Path]:
    base = Path(tokens_dir) / set_name
    return {
        "tokens": base / f"{split}.tokens.bin",
        "docs": base / f"{split}.docs.npy",
        "windows": base / f"{split}.windows.npy",
    }


class Windows:
    """The non-overlapping windows of one set and split."""

    def __init__(self, tokens: np.ndarray, windows: np.ndarray, docs: np.ndarray, window: int, tokenizer_fn):
        self.tokens = tokens  # memmap of the stream
        self.index = windows  # [n, 2] (start, doc index)
        self.docs = docs  # [n_docs, 2] (start, length)
        self.window = window
        self._tokenizer_fn = tokenizer_fn
        self._offsets = np.arange(window + 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def starts(self) -> np.ndarray:
        return self.index[:, 0]

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range ({n} windows)")
        s = int(self.index[i, 0])
        return np.asarray(self.tokens[s : s + self.window + 1], dtype=np.int64)

    def batch(self, idx) -> np.ndarray:
        """int64 [len(idx), window + 1]: the windows ``idx`` (any order, repeats allowed)."""
        starts = np.asarray(self.index[:, 0])[np.asarray(idx, dtype=np.int64)]
        return np.asarray(self.tokens[starts[:, None] + self._offsets], dtype=np.int64)

    def doc_index(self, i: int) -> int:
        return int(self.index[i, 1])

    def text(self, i: int) -> str:
        """The text of window ``i`` (its first ``window`` tokens, separators dropped)."""
        return self._tokenizer_fn().decode(self[i][: self.window].tolist(), skip_special_tokens=True)

    @property
    def n_tokens(self) -> int:
        return int(len(self.tokens))


class TokenShards:
    """The tokens stage's output: tokenizer, per set/split streams and window indexes."""

    def __init__(self, tokens_dir: str | Path):
        self.dir = Path(tokens_dir)
        m = manifest.read(self.dir)
        corrupt = f"{self.dir / manifest.MANIFEST} is corrupt; rebuild the tokens with `speclm tokens --force`"
        if m is None and (self.dir / manifest.MANIFEST).exists():
            raise SpeclmError(corrupt)
        if m is None or not (self.dir / "tokenizer.json").exists():
            raise SpeclmError(f"no tokens in {self.dir}: run `speclm tokens` (or `speclm run`) first")
        self.manifest = m
        info = m.get("summary", {})
        try:
            self.vocab_size = int(info["vocab_size"])
            self.window = int(info["window"])
            self.dtype = np.dtype(info["dtype"])
            self.tokenizer_sha256 = info["tokenizer_sha256"]
            self._sets = list(info["sets"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SpeclmError(corrupt) from None
        self._cache: dict[tuple[str, str], Windows] = {}

    @cached_property
    def tokenizer(self):
        from .bpe import load_tokenizer

        path = self.dir / "tokenizer.json"
        if manifest.hash_file(path) != self.tokenizer_sha256:
            raise SpeclmError(
                f"{path} does not match the token shards (its hash differs from the one in the manifest); "
                "rerun `speclm tokens --force`"
            )
        tok = load_tokenizer(path)
        if tok.get_vocab_size() != self.vocab_size:
            raise SpeclmError(
                f"{path} has {tok.get_vocab_size()} tokens but the shards were made with {self.vocab_size}; "
                "rerun `speclm tokens --force`"
            )
        return tok

    def sets(self) -> list[str]:
        """"generic" first, then the domain names."""
        return list(self._sets)

    def domains(self) -> list[str]:
        return [s for s in self._sets if s != "generic"]

    def _check(self, set_name: str, split: str) -> None:
        if set_name not in self._sets:
            raise SpeclmError(f"no set {set_name!r} in {self.dir}; sets: {', '.join(self._sets)}")
        if split not in SPLITS:
            raise SpeclmError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")

    def stream(self, set_name: str, split: str) -> np.ndarray:
        """The whole token stream of a set and split (read-only memmap)."""
        self._check(set_name, split)
        path = stream_paths(self.dir, set_name, split)["tokens"]
        try:
            size = path.stat().st_size
            if size == 0:
                return np.zeros(0, dtype=self.dtype)
            if size % self.dtype.itemsize:
                raise ValueError("size")
            return np.memmap(path, dtype=self.dtype, mode="r")
        except (OSError, ValueError):
            raise SpeclmError(f"{path} is missing or damaged; {FIX}") from None

    def docs(self, set_name: str, split: str) -> np.ndarray:
        self._check(set_name, split)
        return atomic.load_npy(stream_paths(self.dir, set_name, split)["docs"], mmap_mode="r")

    def windows(self, set_name: str, split: str) -> Windows:
        key = (set_name, split)
        if key not in self._cache:
            self._check(set_name, split)
            paths = stream_paths(self.dir, set_name, split)
            index = atomic.load_npy(paths["windows"], mmap_mode="r")
            stream, docs = self.stream(*key), self.docs(*key)
            if index.ndim != 2 or index.shape[1:] != (2,) or docs.ndim != 2 or docs.shape[1:] != (2,):
                raise SpeclmError(f"{paths['windows']} or {paths['docs']} is not a window / document index; {FIX}")
            if len(index) and int(index[-1, 0]) + self.window + 1 > len(stream):
                raise SpeclmError(f"{paths['tokens']} holds {len(stream):,} tokens, fewer than its {len(index):,} "
                                  f"windows need (truncated or emptied); {FIX}")
            self._cache[key] = Windows(stream, index, docs, self.window, lambda: self.tokenizer)
        return self._cache[key]

    def summary(self) -> dict:
        from ..core.atomic import read_json_file

        return read_json_file(self.dir / "summary.json", "rebuild the tokens with `speclm tokens --force`")
