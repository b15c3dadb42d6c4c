"""SLM-mix: a hard mixture of small experts (docs/paper.md §2.4; Gross et al. 2017).

Pretraining: one small model per generic cluster (k = ``methods.mix_k``; the paper: 16),
each trained from scratch only on its cluster's windows, the grid's pretraining budget
split evenly across the experts (so the mixture costs what one SLM costs; the paper's
Table 1 counts k x 126M parameters). The experts are independent jobs: under torchrun,
rank r of W trains experts r, r + W, ... (no DDP), and rank 0 marks the mixture done.
The pretraining cost counts every expert.

Specialization: one expert is picked by ``methods.expert_rule`` (speclm.methods.selection:
most_frequent [default], best_pretrained, finetune_all) and fine-tuned; the result is a
plain small transformer. ``finetune_all`` pays k fine-tunes, and its cost says so.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from ..core import atomic
from . import curves, inputs, jobs, pretraining, selection, specset
from .base import Context, register
from .pretraining import valid_fn
from .finetune import finetune, rate_key
from .recipe import PretrainThenFinetune, torch_seed
from ..core import manifest


def expert_dir(folder: Path, i: int) -> Path:
    return Path(folder) / f"expert-{i:03d}"


@register
class SLMMixture(PretrainThenFinetune):
    """Hard mixture: one small expert per generic cluster; the domain's expert is fine-tuned."""

    name = "slm-mix"
    pretrain_fields = ("pretrain_steps", "budget", "mix_")
    finetune_fields = ("finetune_", "sizes", "expert_rule")

    def check(self, ctx: Context) -> None:
        from ..core.errors import require

        selection.check_rule(ctx.config.methods.expert_rule)
        require(ctx.config.methods.mix_k > 0, f"methods.mix_k must be positive, got {ctx.config.methods.mix_k}")

    def cluster_ks(self, ctx: Context) -> list[int]:
        return [ctx.config.methods.mix_k]

    # -- pretraining: k independent experts -----------------------------------------------

    def pretrain(self, ctx: Context, domain: Optional[str] = None) -> Path:
        from ..model.transformer import Transformer
        from ..core import ranks as distributed
        from ..train.cost import write_cost
        from ..train.data import WindowSampler
        from .slm_d import add_costs

        folder = ctx.pretrain_dir(self.name)
        key = self.pretrain_key(ctx, None)
        dist = distributed.setup() if distributed.env_rank_world()[1] > 1 else None
        rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
        done = manifest.open_job(folder, key, ctx.force) if rank == 0 else False
        if dist:
            distributed.barrier(dist)
            done = manifest.is_done(folder)
        if done:
            return folder
        k = ctx.config.methods.mix_k
        assign = np.asarray(inputs.clusters(ctx).assign(k, inputs.GENERIC, "train"), dtype=np.int64)
        sizes = np.bincount(assign, minlength=k)[:k]
        experts = [i for i in range(k) if sizes[i] > 0]
        cfg = pretraining.pretrain_config(ctx, 1.0 / len(experts))
        generic = inputs.shards(ctx).windows(inputs.GENERIC, "train")
        for i in experts[rank::world]:
            sub = expert_dir(folder, i)
            if manifest.open_job(sub, {**key, "expert": i}, False):
                continue
            torch_seed(cfg.seed + i)
            model = Transformer(inputs.shape(ctx, "small"))
            sampler = WindowSampler(generic, cfg.batch_size, seed=cfg.seed + i, indices=np.nonzero(assign == i)[0])
            ctx.log(f"slm-mix expert {i}/{k}: {sizes[i]} generic windows -> {sub}")
            res = pretraining.pretrain_model(ctx, model, sampler, sub, cfg, meta={"method": self.name, "expert": i}, ddp=False,
                                             snapshots=curves.snapshots_for(ctx, self.name))
            manifest.finish_job(sub, {"expert": i, "windows": int(sizes[i]), "steps": res.steps, "tokens": res.tokens,
                                    "best_valid": res.best_valid, "rank": rank, "world_size": world})
        if dist:
            distributed.barrier(dist)
        if rank != 0:
            return folder
        from ..train.cost import read_cost

        costs = [read_cost(expert_dir(folder, i)) for i in experts]
        write_cost(folder, {"phase": "pretrain", "pretrain": add_costs(*costs, phase="pretrain")})
        manifest.finish_job(folder, {
            "method": self.name, "k": k, "experts": experts, "cluster_windows": sizes.tolist(),
            "steps_per_expert": cfg.max_steps, "empty_clusters": [i for i in range(k) if sizes[i] == 0],
        })
        return folder

    def routed_generic(self, ctx: Context):
        """Every expert (at the context's pretraining point) on its own cluster's windows."""
        from .routed import mixture

        mix = ctx.pretrain_dir(self.name)
        if not manifest.is_done(mix):
            return None
        k = ctx.config.methods.mix_k
        assign = np.asarray(inputs.clusters(ctx).assign(k, inputs.GENERIC, "valid"), dtype=np.int64)
        experts = {int(i): curves.start(ctx, expert_dir(mix, int(i))) for i in manifest.job_summary(mix)["experts"]}
        return mixture(experts, assign, k)

    def curve_loops(self, ctx: Context) -> list[Path]:
        folder = ctx.pretrain_dir(self.name)
        return [expert_dir(folder, i) for i in manifest.job_summary(folder)["experts"]]

    # -- specialization: pick an expert, fine-tune it --------------------------------------

    def start_checkpoint(self, ctx: Context, domain: str, size: str, folder: Path) -> Optional[Path]:
        expert = (manifest.job_summary(folder).get("expert") or {}).get("expert")
        return None if expert is None else curves.start(ctx, expert_dir(self.pretrain(ctx), int(expert)))

    def specialize(self, ctx: Context, domain: str, size: str) -> Path:
        from ..train.checkpoint import load_transformer
        from ..train.cost import read_cost, write_cost
        from .slm_d import add_costs

        mix = self.pretrain(ctx)
        folder = ctx.specialize_dir(self.name, domain, size)
        key = {
            "method": self.name, "domain": domain, "size": size,
            "pretrain": jobs.upstream_hash(mix),
            "config": jobs.config_part(ctx, self.finetune_fields),
            **rate_key(ctx, size),
            **curves.spec_key(ctx),
        }
        if manifest.open_job(folder, key, ctx.force):
            return folder / manifest.job_summary(folder)["checkpoint"]
        m = ctx.config.methods
        info = manifest.job_summary(mix)
        target = specset.cluster_target(ctx, domain, size, m.mix_k)  # the specialization set's histogram
        hist = target.histogram
        final = lambda i: curves.start(ctx, expert_dir(mix, i))  # noqa: E731
        prior = read_cost(mix)
        if ctx.run.curve is not None:  # the mixture's cost at the snapshot: every expert's
            prior = {"phase": "pretrain", "pretrain": add_costs(*(read_cost(final(i)) for i in info["experts"]), phase="pretrain")}
        valid = valid_fn(ctx, domain)

        def pretrained_loss(i: int) -> float:
            return valid(load_transformer(final(i)))

        def finetune_expert(i: int):
            return finetune(ctx, final(i), domain, size, folder / "experts" / f"e{i:03d}", prior_cost=prior)

        pool = selection.ExpertPool(k=m.mix_k, histogram=hist, pretrained_loss=pretrained_loss,
                                    finetune=finetune_expert, experts=info["experts"])
        choice = selection.select(m.expert_rule, pool)
        ctx.log(f"slm-mix {domain}: expert {choice.expert} by {choice.rule}")
        if choice.finetuned is not None:
            res = choice.finetuned
            with atomic.atomic_dir(folder / "final") as tmp:
                shutil.copytree(res.final, tmp, dirs_exist_ok=True)
            ft_costs = [read_cost(folder / "experts" / f"e{i:03d}") for i in choice.scores]
            write_cost(folder, {"phase": "specialize", "pretrain": prior["pretrain"],
                                "specialize": add_costs(*ft_costs, phase="specialize")})
            res = dataclasses.replace(res, path=folder, final=folder / "final")
        else:
            res = finetune(ctx, final(choice.expert), domain, size, folder, prior_cost=prior)
        extra = {"expert": choice.to_json(), "domain_histogram": hist.tolist(),
                 "top_cluster_share": float(hist.max() / hist.sum()), "specialization_set": target.report()}
        return self.finish_specialize(ctx, folder, res, extra)
