"""What a method reads: the run's token shards and clusters, its model shapes, and the
checks that give a clear one-line error before any work starts."""

from __future__ import annotations

from pathlib import Path

from ..core import manifest
from ..core.errors import SpeclmError, require
from ..corpus.store import GENERIC
from .base import Context, Method
from .sizes import size_label, size_windows

__all__ = ["GENERIC"]


def shards(ctx: Context):
    """The run's token shards (opened once per context)."""
    return ctx.shards


def clusters(ctx: Context):
    """The run's clusterings (opened once per context)."""
    return ctx.clusters


def domains(ctx: Context) -> list[str]:
    return shards(ctx).domains()


def tokens_fingerprint(ctx: Context) -> str:
    return manifest.require_fingerprint(ctx.run.tokens_dir, "tokens")


def clusters_fingerprint(ctx: Context) -> str:
    return manifest.require_fingerprint(ctx.run.clusters_dir, "clusters")


def shape(ctx: Context, which: str = "small"):
    """The small (inference) or large model shape of this run."""
    from ..model.transformer import named_shape

    cfg = ctx.config
    s = shards(ctx)
    name = cfg.model.small if which == "small" else cfg.model.large
    return named_shape(
        name, s.vocab_size, max_seq_len=s.window, mlp=cfg.model.mlp, tie_embeddings=cfg.model.tie_embeddings
    )


BUDGETS = ("flops", "tokens", "device_hours")  # methods.budget (speclm.methods.pretraining)


def check_protocol(ctx: Context) -> None:
    """Refuse budget and fine-tuning settings every method reads, before any work."""
    m, t = ctx.config.methods, ctx.config.train
    if m.budget not in BUDGETS:
        raise SpeclmError(f"methods.budget must be one of {', '.join(BUDGETS)}, got {m.budget!r}")
    if m.budget == "device_hours" and not (0 < t.max_device_hours < float("inf")):
        raise SpeclmError(f'methods.budget = "device_hours" needs train.max_device_hours > 0, got {t.max_device_hours!r}')
    if not (0 < m.finetune_max_epochs < float("inf")) or not (0 <= m.nopt_max_epochs < float("inf")):
        raise SpeclmError(f"methods.finetune_max_epochs must be > 0 and methods.nopt_max_epochs >= 0, got "
                          f"{m.finetune_max_epochs!r} and {m.nopt_max_epochs!r}")


def check_domain(ctx: Context, method: Method, domain: str | None, for_pretrain: bool = False) -> str | None:
    """Validate ``domain`` for ``method``: it must exist, and be clustered at the k the
    method needs. For pretraining, only per-domain methods take a domain. Also refuses bad
    budget and fine-tuning settings (:func:`check_protocol`)."""
    check_protocol(ctx)
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


def tokenizer_files(ctx: Context) -> dict[str, Path]:
    """Files every checkpoint carries (the tokenizer, so a checkpoint stands alone)."""
    p = ctx.run.tokens_dir / "tokenizer.json"
    return {"tokenizer.json": p} if p.exists() else {}


def domain_seed(seed: int, domain: str) -> list[int]:
    """A seed for per-domain randomness that does not depend on Python's hash salt."""
    import zlib

    return [seed, zlib.crc32(domain.encode("utf-8"))]
