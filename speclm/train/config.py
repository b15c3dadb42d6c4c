from dataclasses import dataclass


@dataclass
class TrainConfig:
    """The one training loop's settings (pretraining; fine-tuning overrides some)."""

    lr: float = 1e-4
    warmup_steps: int = 1000
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at the budget's horizon
    weight_decay: float = 0.1
    grad_clip: float = 5.0
    batch_size: int = 8  # windows per micro-batch
    grad_accum: int = 1
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False
    max_steps: int = 0  # budgets: 0 = unlimited; the first one reached stops the run
    max_tokens: int = 0
    max_flops: float = 0.0
    max_device_hours: float = 0.0
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 10
    checkpoint_every: int = 200
    patience: int = 3  # early stopping (fine-tuning), in evaluations without improvement
    seed: int = 0
