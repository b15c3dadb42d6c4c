"""SLM-dsir (beyond the paper): SLM-is with n-gram instead of cluster importance weights.

Per domain, the generic train windows are resampled with DSIR (hashed n-gram importance
resampling, PyPI ``data-selection``; ``speclm.methods.dsir``) at the same token budget as
SLM-is; a small model is trained from scratch on the resample, then fine-tuned. Like
SLM-is, the pretraining is paid per domain (specialization cost). It needs no clusters,
so it compares cluster-based and n-gram-based selection on equal terms.

The DSIR target is the specialization set (the size's slice of the domain train split,
:mod:`speclm.methods.specset`); its hashed n-gram histogram keys the job
``pretrain/slm-dsir/<domain>/h-<hash>/``.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from . import dsir, importance, inputs, pretraining, specset
from .base import Context, register
from .recipe import PretrainThenFinetune


@register
class SLMDSIR(PretrainThenFinetune):
    """Small model pretrained per domain on generic data resampled by DSIR (hashed n-grams)."""

    name = "slm-dsir"
    shared_pretraining = False
    needs_domain_for_pretrain = True
    pretrain_fields = ("pretrain_steps", "budget", "dsir_", "per_domain_budget")

    def check(self, ctx: Context) -> None:
        inputs.require_positive(ctx, "dsir_ngrams", "dsir_buckets")

    def pretrain_target(self, ctx: Context, domain: str, size: Optional[str]) -> specset.Target:
        """The slice's hashed n-gram counts (normalized) and the whole split's."""
        m = ctx.config.methods
        windows = inputs.shards(ctx).windows(domain, "train")
        label, idx, n = specset.slice_of(ctx, domain, size)
        feats = dsir.featurize(windows, np.arange(n), m.dsir_ngrams, m.dsir_buckets, desc=f"dsir {domain}")
        whole = np.asarray(feats.sum(axis=0), dtype=np.float64).ravel()
        part = np.asarray(feats[idx].sum(axis=0), dtype=np.float64).ravel()
        if part.sum() <= 0:
            from ..core.errors import SpeclmError

            raise SpeclmError(f"DSIR: the {label} set of {domain} has no n-gram")
        return specset.Target(size=label, windows=idx, histogram=part / part.sum(), whole=whole / max(whole.sum(), 1.0),
                              payload=feats[idx])

    def pretrain_indices(self, ctx: Context, domain: Optional[str], target: Optional[specset.Target] = None) -> tuple[np.ndarray, dict]:
        m = ctx.config.methods
        s = inputs.shards(ctx)
        generic = s.windows(inputs.GENERIC, "train")
        if target is None:
            target = self.pretrain_target(ctx, domain, None)
        t0 = time.perf_counter()
        pool_key = {"tokens": inputs.tokens_fingerprint(ctx), "ngrams": m.dsir_ngrams, "buckets": m.dsir_buckets,
                    "pool": m.dsir_pool, "seed": ctx.config.seed}
        pool, gfeats, pool_seconds = dsir.generic_pool(
            ctx.pretrain_dir(self.name) / "generic-pool", generic, pool_key, m.dsir_pool, ctx.config.seed,
            m.dsir_ngrams, m.dsir_buckets,
        )
        t1 = time.perf_counter()
        lw = dsir.log_weights(gfeats, target.payload)
        draws = pretraining.budget_windows(ctx, pretraining.pretrain_config(ctx, self.budget_share(ctx)))
        rng = np.random.default_rng(inputs.domain_seed(ctx.config.seed, domain))
        idx = pool[dsir.resample(lw, draws, rng)]
        seconds = time.perf_counter() - t1
        ess = importance.effective_sample_size(dsir.probs(lw), draws)
        unique = int(len(np.unique(idx)))
        report = {
            "dsir": {
                "ngrams": m.dsir_ngrams,
                "buckets": m.dsir_buckets,
                "pool_windows": int(len(pool)),
                "pool_seconds": float(pool_seconds),  # once per run (cached), shared by every domain
                "domain_seconds": float(seconds),  # this domain: its features, weights, draws
                "load_seconds": float(t1 - t0),
                **ess,
                "drawn_unique": unique,
                "drawn_repeat_factor": draws / max(unique, 1),
                "without_replacement": bool(draws <= len(pool)),
            }
        }
        ctx.log(f"slm-dsir {domain}: weights of {len(pool)} generic windows ({seconds:.1f}s for the domain, "
                f"{pool_seconds:.1f}s for the shared pool); {draws} drawn, {unique} distinct")
        return idx, report
