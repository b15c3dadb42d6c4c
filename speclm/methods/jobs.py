"""The job folders a method writes: one per pretraining or specialization, keyed by what
it was computed from (the run's config parts and the upstream jobs' keys).

Whether a job is done for its key is decided by the manifest module, as for every stage:
methods call :func:`speclm.core.manifest.open_job`, ``finish_job`` and ``job_summary``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core import manifest
from ..core.sections import KEYED_AWAY_FROM
from .base import Context


# Methods fields a job key carries by their effect, not their value: the fine-tuning rate's
# threshold is in a specialization's key as the decision it makes (speclm.methods.finetune.rate_key).
BY_EFFECT = ("finetune_small_tokens",)


def config_part(ctx: Context, methods_prefixes: tuple[str, ...] = ()) -> dict:
    """The config a job depends on: model, train, seed, and the named methods fields
    (but those of :data:`BY_EFFECT`)."""
    cfg = ctx.config
    meth = {k: v for k, v in dataclasses.asdict(cfg.methods).items()
            if k.startswith(methods_prefixes) and k not in BY_EFFECT
            and not (k in KEYED_AWAY_FROM and v == KEYED_AWAY_FROM[k])} if methods_prefixes else {}
    return {
        "seed": cfg.seed,
        "model": dataclasses.asdict(cfg.model),
        "train": cfg.train.result_fields(),
        "methods": meth,
    }


def key_hash(key: dict) -> str:
    return manifest.hash_obj(key)


def upstream_hash(folder: Path) -> str:
    """The hash of the key an upstream job folder was made for (a downstream job's key
    names its inputs by it)."""
    return key_hash(manifest.job_key(folder))

