"""The sections of a run's config (``config.toml``), one dataclass per stage.

Each stage reads only its own section; :mod:`speclm.core.config` composes them into
:class:`~speclm.core.config.Config` and loads presets and overrides. They live together
here, below every stage, so the config loader needs nothing from the layers above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SpeclmError


@dataclass
class CorpusConfig:
    """Where the documents come from and how they are split."""

    source: str = "tiny"  # tiny (ships in the package) | default (registry packages) | import (see `speclm corpus import`)
    sources: list[str] = field(default_factory=list)  # default corpus: generic sources to use (empty = all)
    domains: list[str] = field(default_factory=list)  # default corpus: domains to use (empty = all)
    max_mb_per_source: float = 0.0  # cap each source's text (0 = no cap); a deterministic sample of documents
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    min_eval_docs: int = 50  # valid and test each get at least this many documents where the set allows
    max_doc_mb: float = 100.0  # a single document larger than this is an error
    seed: int = 0
    cache_dir: str = ""  # downloaded packages are kept here (default: $SPECLM_CACHE or ~/.cache/speclm)
    # contamination check (`speclm corpus overlap`, docs/corpus.md): a domain valid/test document
    # overlaps a generic train document when at least overlap_threshold of its word
    # overlap_ngram-grams occur in it; drop_overlap removes those generic documents before tokens
    drop_overlap: bool = True
    overlap_threshold: float = 0.5
    overlap_ngram: int = 8

    def __post_init__(self) -> None:
        if not (0 < self.overlap_threshold <= 1):  # also refuses nan
            raise SpeclmError(f"corpus.overlap_threshold = {self.overlap_threshold} must be in (0, 1]")
        if not (1 <= self.overlap_ngram <= 64):
            raise SpeclmError(f"corpus.overlap_ngram = {self.overlap_ngram} must be between 1 and 64 words")


@dataclass
class TokensConfig:
    """Byte-level BPE and packed token shards."""

    vocab_size: int = 8192
    window: int = 1024  # tokens per training/clustering window (the paper: 1024)
    min_frequency: int = 2
    tokenizer_train_mb: float = 64.0  # sample of the generic train split used to fit the BPE
    workers: int = 2


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
    # auto (torch on a GPU; on a CPU the fastest runtime that agrees with torch, docs/clusters.md)
    # | torch | onnx | onnx-int8 | openvino | openvino-int8
    backend: str = "auto"
    fit_sample: int = 0  # fit k-means on at most this many embedded generic train windows (0 = all)
    embed_sample: int = 0  # embed at most this many generic train windows (0 = all); the rest: token-bag proxy
    embed_sample_other: int = 0  # embed at most this many windows of every other set/split (0 = all)
    niter: int = 25
    seed: int = 0
    describe_budget_tokens: int = 0  # IS resample budget for the describe ESS (0 = the generic train tokens)


@dataclass
class ModelConfig:
    """Which transformer shapes the small (inference) and large models use."""

    small: str = "tiny"  # a named shape of speclm.model.transformer (or "dial:N")
    large: str = "tiny-large"
    mlp: str = "swiglu"  # swiglu | plain (the paper's counts assume a plain 2-matrix MLP)
    tie_embeddings: bool = False


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
    # Live curves: jsonl (OUT/metrics.jsonl only) | tensorboard (also OUT/tensorboard/ events,
    # the tensorboard extra; `tensorboard --logdir RUN` shows every job). See speclm/train/logger.py.
    logger: str = "jsonl"

    def __post_init__(self) -> None:
        if self.logger not in ("jsonl", "tensorboard"):
            raise SpeclmError(f"train.logger must be jsonl or tensorboard, got {self.logger!r}")

    def result_fields(self) -> dict:
        """The fields that can change what training computes: every one but those in
        NOT_RESULTS (where the curves go). Job keys, the loop's run id and the grid's row hash
        read these, so turning TensorBoard on redoes nothing and older runs keep their keys."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k not in NOT_RESULTS}


NOT_RESULTS = ("logger",)  # TrainConfig fields that change no result
# MethodsConfig fields added after runs were made, keyed only away from the value every earlier
# run used: job keys (speclm.methods.jobs.config_part) and the rows' config hash
# (speclm.report.rows.config_hash) leave them out at that value, so older runs keep theirs.
KEYED_AWAY_FROM = {"is_draw": "iid"}


# Methods that may have operating curves (methods.curve_methods): one generic pretraining,
# shared by every domain, that a snapshot can stand in for. The others, and why not (the
# layering keeps core below the method registry; tests/test_curves.py checks that these two
# cover every registered method).
CURVE_METHODS = ("slm", "llm", "llm-lora", "slm-mix", "slm-pn", "slm-pn-hist")
NO_CURVE = {
    "slm-is": "its pretraining is per domain (no shared generic pretraining to snapshot)",
    "slm-dsir": "its pretraining is per domain (no shared generic pretraining to snapshot)",
    "slm-is-full": "its pretraining is per domain (no shared generic pretraining to snapshot)",
    "slm-nopt": "it has no pretraining",
    "slm-d": "it reads the LLM teacher's fine-tuned model, not one pretraining",
}

# Ablations: a method that changes one factor of another to measure it (name -> the method it
# ablates). An ablation is reported beside its method but competes in no finding and is never
# recommended (speclm.report.findings, speclm.report.plan), and an empty methods.grid_methods
# leaves it out: it runs only when named. slm-is-full: slm-is at the full pretraining budget
# instead of methods.per_domain_budget (speclm.methods.slm_is_full).
ABLATIONS = {"slm-is-full": "slm-is"}


