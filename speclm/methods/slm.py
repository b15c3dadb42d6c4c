"""SLM: the small model pretrained on the generic set, then fine-tuned on the domain."""

from __future__ import annotations

from .base import register
from .recipe import PretrainThenFinetune


@register
class SLM(PretrainThenFinetune):
    """Small model pretrained on the generic set, fine-tuned with early stopping."""

    name = "slm"
