"""What every method is: two verbs, ``pretrain`` and ``specialize``, registered by name.

Whatever the method, ``specialize`` ends in a plain transformer of the small (inference)
size, saved as an ordinary checkpoint folder (see speclm.train.checkpoint). Evaluation,
export and reports never need to know which method made it.

Folders (under the run folder):
  pretrain/<method>/                 shared pretraining (SLM, LLM, SLM-mix, SLM-pn, SLM-d)
  pretrain/<method>/<domain>/        per-domain pretraining (SLM-is, SLM-dsir)
  specialize/<method>/<domain>/<size>/   the specialized small model + cost.json
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from ..core.errors import SpeclmError
from ..core.run import Run


@dataclass
class Context:
    """What a method needs to run: the run folder (config, stage outputs) and a logger."""

    run: Run
    log: Callable[[str], None] = print
    force: bool = False

    @property
    def config(self):
        return self.run.config

    @functools.cached_property
    def shards(self):
        """The run's token shards, opened once for every method call on this context."""
        from ..tokens.shards import TokenShards

        return TokenShards(self.run.tokens_dir)

    @functools.cached_property
    def clusters(self):
        """The run's clusterings, opened once for every method call on this context."""
        from ..clusters.store import Clusters

        return Clusters(self.run.clusters_dir)

    def pretrain_dir(self, method: str, domain: str | None = None) -> Path:
        return self.run.pretrain_dir(method, domain)

    def specialize_dir(self, method: str, domain: str, size: str) -> Path:
        return self.run.specialize_dir(method, domain, size)


class Method:
    """Base class. Subclasses set ``name`` and implement the two verbs."""

    name: ClassVar[str] = ""
    # True when pretraining is done once and shared by every domain (C_generic);
    # False when it is paid per domain (SLM-is, SLM-dsir) or absent (SLM-nopt).
    shared_pretraining: ClassVar[bool] = True
    # True when the method's pretraining needs a domain (per-domain pretraining).
    needs_domain_for_pretrain: ClassVar[bool] = False
    # True when the specialized model is the small (inference) size.
    small_at_inference: ClassVar[bool] = True
    # The methods whose pretraining ``pretrain`` runs (None: this method's own, or its
    # ``pretrain_from``; () : none). The grid schedules each as its own job, once.
    pretrains: ClassVar[tuple[str, ...] | None] = None
    # Methods whose specialization of the same domain and size ``specialize`` reads (SLM-d's teacher).
    specialize_uses: ClassVar[tuple[str, ...]] = ()

    def check(self, ctx: Context) -> None:
        """Refuse bad settings (e.g. an unknown expert rule) before any work starts."""

    def cluster_ks(self, ctx: Context) -> list[int]:
        """The clusterings (k values) this method reads; a domain must be clustered at each."""
        return []

    def pretrain(self, ctx: Context, domain: str | None = None) -> Path:
        raise NotImplementedError

    def curve_loops(self, ctx: Context) -> list[Path]:
        """The training folders of the shared pretraining this method specializes from (each
        with ``final/`` and, for a curve method, ``snapshots/``; speclm.methods.curves): one,
        except for SLM-mix (one per expert)."""
        unit = self.pretrains[0] if self.pretrains else getattr(self, "pretrain_from", None) or self.name
        return [ctx.pretrain_dir(unit)]

    def specialize(self, ctx: Context, domain: str, size: str) -> Path:
        raise NotImplementedError

    def row_extra(self, ctx: Context, domain: str, size: str) -> dict:
        """What a grid row of this method adds under ``extra`` beside its specialization's
        summary (SLM-is: its resample's passes and effective sample size)."""
        return {}

    def routed_generic(self, ctx: Context):
        """The generic model of a method whose pretraining is a set of experts (SLM-mix,
        SLM-pn), at the context's pretraining (``final/``, or a curve view's snapshot): a
        :class:`speclm.methods.routed.Routed` that sends each generic valid window through
        its own cluster's expert. None for a method with one generic model (its start
        checkpoint is it)."""
        return None

    def start_checkpoint(self, ctx: Context, domain: str, size: str, folder: Path) -> Path | None:
        """The small model the finished specialization in ``folder`` was fine-tuned from (the
        grid evaluates it before fine-tuning: Table 4's no-FT column); None when there is
        none. Default: a model the method instantiated in the job folder, ``folder/expert``
        (SLM-pn), or ``folder/experts/<chosen>/expert`` when it fine-tuned several."""
        from ..core import manifest

        if (folder / "expert" / "model.json").exists():
            return folder / "expert"
        chosen = (manifest.job_summary(folder) or {}).get("expert") if manifest.is_done(folder) else None
        if isinstance(chosen, int) and (folder / "experts" / str(chosen) / "expert" / "model.json").exists():
            return folder / "experts" / str(chosen) / "expert"
        return None


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> Method:
    _load_all()
    if name not in REGISTRY:
        raise SpeclmError(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]()


def known() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def default_methods() -> list[str]:
    """The methods a grid computes when none are named: every known one but the ablations
    (speclm.core.sections.ABLATIONS), which run only when named."""
    from ..core.sections import ABLATIONS

    return [m for m in known() if m not in ABLATIONS]


def _load_all() -> None:
    """Import every method module so it registers itself."""
    import importlib
    import pkgutil

    from .. import methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("slm") or info.name.startswith("llm"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
