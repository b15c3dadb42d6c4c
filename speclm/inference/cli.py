"""``speclm eval``, ``speclm export``, ``speclm generate``: what runs a finished checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.options import CheckpointOpt, CheckpointRunOpt, DeviceOpt, run_of_checkpoint
from ..core.run import open_run


def _tokens_dir(run: Optional[Path]) -> Optional[Path]:
    return None if run is None else Path(run) / "tokens"


def eval_cmd(
    checkpoint: CheckpointOpt,
    run: CheckpointRunOpt = None,
    split: str = typer.Option("test", "--split", help="train, valid or test."),
    sets: Optional[list[str]] = typer.Option(None, "--on", help="Sets to evaluate (repeatable; default: every "
                                             "domain and generic)."),
    max_windows: Optional[int] = typer.Option(None, "--max-windows", help="At most this many windows per set, "
                                              "evenly spread (default: all)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per forward pass (does not change results)."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16 (autocast)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The results JSON to write (default: CHECKPOINT/eval-SPLIT.json)."),
    expert: Optional[int] = typer.Option(None, "--expert", help="A projected network (slm-pn's pretraining): the "
                                         "expert every set is evaluated through (required for one)."),
    device: DeviceOpt = None,
) -> None:
    """Perplexity of a checkpoint on each domain's and the generic set's split, and the
    paper's macro-average over domains (exp of the mean per-domain NLL). Every checkpoint
    the grid writes loads; a projected network needs --expert.

    \b
    Example:
      speclm eval --checkpoint runs/tiny/specialize/slm-is/kjv/16k/final --on kjv"""
    from .evaluate import evaluate_checkpoint, write_results
    from ..tokens.shards import TokenShards

    from ..core.errors import SpeclmError
    from ..core.ranks import check_device

    if max_windows is not None and max_windows < 1:
        raise SpeclmError(f"--max-windows must be at least 1 (leave it out for every window), got {max_windows}")
    check_device(device)
    run = run_of_checkpoint(checkpoint, run)
    if run is None:
        raise SpeclmError(f"{checkpoint} is not inside a run folder; give --run RUN (the run whose token sets to evaluate on)")
    r = open_run(run, None, None, save=False)
    shards = TokenShards(r.tokens_dir)
    result = evaluate_checkpoint(checkpoint, shards, device=device, sets=sets or None, split=split,
                                 max_windows=max_windows or 0, batch_size=batch_size, dtype=dtype, expert=expert)
    target = out or Path(checkpoint) / f"eval-{split}.json"
    write_results(target, result)
    for name, row in result["sets"].items():
        typer.echo(f"{name:>20}  ppl {row['ppl']:10.3f}  nll {row['nll']:.4f}  ({row['tokens']:,} tokens)")
    if "macro_ppl" in result:
        typer.echo(f"{'macro-average':>20}  ppl {result['macro_ppl']:10.3f}  over {len(result['macro_domains'])} domains")
    typer.echo(f"results: {target}")


def export_cmd(
    checkpoint: CheckpointOpt,
    out: Path = typer.Option(..., "--out", "-o", help="The Hugging Face transformers folder to write (config.json, "
                             "model.safetensors, tokenizer files)."),
    run: CheckpointRunOpt = None,
    force: bool = typer.Option(False, "--force", help="Replace a previous export of this same checkpoint in --out."),
) -> None:
    """Write a checkpoint as a Hugging Face transformers folder (LlamaForCausalLM config,
    safetensors, tokenizer) that AutoModelForCausalLM.from_pretrained loads. --out must be
    a new or empty folder (or, with --force, a previous export of the same checkpoint).

    \b
    Example:
      speclm export --checkpoint runs/tiny/specialize/slm-is/kjv/16k/final --out my-model"""
    from .export import export_checkpoint

    path = export_checkpoint(checkpoint, out, _tokens_dir(run_of_checkpoint(checkpoint, run)), force=force)
    typer.echo(f"transformers folder: {path}")


def generate_cmd(
    checkpoint: CheckpointOpt,
    prompt: str = typer.Option("", "--prompt", help="Text to continue (empty: start a new document)."),
    run: CheckpointRunOpt = None,
    max_new_tokens: int = typer.Option(100, "--max-new-tokens", help="Tokens to sample."),
    temperature: float = typer.Option(0.8, "--temperature", help="0 = greedy."),
    top_k: int = typer.Option(50, "--top-k", help="Sample among the k most likely tokens (0 = all)."),
    samples: int = typer.Option(1, "--samples", help="How many continuations."),
    seed: int = typer.Option(0, "--seed", help="Random seed (sample i uses seed + i)."),
    device: DeviceOpt = None,
) -> None:
    """Sample text from any checkpoint.

    \b
    Example:
      speclm generate --checkpoint runs/tiny/specialize/slm/kjv/16k/final --prompt 'And God said'"""
    from ..tokens.bpe import open_tokenizer

    from .export import find_tokenizer
    from .generate import generate_text
    from ..train import checkpoint as ckpt
    import math

    from ..core.errors import SpeclmError
    from ..core.ranks import check_device, default_device

    if not (math.isfinite(temperature) and temperature >= 0):
        raise SpeclmError(f"--temperature must be a number >= 0 (0 = greedy), got {temperature}")
    if samples < 1:
        raise SpeclmError(f"--samples must be at least 1, got {samples}")
    if max_new_tokens < 0 or top_k < 0:
        raise SpeclmError(f"--max-new-tokens and --top-k must be >= 0, got {max_new_tokens} and {top_k}")
    check_device(device)
    tok = open_tokenizer(find_tokenizer(checkpoint, _tokens_dir(run_of_checkpoint(checkpoint, run))),
                         fix="restore it (a checkpoint's copy is the run's tokens/tokenizer.json)")
    model = ckpt.load_transformer(checkpoint, device=device or default_device())
    for i in range(samples):
        text = generate_text(model, tok, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_k=top_k, seed=seed + i)
        if samples > 1:
            typer.echo(f"--- sample {i + 1}")
        typer.echo(prompt + text)
