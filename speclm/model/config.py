from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Which transformer shapes the small (inference) and large models use."""

    small: str = "tiny"  # a named shape of speclm.model.transformer (or "dial:N")
    large: str = "tiny-large"
    mlp: str = "swiglu"  # swiglu | plain (the paper's counts assume a plain 2-matrix MLP)
    tie_embeddings: bool = False
