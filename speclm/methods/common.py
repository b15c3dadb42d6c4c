"""What the method files share: stage inputs, model shapes, input checks, done-markers.

Nothing here trains: training goes through the one loop (speclm.train) via
:mod:`speclm.methods.finetune` and :func:`pretrain_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .. import manifest
from ..errors import SpeclmError, require
from ..jsonfile import read_required_json
from .base import Context, Method
from .sizes import size_label, size_windows

if TYPE_CHECKING:
    import torch

GENERIC = "generic"


# -- stage inputs ----------------------------------------------------------------------


def shards(ctx: Context):
    from ..tokens.shards import TokenShards

    return TokenShards(ctx.run.tokens_dir)


def clusters(ctx: Context):
    from ..clusters.store import Clusters

    return Clusters(ctx.run.clusters_dir)


def domains(ctx: Context) -> list[str]:
    return shards(ctx).domains()


def tokens_fingerprint(ctx: Context) -> str:
    return manifest.require_fingerprint(ctx.run.tokens_dir, "tokens")


def clusters_fingerprint(ctx: Context) -> str:
    return manifest.require_fingerprint(ctx.run.clusters_dir, "clusters")


# -- shapes ----------------------------------------------------------------------------


def shape(ctx: Context, which: str = "small"):
    """The small (inference) or large model shape of this run."""
    from ..model.transformer import named_shape

    cfg = ctx.config
    s = shards(ctx)
    name = cfg.model.small if which == "small" else cfg.model.large
    return named_shape(
        name, s.vocab_size, max_seq_len=s.window, mlp=cfg.model.mlp, tie_embeddings=cfg.model.tie_embeddings
    )


# -- input checks (clear one-line errors before any work) --------------------------------


def check_domain(ctx: Context, method: Method, domain: str | None, for_pretrain: bool = False) -> str | None:
    """Validate ``domain`` for ``method``: it must exist, and be clustered at the k the
    method needs. For pretraining, only per-domain methods take a domain."""
    if for_pretrain and not method.needs_domain_for_pretrain:
        if domain is not None:
            ctx.log(f"{method.name} pretrains once for every domain; --domain {domain} is not needed")
        return None
    if domain is None:
        raise SpeclmError(f"{method.name} needs --domain (one of: {', '.join(domains(ctx))})")
    known = domains(ctx)
    if domain not in known:
        raise SpeclmError(f"unknown domain {domain!r}; known: {', '.join(known) or '(none)'}")
    for k in method.cluster_ks(ctx):
        check_clustered(ctx, domain, k)
    return domain


def check_clustered(ctx: Context, domain: str, k: int) -> None:
    c = clusters(ctx)
    if k not in c.ks:
        raise SpeclmError(
            f"no clustering with k={k} in {ctx.run.clusters_dir} (have k={', '.join(map(str, c.ks)) or 'none'}); "
            f"add {k} to clusters.ks and run `speclm clusters`"
        )
    for s in (GENERIC, domain):
        try:
            c.assign(k, s, "train")
        except (SpeclmError, FileNotFoundError, OSError):
            raise SpeclmError(
                f"{s} was not clustered at k={k} (no assignments in {ctx.run.clusters_dir}); run `speclm clusters`"
            ) from None


def require_positive(ctx: Context, *fields: str) -> None:
    """A one-line error unless every named ``methods.<field>`` of the run's config is > 0."""
    for field in fields:
        value = getattr(ctx.config.methods, field)
        require(value > 0, f"methods.{field} must be positive, got {value}")


def check_size(ctx: Context, domain: str, size: str) -> str:
    """Validate ``size`` against the domain's train split and return its canonical label."""
    s = shards(ctx)
    size_windows(size, len(s.windows(domain, "train")), s.window, domain)
    return size_label(size)


# -- done markers (a finished stage is skipped; a killed one resumes inside the loop) ---


def is_done(folder: Path, stage: str, config: Any, inputs: dict) -> bool:
    return manifest.is_fresh(folder, stage, config, inputs)


def mark_done(folder: Path, stage: str, config: Any, inputs: dict, outputs: list[str], summary: dict) -> None:
    manifest.write(folder, stage, config, inputs, outputs, summary)


def read_summary(folder: Path) -> dict:
    m = manifest.read(folder)
    if m is None:
        raise SpeclmError(f"no finished result in {folder}")
    return m.get("summary", {})


# -- jobs: a folder that one training writes, keyed by what it was computed from --------

JOB_FILE = "job.json"


def config_part(ctx: Context, methods_prefixes: tuple[str, ...] = ()) -> dict:
    """The config a job depends on: model, train, seed, and the named methods fields."""
    import dataclasses

    cfg = ctx.config
    meth = {k: v for k, v in dataclasses.asdict(cfg.methods).items() if k.startswith(methods_prefixes)} if methods_prefixes else {}
    return {
        "seed": cfg.seed,
        "model": dataclasses.asdict(cfg.model),
        "train": dataclasses.asdict(cfg.train),
        "methods": meth,
    }


def job_key_hash(key: dict) -> str:
    return manifest.hash_obj(key)


