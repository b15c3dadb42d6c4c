"""SLM-is: cluster-based importance sampling (docs/paper.md §2.3).

Per domain, the generic train set is resampled to the domain's cluster histogram (k =
``methods.is_k``; the paper: 1024): draw a cluster from the histogram, then a generic
window uniformly inside it (``speclm.methods.importance``). A small model is trained
from scratch on that stream within the grid's pretraining budget, then fine-tuned. The
whole pretraining is paid per domain, so it counts as specialization cost (the paper's
C_generic = 0).

The histogram is the specialization set's (the size's slice of the domain train split,
:mod:`speclm.methods.specset`); the job ``pretrain/slm-is/<domain>/h-<hash>/`` is keyed by
the histogram's hash, so sizes whose slices have the same histogram share it.

The pretraining report (the summary in ``pretrain/slm-is/<domain>/h-<hash>/manifest.json``, copied
into each specialization's summary) gives the effective sample size of the resample: Kish's
ESS of the importance weights, the expected repeats of the drawn stream, and the passes
over the windows it draws (``max_passes``: how often the most-drawn generic window is read;
``mean_passes``: draws / distinct windows drawn). Each grid row of SLM-is carries the
summary :data:`ROW_KEYS` of it under ``row["extra"]["importance"]`` (:meth:`row_extra`,
recomputed from the same seeded draw, so rows of a pretraining made before these keys
have them too).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import importance, inputs, pretraining, specset
from .base import Context, register
from .recipe import PretrainThenFinetune

ROW_KEYS = ("kish_ess", "kish_ess_fraction", "max_passes", "mean_passes", "draws", "drawn_unique", "generic_windows")


@register
class SLMImportanceSampling(PretrainThenFinetune):
    """Small model pretrained per domain on generic data resampled to its cluster histogram."""

    name = "slm-is"
    shared_pretraining = False
    needs_domain_for_pretrain = True
    pretrain_fields = ("pretrain_steps", "budget", "is_", "per_domain_budget")

    def check(self, ctx: Context) -> None:
        from ..core.errors import require

        m = ctx.config.methods
        require(m.is_smoothing >= 0, f"methods.is_smoothing must be >= 0, got {m.is_smoothing}")
        require(0 <= m.is_uniform_share <= 1, f"methods.is_uniform_share must be in [0, 1], got {m.is_uniform_share}")
        require(m.is_draw in importance.DRAWS, f"methods.is_draw must be one of {', '.join(importance.DRAWS)}, "
                f"got {m.is_draw!r}")

    def cluster_ks(self, ctx: Context) -> list[int]:
        return [ctx.config.methods.is_k]

    def pretrain_target(self, ctx: Context, domain: str, size: Optional[str]) -> specset.Target:
        return specset.cluster_target(ctx, domain, size, ctx.config.methods.is_k)

    def row_extra(self, ctx: Context, domain: str, size: str) -> dict:
        """The resample's summary for a grid row: ``{"importance": {ROW_KEYS}}``."""
        _, report = self.pretrain_indices(ctx, domain, self.pretrain_target(ctx, domain, size), quiet=True)
        return {"importance": {k: report["importance"][k] for k in ROW_KEYS}}

    def pretrain_indices(self, ctx: Context, domain: Optional[str], target: Optional[specset.Target] = None,
                         quiet: bool = False) -> tuple[np.ndarray, dict]:
        m = ctx.config.methods
        k = m.is_k
        c = inputs.clusters(ctx)
        if target is None:
            target = self.pretrain_target(ctx, domain, None)
        hist = target.histogram
        assign = np.asarray(c.assign(k, inputs.GENERIC, "train"), dtype=np.int64)
        p = importance.plan(hist, assign, smoothing=m.is_smoothing, uniform_share=m.is_uniform_share)
        draws = pretraining.budget_windows(ctx, pretraining.pretrain_config(ctx, self.budget_share(ctx)))
        rng = np.random.default_rng(inputs.domain_seed(ctx.config.seed, domain))
        idx = importance.draw(rng, p, importance.cluster_members(assign, k), draws, len(assign), within=m.is_draw)
        ess = importance.effective_sample_size(p.window_probs(assign), draws)
        drawn_unique = int(len(np.unique(idx)))
        report = {
            "importance": {
                "k": k,
                "smoothing": m.is_smoothing,
                "uniform_share": m.is_uniform_share,
                "draw": m.is_draw,
                "domain_histogram": hist.tolist(),
                "cluster_probs": p.cluster_probs.tolist(),
                "dropped_mass": p.dropped_mass,
                "top_cluster_share": float(hist.max() / hist.sum()),
                **ess,
                "drawn_unique": drawn_unique,
                "drawn_repeat_factor": draws / max(drawn_unique, 1),
                # passes over the drawn windows: the most-drawn one's count, and the mean
                "max_passes": int(np.bincount(idx).max()) if len(idx) else 0,
                "mean_passes": draws / max(drawn_unique, 1),
            }
        }
        if not quiet:
            ctx.log(
                f"{self.name} {domain}: k={k}, {draws} draws from {len(assign)} generic windows, "
                f"Kish ESS {ess['kish_ess']:.0f} ({ess['kish_ess_fraction']:.1%}), {drawn_unique} distinct "
                f"(each drawn {report['importance']['drawn_repeat_factor']:.2f}x on average, "
                f"the most drawn {report['importance']['max_passes']}x)"
            )
        return idx, report
