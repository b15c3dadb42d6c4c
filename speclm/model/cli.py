"""``speclm shapes``: the named model shapes, their parameter counts and FLOPs."""

from __future__ import annotations

from typing import Optional

import typer


def shapes_cmd(
    vocab: int = typer.Option(32768, "--vocab", help="Vocabulary size."),
    seq: int = typer.Option(1024, "--seq", help="Window (context) length."),
    mlp: Optional[str] = typer.Option(None, "--mlp", help="swiglu or plain (default: each shape's own)."),
) -> None:
    """List the named model shapes with parameter counts and training FLOPs per token.

    \b
    Example:
      speclm shapes --vocab 8192 --seq 256"""
    from ..model.transformer import NAMED_SHAPES, describe, named_shape

    for name in NAMED_SHAPES:
        s = named_shape(name, vocab, max_seq_len=seq, mlp=mlp)
        typer.echo(f"{name:>11}  {s.n_layer} layers, d={s.d_model}, {s.n_head} heads, {s.mlp} MLP {s.d_mlp}"
                   f"{', tied' if s.tie_embeddings else ''}: {describe(s, seq)}")
