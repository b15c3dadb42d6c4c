"""LLM: the large model pretrained on the generic set, then fine-tuned (a reference that
breaks the inference budget: its specialized model is the large shape)."""

from __future__ import annotations

from .base import register
from .recipe import PretrainThenFinetune


@register
class LLM(PretrainThenFinetune):
    """Large model pretrained on the generic set, fine-tuned (breaks the inference budget)."""

    name = "llm"
    shape_kind = "large"
    small_at_inference = False