@dataclass
class MethodsConfig:
    """Settings of the paper's methods (docs/paper.md §2) and of specialization."""

    # Specialization-set sizes in tokens of the domain train split: "1M", "250k", "all".
    sizes: list[str] = field(default_factory=lambda: ["16k", "64k", "all"])
    # Fine-tuning (paper: lr/3 for its smallest set, lr for the others; early stopping, docs/methods.md "Protocol").
    finetune_lr: float = 0.0  # the base rate; 0 = train.lr (the paper fine-tunes at its pretraining rate)
    finetune_small_lr_factor: float = 0.3333333333333333
    # Sets of at most this many tokens train at the base rate x finetune_small_lr_factor (the
    # paper's lr/3 for its smallest set), larger ones ("all" included) at the base rate; one
    # rule whatever other sizes are configured (issue 19). 32k: the demo's 16k set trains at
    # lr/3 as before, cpu-full's 16k set moves from 2e-3 to 6.7e-4 (the full rate measured 1-11%
    # worse there), 64k keeps the full rate. 0 = every set at the base rate.
    finetune_small_tokens: int = 32000
    # The step cap of a size: finetune_max_epochs passes over the size's windows, and at
    # most finetune_max_steps[i] for methods.sizes[i] when that list is given (0 = no step cap).
    finetune_max_epochs: float = 8.0
    finetune_max_steps: list[int] = field(default_factory=list)  # optional, one per size
    finetune_eval_every: int = 0  # steps between validations; 0 = about half an epoch of the size
    finetune_patience: int = 3
    finetune_warmup_steps: int = 0
    finetune_schedule: str = "constant"  # constant | cosine (over the step cap)
    finetune_batch_size: int = 0  # windows per fine-tuning step (0 = train.batch_size)
    # SLM-nopt trains from scratch on the domain set under the fine-tuning protocol (validation
    # schedule, patience, step 0 included), capped at nopt_max_epochs passes over the size's
    # windows (0 = finetune_max_epochs), at its own rate (0 = train.lr) and warmup (train.warmup_steps,
    # at most a tenth of the cap), with train.schedule over the cap.
    nopt_max_epochs: float = 16.0
    nopt_lr: float = 0.0
    # Evaluation of the specialized models in the grid: at most this many test windows per
    # domain, evenly spread (0 = the whole test split).
    eval_max_windows: int = 0
    # Error bars: bootstrap replicates over test documents (>= 2), and seeds per grid row
    # (seed i trains with train.seed + i: data order and initialization; `speclm grid --seeds`).
    bootstrap: int = 1000
    seeds: int = 1
    # The methods `speclm grid` / `speclm run` compute when none are named (empty = every known
    # method but the ablations, ABLATIONS above: those run only when named).
    grid_methods: list[str] = field(default_factory=list)
    # Which methods get the `seeds` seeds (empty = every method; the others run seed 0 only):
    # seeds where the comparison needs them, one run where a method is only a reference.
    seed_methods: list[str] = field(default_factory=list)
    # A per-domain pretraining (slm-is, slm-dsir) gets this share of the shared pretraining
    # budget: 1 = equal cost per pretraining; the paper caps SLM-is at 130 of the SLM's 530
    # GPU-hours (Table 3), about 0.25.
    per_domain_budget: float = 1.0
    # How the grid runs its jobs (speclm/grid/executor.py): local worker processes (1 = this
    # process, in order) or Ray (the `cluster` extra); `speclm grid --workers / --executor`.
    grid_workers: int = 1
    grid_executor: str = "local"  # local | ray
    # Pretraining budget shared by every method, in steps of the train config (0 = train.max_steps).
    pretrain_steps: int = 0
    # flops: every method gets the FLOPs of the small model's run (the paper's equal GPU-hours) |
    # tokens: same tokens for every method | device_hours: train.max_device_hours of wall time each
    budget: str = "flops"
    # Operating curves over pretraining cost (docs/paper.md Table 8, Figs. 3-4): each pretraining of a
    # curve method also saves a snapshot at step round(f * its steps) for every f of
    # curve_fractions (each in (0, 1), sorted, unique), and the grid specializes and evaluates
    # every snapshot into eval/curves.jsonl (README, "Operating curves"). Only methods with one
    # shared generic pretraining (CURVE_METHODS); empty = no curves, no snapshots.
    curve_fractions: list[float] = field(default_factory=list)
    curve_methods: list[str] = field(default_factory=list)
    # SLM-is: importance sampling on clusters.
    is_k: int = 4
    is_smoothing: float = 0.0  # additive smoothing of the domain histogram
    is_uniform_share: float = 0.0  # share of uniformly drawn generic windows
    # How a window is drawn inside its drawn cluster: iid (uniformly, with replacement: the
    # most-drawn window's count has a Poisson tail) | cycle (each cluster's windows in shuffled
    # passes: no window is read a (j+1)-th time before every window of its cluster was read j
    # times, so the most-drawn one is read ceil(draws of the cluster / its windows) times).
    # Both draw each window with the same probability q(x) (docs/methods.md "SLM-is").
    is_draw: str = "iid"
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
    # Which projections get adapters: q, k, v (slices of the fused attn.qkv, each its own
    # adapter), o (attn.proj), mlp (every MLP matrix). The paper: query and value.
    lora_targets: list[str] = field(default_factory=lambda: ["q", "v"])
    lora_alpha: float = 16.0
    lora_steps_factor: float = 2.0  # LoRA may take more steps than full fine-tuning
    lora_lr_factor: float = 1.0  # multiplies the fine-tuning rate
    # SLM-dsir.
    dsir_ngrams: int = 2
    dsir_buckets: int = 10000
    dsir_pool: int = 0  # candidate generic windows (a seeded sample; 0 = all)
