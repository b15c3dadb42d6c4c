from dataclasses import dataclass, field


@dataclass
class ClustersConfig:
    """Sentence-BERT embeddings of windows and k-means over them."""

    ks: list[int] = field(default_factory=lambda: [4, 16, 64])
    nested: bool = False  # each level splits the clusters of the level above
    window_embedding: str = "mean"  # mean (of the window's 256-piece chunks) | first (first chunk only)
    chunk_pieces: int = 256  # word pieces per chunk (the model reads at most 256)
    batch_size: int = 64
    dtype: str = "bf16"  # bf16 | fp32 (autocast on CPU; fp16/bf16 on GPU)
    fit_sample: int = 0  # fit k-means on at most this many generic windows (0 = all); every window is assigned
    embed_sample: int = 0  # embed at most this many generic train windows (0 = all)
    niter: int = 25
    seed: int = 0
