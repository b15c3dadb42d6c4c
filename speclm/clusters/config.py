from dataclasses import dataclass, field


@dataclass
class ClustersConfig:
    """Sentence-BERT embeddings of windows and k-means over them (docs/clusters.md)."""

    ks: list[int] = field(default_factory=lambda: [4, 16, 64])
    nested: bool = False  # each level splits the clusters of the level above (each k a multiple of the previous)
    window_embedding: str = "mean"  # mean (of the window's chunks, weighted by word pieces) | first (first chunk only)
    chunk_pieces: int = 256  # word pieces per chunk, [CLS]/[SEP] included (the model reads at most 256)
    batch_size: int = 64  # chunks per forward pass (sorted by length)
    dtype: str = "bf16"  # bf16 | fp16 (GPU) | fp32; bf16 falls back to fp32 on a CPU without native bf16
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    fit_sample: int = 0  # fit k-means on at most this many embedded generic train windows (0 = all)
    embed_sample: int = 0  # embed at most this many generic train windows (0 = all); the rest: token-bag proxy
    embed_sample_other: int = 0  # embed at most this many windows of every other set/split (0 = all)
    niter: int = 25
    seed: int = 0
    describe_budget_tokens: int = 0  # IS resample budget for the describe ESS (0 = the generic train tokens)
