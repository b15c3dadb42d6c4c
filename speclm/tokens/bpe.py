"""Byte-level BPE with Hugging Face ``tokenizers``: train, save, load.

Byte-level: every string round-trips exactly (``decode(encode(s)) == s``), whatever its
script or whitespace, because the 256 byte symbols are always in the vocabulary. The one
special token ``<|endoftext|>`` has id 0 and separates documents in the token stream;
the literal string "<|endoftext|>" inside a document is encoded as ordinary text
(``encode_special_tokens``; not saved in tokenizer.json, so load with :func:`load_tokenizer`),
so id 0 in a stream is always a document boundary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..core import atomic
from ..core.errors import SpeclmError

EOT = "<|endoftext|>"
EOT_ID = 0
SPECIAL_TOKENS = [EOT]
BYTE_ALPHABET = 256
MIN_VOCAB = BYTE_ALPHABET + len(SPECIAL_TOKENS)


def set_threads(workers: int) -> None:
    """Let the tokenizers' thread pool use ``workers`` threads (before its first use)."""
    if workers > 0:
        os.environ.setdefault("RAYON_NUM_THREADS", str(workers))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB:
        raise SpeclmError(
            f"tokens.vocab_size = {vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB} "
            f"({BYTE_ALPHABET} bytes + {len(SPECIAL_TOKENS)} special token); raise tokens.vocab_size"
        )
    if vocab_size > 2**32:
        raise SpeclmError(f"tokens.vocab_size = {vocab_size} is too large (at most 2**32)")


def new_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2, length: int | None = None, progress: bool = True):
    """Train a byte-level BPE on ``texts``; ``<|endoftext|>`` gets id 0."""
    from tokenizers import pre_tokenizers, trainers

    check_vocab_size(vocab_size)
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    if tok.token_to_id(EOT) != EOT_ID:  # pragma: no cover - tokenizers guarantees this order
        raise RuntimeError("BPE training did not give <|endoftext|> id 0")
    tok.encode_special_tokens = True
    return tok


def save_tokenizer(tok, path: str | Path) -> None:
    atomic.write_text(path, tok.to_str())


def open_tokenizer(path: str | Path, fix: str = "rerun `speclm tokens --force`"):
    """``Tokenizer.from_file``; a damaged file is a one-line error naming it and ``fix``."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.exists():
        raise SpeclmError(f"tokenizer not found: {path}; run `speclm tokens` first")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpeclmError(f"{path} is not a valid tokenizer.json ({first}); {fix}") from None


def load_tokenizer(path: str | Path):
    tok = open_tokenizer(path)
    tok.encode_special_tokens = True
    return tok
