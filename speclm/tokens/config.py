from dataclasses import dataclass


@dataclass
class TokensConfig:
    """Byte-level BPE and packed token shards."""

    vocab_size: int = 8192
    window: int = 1024  # tokens per training/clustering window (the paper: 1024)
    min_frequency: int = 2
    tokenizer_train_mb: float = 64.0  # sample of the generic train split used to fit the BPE
    workers: int = 2