def open_job(folder: Path, key: dict, force: bool = False) -> bool:
    """Prepare a job folder for ``key``. Returns True when the folder already holds the
    finished job (``done.json`` with the same key). A folder made for another key (the
    config or the inputs changed), or any folder under ``force``, is wiped; a folder for
    the same key that is not done is kept, so the training loop resumes it."""
    import json
    import shutil

    from .. import atomic

    folder = Path(folder)
    h = job_key_hash(key)
    spec = folder / JOB_FILE
    if folder.exists():
        try:
            old = json.loads(spec.read_text(encoding="utf-8")).get("hash") if spec.exists() else None
        except (OSError, json.JSONDecodeError):
            old = None
        if force or old != h:
            shutil.rmtree(folder)
    if (folder / "done.json").exists():
        return True
    if not spec.exists():
        atomic.write_json(spec, {"hash": h, "key": key})
    return False


def finish_job(folder: Path, summary: dict) -> None:
    """Mark a job finished (written last)."""
    from .. import atomic

    atomic.write_json(Path(folder) / "done.json", summary)


def read_job_key(folder: Path) -> dict:
    return read_required_json(Path(folder) / JOB_FILE, f"{folder} holds no job (no {JOB_FILE})")["key"]


def job_summary(folder: Path) -> dict:
    return read_required_json(Path(folder) / "done.json", f"{folder} is not finished (no done.json)")


# -- pretraining through the one loop -------------------------------------------------------


def pretrain_steps(ctx: Context) -> int:
    steps = ctx.config.methods.pretrain_steps or ctx.config.train.max_steps
    if steps <= 0:
        raise SpeclmError("the pretraining budget is zero: set methods.pretrain_steps or train.max_steps")
    return steps


def pretrain_config(ctx: Context, share: float = 1.0):
    """The loop config of a pretraining that gets ``share`` of the grid's budget.

    ``methods.budget = "tokens"`` (default): every method trains the same number of tokens
    (``pretrain_steps`` steps of ``train.batch_size`` windows), so the large model costs more
    FLOPs. ``"flops"``: every method gets the FLOPs the small model spends in those steps,
    so the large model trains fewer steps (the paper compares at equal GPU-hours)."""
    import dataclasses

    from ..model.transformer import flops_per_token

    cfg = ctx.config
    steps = pretrain_steps(ctx)
    t = dataclasses.replace(cfg.train, max_steps=0, max_tokens=0, max_flops=0.0, max_device_hours=0.0)
    budget = getattr(cfg.methods, "budget", "tokens")
    if budget == "tokens":
        return dataclasses.replace(t, max_steps=max(1, int(round(steps * share))))
    if budget == "flops":
        s = shards(ctx)
        per_step = t.batch_size * t.grad_accum * s.window * flops_per_token(shape(ctx, "small"), s.window)
        return dataclasses.replace(t, max_flops=max(per_step, steps * share * per_step))
    raise SpeclmError(f"methods.budget must be tokens or flops, got {budget!r}")


def valid_fn(ctx: Context, set_name: str) -> Callable[[torch.nn.Module], float]:
    """Mean per-token NLL on (an evenly spread part of) a set's valid split."""
    from ..evaluate import make_valid_fn

    t = ctx.config.train
    w = shards(ctx).windows(set_name, "valid")
    if len(w) == 0:
        raise SpeclmError(f"{set_name}: the valid split has no windows; early stopping needs one")
    return make_valid_fn(w, max_windows=t.eval_batches * t.batch_size, batch_size=t.batch_size, dtype=t.dtype)


def tokenizer_files(ctx: Context) -> dict[str, Path]:
    """Files every checkpoint carries (the tokenizer, so a checkpoint stands alone)."""
    p = ctx.run.tokens_dir / "tokenizer.json"
    return {"tokenizer.json": p} if p.exists() else {}


def pretrain_model(
    ctx: Context,
    model,
    sampler,
    out_dir: Path,
    cfg,
    *,
    valid_set: str | None = GENERIC,
    meta: dict | None = None,
    loss_fn=None,
    flops_per_token: float | None = None,
    prior_cost: dict | None = None,
    ddp: bool = True,
):
    """Pretrain ``model`` on ``sampler`` into ``out_dir`` (the loop's folder; the model is
    ``out_dir/final``), validating on ``valid_set``'s valid split for the log."""
    from ..train.loop import train
    return train(
        model,
        sampler,
        cfg,
        out_dir,
        valid_fn=valid_fn(ctx, valid_set) if valid_set else None,
        phase="pretrain",
        loss_fn=loss_fn,
        prior_cost=prior_cost,
        meta=meta,
        files=tokenizer_files(ctx),
        flops_per_token=flops_per_token,
        ddp=ddp,
    )


def budget_windows(ctx: Context, cfg, shape_kind: str = "small") -> int:
    """How many windows a pretraining with loop config ``cfg`` reads (its stream's length)."""
    from ..model.transformer import flops_per_token

    s = shards(ctx)
    per_step = cfg.batch_size * cfg.grad_accum
    if cfg.max_steps:
        return cfg.max_steps * per_step
    fpt = flops_per_token(shape(ctx, shape_kind), s.window)
    steps = -(-int(cfg.max_flops) // int(fpt * s.window * per_step))
    return max(1, steps) * per_step


def domain_seed(seed: int, domain: str) -> list[int]:
    """A seed for per-domain randomness that does not depend on Python's hash salt."""
    import zlib

    return [seed, zlib.crc32(domain.encode("utf-8"))]
