"""``speclm generate``: sample text from any checkpoint (temperature, top-k; 0 = greedy)."""

from __future__ import annotations

from typing import Optional

import torch

from ..core.errors import SpeclmError
from ..tokens.bpe import EOT



@torch.no_grad()
def sample_ids(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int = 50,
    seed: int = 0,
    stop_id: Optional[int] = None,
) -> list[int]:
    """Continue ``prompt_ids``; returns the new ids. The context is cropped to the
    model's ``max_seq_len``. ``temperature == 0`` picks the most likely token."""
    if max_new_tokens < 0 or temperature < 0 or top_k < 0:
        raise SpeclmError("max_new_tokens, temperature and top_k must be >= 0")
    if not prompt_ids:
        raise SpeclmError("the prompt is empty: give at least one token")
    device = next(model.parameters()).device
    max_len = model.shape.max_seq_len
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits, _ = model(ids[:, -max_len:])
        logits = logits[0, -1].float().cpu()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        new.append(nxt)
        if stop_id is not None and nxt == stop_id:
            break
        ids = torch.cat([ids[:, -max_len:], torch.tensor([[nxt]], device=device)], dim=1)  # memory stays bounded
    model.train(was_training)
    return new


def generate_text(model, tokenizer, prompt: str, **kw) -> str:
    """The prompt's continuation as text (stops at ``<|endoftext|>``)."""
    ids = tokenizer.encode(prompt).ids
    if not ids:
        ids = [tokenizer.token_to_id(EOT) or 0]  # an empty prompt starts a new document
    vocab = model.shape.vocab_size
    if max(ids) >= vocab:
        raise SpeclmError(f"the tokenizer gives ids up to {max(ids)} but the model has {vocab}: tokenizer mismatch")
    new = sample_ids(model, ids, stop_id=tokenizer.token_to_id(EOT), **kw)
    return tokenizer.decode(new, skip_special_tokens=True)
