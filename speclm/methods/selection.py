"""Expert selection rules for the asymmetric methods (SLM-mix here, SLM-pn reuses them).

At specialization time one expert of k is kept and fine-tuned (docs/paper.md Table 5):

- ``most_frequent``: the expert of the domain's most frequent cluster (the default; free);
- ``best_pretrained``: the expert with the lowest loss on the domain's valid split, before
  fine-tuning (k evaluations);
- ``finetune_all``: fine-tune every expert and keep the one with the best valid loss (k
  fine-tunes; the specialization cost counts all of them).

A rule is a function ``(pool: ExpertPool) -> Choice`` registered with :func:`rule`;
another method may add its own (SLM-pn adds "histogram").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.errors import SpeclmError


@dataclass
class ExpertPool:
    """What a rule may look at. ``pretrained_loss(i)`` and ``finetune(i)`` are only called
    by the rules that need them; ``finetune(i)`` returns an object with ``best_valid_loss``
    (e.g. a :class:`speclm.methods.finetune.FinetuneResult`)."""

    k: int
    histogram: np.ndarray  # the domain's cluster probabilities, shape [k]
    pretrained_loss: Callable[[int], float] | None = None
    finetune: Callable[[int], Any] | None = None
    experts: list[int] | None = None  # experts that exist (default: all k)

    def candidates(self) -> list[int]:
        return list(range(self.k)) if self.experts is None else list(self.experts)


@dataclass
class Choice:
    expert: int
    rule: str
    scores: dict[int, float] = field(default_factory=dict)  # per expert: what the rule compared
    finetuned: Any = None  # finetune_all: the kept fine-tune result (the others are discarded)
    evaluations: int = 0  # pretrained-expert evaluations the rule paid for
    finetunes: int = 0  # fine-tunes the rule paid for

    def to_json(self) -> dict:
        return {
            "expert": int(self.expert),
            "rule": self.rule,
            "scores": {str(k): float(v) for k, v in self.scores.items()},
            "evaluations": self.evaluations,
            "finetunes": self.finetunes,
        }


RULES: dict[str, Callable[[ExpertPool], Choice]] = {}


def rule(name: str):
    """Register a selection rule under ``name``."""

    def deco(fn: Callable[[ExpertPool], Choice]):
        RULES[name] = fn
        return fn

    return deco


def known_rules() -> list[str]:
    return sorted(RULES)


def check_rule(name: str) -> str:
    """Refuse an unknown rule before any work starts."""
    if name not in RULES:
        raise SpeclmError(f"unknown expert rule {name!r}; known: {', '.join(known_rules())}")
    return name


def select(name: str, pool: ExpertPool) -> Choice:
    check_rule(name)
    if not pool.candidates():
        raise SpeclmError("no expert to choose from")
    return RULES[name](pool)


@rule("most_frequent")
def most_frequent(pool: ExpertPool) -> Choice:
    hist = np.asarray(pool.histogram, dtype=np.float64)
    cands = pool.candidates()
    # ties go to the lowest expert id (argmax order), so the choice is deterministic
    best = max(cands, key=lambda i: (hist[i], -i))
    return Choice(expert=best, rule="most_frequent", scores={i: float(hist[i]) for i in cands})


@rule("best_pretrained")
def best_pretrained(pool: ExpertPool) -> Choice:
    if pool.pretrained_loss is None:
        raise SpeclmError("expert rule best_pretrained needs the experts' domain valid loss")
    scores = {i: float(pool.pretrained_loss(i)) for i in pool.candidates()}
    best = min(scores, key=lambda i: (scores[i], i))
    return Choice(expert=best, rule="best_pretrained", scores=scores, evaluations=len(scores))


@rule("finetune_all")
def finetune_all(pool: ExpertPool) -> Choice:
    if pool.finetune is None:
        raise SpeclmError("expert rule finetune_all needs a fine-tuning function")
    results = {i: pool.finetune(i) for i in pool.candidates()}
    scores = {i: float(r.best_valid_loss) for i, r in results.items()}
    best = min(scores, key=lambda i: (scores[i], i))
    return Choice(
        expert=best, rule="finetune_all", scores=scores, finetuned=results[best], finetunes=len(results)
    )
