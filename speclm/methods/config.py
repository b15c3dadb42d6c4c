from dataclasses import dataclass, field


@dataclass
class MethodsConfig:
    """Settings of the paper's methods (PAPER.md §2) and of specialization."""

    # Specialization-set sizes in tokens of the domain train split: "1M", "250k", "all".
    sizes: list[str] = field(default_factory=lambda: ["16k", "64k", "all"])
    # Fine-tuning (paper: smallest size lr/3, others lr; step caps scaled by the preset).
    finetune_lr: float = 0.0  # the base rate; 0 = train.lr (the paper fine-tunes at its pretraining rate)
    finetune_small_lr_factor: float = 0.3333333333333333
    finetune_max_steps: list[int] = field(default_factory=lambda: [60, 120, 240])  # one per size
    finetune_eval_every: int = 20
    finetune_patience: int = 3
    finetune_warmup_steps: int = 0
    finetune_schedule: str = "constant"  # constant | cosine (over the step cap)
    finetune_batch_size: int = 0  # windows per fine-tuning step (0 = train.batch_size)
    # SLM-nopt trains from scratch on the domain set: its cap is the size's fine-tuning cap
    # times this factor (0 = the whole pretraining budget); early stopping ends it sooner.
    nopt_steps_factor: float = 0.0
    # Evaluation of the specialized models in the grid: at most this many test windows per
    # domain, evenly spread (0 = the whole test split).
    eval_max_windows: int = 0
    # Pretraining budget shared by every method, in steps of the train config (0 = train.max_steps).
    pretrain_steps: int = 0
    budget: str = "tokens"  # tokens: same tokens for every method | flops: same FLOPs as the small model's run
    # SLM-is: importance sampling on clusters.
    is_k: int = 4
    is_smoothing: float = 0.0  # additive smoothing of the domain histogram
    is_uniform_share: float = 0.0  # share of uniformly drawn generic windows
    # SLM-mix: hard mixture.
    mix_k: int = 4
    expert_rule: str = "most_frequent"  # most_frequent | best_pretrained | finetune_all | histogram (PN only)
    # SLM-pn: projected network.
    pn_k: int = 4
    pn_h: int = 3  # capacity multiplier (paper ~0.72 k)
    pn_m: int = 4  # expert-vector size
    pn_batching: str = "mixed"  # mixed: batches mix clusters (grouped per expert) | cluster: one cluster per batch
    # SLM-d: distillation.
    distill_alpha: float = 0.5  # weight of the teacher's distribution in the loss
    distill_temperature: float = 1.0
    # LLM-lora.
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_steps_factor: float = 2.0  # LoRA may take more steps than full fine-tuning
    lora_lr_factor: float = 1.0  # multiplies the fine-tuning rate
    # SLM-dsir.
    dsir_ngrams: int = 2
    dsir_buckets: int = 10000
    dsir_pool: int = 0  # candidate generic windows (a seeded sample; 0 = all)
