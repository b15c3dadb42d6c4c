"""SLM-pn: the projected network (docs/paper.md §2.4), and our histogram instantiation.

Pretraining (once, shared by every domain): a :class:`~speclm.model.projected.ProjectedNetwork`
with ``methods.pn_k`` experts (the generic clustering at that k), capacity ``pn_h`` and
expert-vector size ``pn_m``, trained through the one loop. Each generic window goes to the
expert of its cluster: the batch carries ``expert`` ids, which the network groups so that
an expert's weights are materialized once per micro-batch. ``methods.pn_batching``:
``mixed`` (uniform batches, several experts each) or ``cluster`` (each micro-batch drawn
from a single cluster: one expert per batch, the cheapest step; see docs/projected.md).

Specialization: pick an expert vector, materialize it into a plain small transformer
(``specialize/<method>/<domain>/<size>/expert/``, a checkpoint anyone can fine-tune without
the pretraining data), then fine-tune it exactly like an SLM (speclm.methods.finetune).

- ``slm-pn`` picks with ``methods.expert_rule`` (most_frequent, best_pretrained,
  finetune_all, as for SLM-mix; or histogram);
- ``slm-pn-hist`` always uses the histogram rule: e = sum_c p_domain(c) E[c], the
  domain's whole cluster histogram instead of its most frequent cluster.

The domain histogram is computed on the specialization set itself (the size's slice of the
domain train split): that is all the domain data the paper's setting allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..core import atomic
from ..core.errors import SpeclmError
from . import curves, inputs, jobs, pretraining
from .base import Context, Method, register
from .selection import ExpertPool, check_rule, select
from ..clusters.describe import entropy
from ..clusters.store import histogram_of
from ..core import manifest

HISTOGRAM = "histogram"
BATCHINGS = ("mixed", "cluster")
METHOD_FILE = "method.json"  # read by the experiment grid into each result row's "extra"


# -- the methods --------------------------------------------------------------------------


@register
class SLMProjected(Method):
    """Projected network: per-cluster experts from shared tensors; the chosen one is materialized and fine-tuned.

    The expert is chosen by ``methods.expert_rule`` (the SLM-mix rules, or histogram)."""

    name = "slm-pn"
    fixed_rule: Optional[str] = None  # slm-pn-hist: "histogram"

    # -- settings -------------------------------------------------------------------------

    def rule(self, ctx: Context) -> str:
        return self.fixed_rule or ctx.config.methods.expert_rule

    def cluster_ks(self, ctx: Context) -> list[int]:
        return [ctx.config.methods.pn_k]

    def check(self, ctx: Context) -> None:
        from ..model.projected import check_pn_sizes

        m = ctx.config.methods
        check_pn_sizes(m.pn_k, m.pn_h, m.pn_m)
        if m.pn_batching not in BATCHINGS:
            raise SpeclmError(f"methods.pn_batching must be one of {', '.join(BATCHINGS)}, got {m.pn_batching!r}")
        rule = self.rule(ctx)
        if rule != HISTOGRAM:
            check_rule(rule)

    def pretrain_key(self, ctx: Context) -> dict:
        return {
            "method": "slm-pn",
            "tokens": inputs.tokens_fingerprint(ctx),
            "clusters": inputs.clusters_fingerprint(ctx),
            "config": jobs.config_part(ctx, ("pretrain_steps", "budget", "pn_")),
            **curves.key_part(ctx, "slm-pn"),
        }

    def generic_assign(self, ctx: Context, split: str) -> np.ndarray:
        """Cluster ids (= expert ids) of the generic windows of ``split``, checked against k."""
        k = ctx.config.methods.pn_k
        c = inputs.clusters(ctx)
        if k not in c.ks:
            raise SpeclmError(
                f"methods.pn_k={k} but the clustering has k={', '.join(map(str, c.ks)) or 'none'}: "
                f"the projected network needs one expert per cluster; add {k} to clusters.ks or set methods.pn_k"
            )
        assign = np.asarray(c.assign(k, inputs.GENERIC, split), dtype=np.int64)
        n = len(inputs.shards(ctx).windows(inputs.GENERIC, split))
        if len(assign) != n:
            raise SpeclmError(f"generic/{split}: {len(assign)} cluster ids for {n} windows; rerun `speclm clusters`")
        if len(assign) and (assign.min() < 0 or assign.max() >= k):
            raise SpeclmError(f"generic/{split}: cluster ids outside [0, {k}); the clustering does not match methods.pn_k={k}")
        return assign

    # -- pretraining ----------------------------------------------------------------------

    def pretrain(self, ctx: Context, domain: Optional[str] = None) -> Path:
        from ..model.projected import ProjectedNetwork
        from ..train.data import ClusterBatchSampler, WindowSampler
        from .recipe import _train_summary, torch_seed

        self.check(ctx)
        m = ctx.config.methods
        folder = ctx.pretrain_dir("slm-pn")
        if manifest.open_job(folder, self.pretrain_key(ctx), ctx.force):
            return curves.start(ctx, folder)
        cfg = pretraining.pretrain_config(ctx)
        shards = inputs.shards(ctx)
        generic = shards.windows(inputs.GENERIC, "train")
        assign = self.generic_assign(ctx, "train")
        if m.pn_batching == "cluster":
            sampler = ClusterBatchSampler(generic, cfg.batch_size, assign, seed=cfg.seed)
            tokens_per_expert = cfg.batch_size * shards.window
        else:
            from ..model.projected import tokens_per_expert_mixed

            sampler = WindowSampler(generic, cfg.batch_size, seed=cfg.seed, extras={"expert": assign})
            # each expert present in a micro-batch is materialized once for all its windows
            tokens_per_expert = tokens_per_expert_mixed(np.bincount(assign, minlength=m.pn_k), cfg.batch_size, shards.window)
        torch_seed(cfg.seed)
        pn = ProjectedNetwork(inputs.shape(ctx, "small"), m.pn_k, m.pn_h, m.pn_m)
        counts = pn.param_counts()
        ctx.log(
            f"pretrain slm-pn -> {folder}: k={m.pn_k} experts, h={m.pn_h}, m={m.pn_m}, "
            f"{counts['total'] / 1e6:.2f}M parameters ({counts['inference'] / 1e6:.2f}M per expert), "
            f"{m.pn_batching} batches"
        )
        has_valid = len(shards.windows(inputs.GENERIC, "valid")) > 0
        res = pretraining.pretrain_model(
            ctx, pn, sampler, folder, cfg,
            # generic valid loss, each window through its own expert
            valid_set=inputs.GENERIC if has_valid else None,
            valid_extras={"expert": self.generic_assign(ctx, "valid")} if has_valid else None,
            meta={"method": "slm-pn", **pn.meta(), "param_counts": counts, "batching": m.pn_batching},
            flops_per_token=pn.flops_per_token(shards.window, tokens_per_expert),
            snapshots=curves.snapshots_for(ctx, "slm-pn"),
        )
        manifest.finish_job(folder, {"method": "slm-pn", "param_counts": counts, "batching": m.pn_batching,
                                 "train": _train_summary(res)})
        return curves.start(ctx, folder)

    def routed_generic(self, ctx: Context):
        """The projected network (at the context's pretraining point), each generic valid
        window with its own cluster's expert id (as the pretraining's validation)."""
        from .routed import projected

        folder = ctx.pretrain_dir("slm-pn")
        if not manifest.is_done(folder):
            return None
        return projected(curves.start(ctx, folder), self.generic_assign(ctx, "valid"), ctx.config.methods.pn_k)

    # -- specialization -------------------------------------------------------------------

    def specialize(self, ctx: Context, domain: str, size: str) -> Path:
        from ..train.checkpoint import load_projected, save_checkpoint
        from ..train.cost import read_cost
        from .inputs import tokenizer_files
        from .finetune import finetune, rate_key
        from .sizes import slice_indices

        self.check(ctx)
        pre = self.pretrain(ctx)
        m = ctx.config.methods
        k, rule = m.pn_k, self.rule(ctx)
        folder = ctx.specialize_dir(self.name, domain, size)
        key = {
            "method": self.name,
            "domain": domain,
            "size": size,
            "rule": rule,
            "pretrain": jobs.upstream_hash(curves.loop_folder(pre)),
            "config": jobs.config_part(ctx, ("finetune_", "sizes")),
            **rate_key(ctx, size),
            **curves.spec_key(ctx),
        }
        if manifest.open_job(folder, key, ctx.force):
            return folder / manifest.job_summary(folder)["checkpoint"]

        pn = load_projected(pre)
        shards = inputs.shards(ctx)
        train_windows = shards.windows(domain, "train")
        idx = slice_indices(size, len(train_windows), shards.window, seed=ctx.config.seed, domain=domain)
        domain_assign = np.asarray(inputs.clusters(ctx).assign(k, domain, "train"), dtype=np.int64)
        if len(domain_assign) != len(train_windows):
            raise SpeclmError(f"{domain}/train: {len(domain_assign)} cluster ids for {len(train_windows)} windows; rerun `speclm clusters`")
        hist = histogram_of(domain_assign[idx], k)
        prior = read_cost(pre)

        def expert_checkpoint(vector: torch.Tensor, where: Path, about: dict) -> Path:
            if not (where / "model.json").exists():
                save_checkpoint(where, pn.materialize(vector.detach()),
                                meta={"method": self.name, "materialized_from": about}, files=tokenizer_files(ctx))
                atomic.write_json(where / "cost.json", prior)  # the expert carries its generic cost
            return where

        if rule == HISTOGRAM:
            choice = {"rule": HISTOGRAM, "expert": int(np.argmax(hist)), "evaluations": 0, "finetunes": 0}
            vector = pn.histogram_vector(hist)
            about = {"histogram": hist.tolist()}
            chosen = None
        else:
            t = ctx.config.train

            def pretrained_loss(i: int) -> float:
                from ..train.validate import mean_nll

                w = shards.windows(domain, "valid")
                return mean_nll(pn, w, max_windows=t.eval_batches * t.batch_size, batch_size=t.batch_size,
                                dtype=t.dtype, extras={"expert": np.full(len(w), i, dtype=np.int64)})[0]

            def finetune_expert(i: int):
                init = expert_checkpoint(pn.expert_vector(i), folder / "experts" / str(i) / "expert", {"expert": i})
                return finetune(ctx, init, domain, size, folder / "experts" / str(i), prior_cost=prior)

            c = select(rule, ExpertPool(k=k, histogram=hist, pretrained_loss=pretrained_loss, finetune=finetune_expert))
            choice = c.to_json()
            vector = pn.expert_vector(c.expert)
            about = {"expert": c.expert}
            chosen = c.finetuned

        extra = {
            **choice,
            "k": k,
            "histogram": [round(float(x), 6) for x in hist],
            "histogram_entropy": entropy(hist),
            "top_cluster_share": float(hist.max()),
        }
        if chosen is None:
            init = expert_checkpoint(vector, folder / "expert", about)
            ctx.log(f"slm-pn {domain}/{size}: rule {rule}, expert {choice['expert']}, histogram entropy {extra['histogram_entropy']:.2f}")
            res = finetune(ctx, init, domain, size, folder, prior_cost=prior)
        else:
            res = self.keep_finetune_all(folder, chosen, list(c.scores), prior)
        atomic.write_json(res.final / METHOD_FILE, extra)  # before the job is marked done: a finished job has it
        manifest.finish_job(folder, {"method": self.name, "checkpoint": str(res.final.relative_to(folder)),
                                   **res.to_json(), "path": str(folder), **extra})
        return res.final

    def keep_finetune_all(self, folder: Path, chosen, experts: list[int], prior: dict):
        """``finetune_all``: the kept fine-tune becomes ``folder/final``, and the job's cost
        counts every one of the k fine-tunes the rule ran (as SLM-mix's does)."""
        import dataclasses
        import shutil

        from ..train.cost import read_cost, write_cost
        from .slm_d import add_costs

        ft = [read_cost(folder / "experts" / str(i)) for i in experts]
        doc = {"phase": "specialize", "pretrain": prior["pretrain"], "specialize": add_costs(*ft, phase="specialize")}
        with atomic.atomic_dir(folder / "final") as tmp:
            shutil.copytree(chosen.final, tmp, dirs_exist_ok=True)
            if (tmp / "cost.json").exists():
                write_cost(tmp, doc)
        write_cost(folder, doc)
        return dataclasses.replace(chosen, path=folder, final=folder / "final", cost=doc)


@register
class SLMProjectedHistogram(SLMProjected):
    """Projected network instantiated from the domain's whole cluster histogram (beyond the paper), fine-tuned.

    e = sum_c p_domain(c) E[c] instead of the most frequent cluster's E[c]."""

    name = "slm-pn-hist"
    fixed_rule = HISTOGRAM
    pretrains = ("slm-pn",)  # the same projected network: the grid schedules one pretraining
