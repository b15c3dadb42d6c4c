"""``speclm eval``, ``speclm export``, ``speclm generate``: what runs a finished checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.options import CheckpointOpt, CheckpointRunOpt, DeviceOpt, run_of_checkpoint
from ..core.run import open_run


def _tokens_dir(run: Optional[Path]) -> Optional[Path]:
    return None if run is None else Path(run) / "tokens"


def _is_eval_result(path: Path) -> bool:
    """A file ``speclm eval`` wrote: a JSON object with the split, the sets and the checkpoint."""
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("sets"), dict) and "split" in doc and "checkpoint" in doc


def _eval_target(out: Optional[Path], checkpoint: Path, split: str) -> Path:
    from ..core.outputs import check_out_file

    target = out if out is not None else Path(checkpoint) / f"eval-{split}.json"
    return check_out_file(target, ".json", _is_eval_result, "an eval result (speclm eval's JSON)")


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
    if split not in ("train", "valid", "test"):
        raise SpeclmError(f"--split must be train, valid or test, got {split!r}")
    run = run_of_checkpoint(checkpoint, run)
    if run is None:
        raise SpeclmError(f"{checkpoint} is not inside a run folder; give --run RUN (the run whose token sets to evaluate on)")
    target = _eval_target(out, checkpoint, split)  # before any work: a refused --out writes nothing
    r = open_run(run, None, None, save=False)
    shards = TokenShards(r.tokens_dir)
    result = evaluate_checkpoint(checkpoint, shards, device=device, sets=sets or None, split=split,
                                 max_windows=max_windows or 0, batch_size=batch_size, dtype=dtype, expert=expert)
    write_results(target, result)
    for name, row in result["sets"].items():
        typer.echo(f"{name:>20}  ppl {row['ppl']:10.3f}  nll {row['nll']:.4f}  ({row['tokens']:,} tokens)")
    if "macro_ppl" in result:
        typer.echo(f"{'macro-average':>20}  ppl {result['macro_ppl']:10.3f}  over {len(result['macro_domains'])} domains")
    typer.echo(f"results: {target}")


def export_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="The transformers folder to write (with its model card README.md)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="A checkpoint folder (model.safetensors "
                                              "+ model.json), or a training job folder (its best checkpoint)."),
    run: CheckpointRunOpt = None,
    recommended: bool = typer.Option(False, "--recommended", help="Export the run's recommended checkpoint (written "
                                     "by `speclm plan`, `speclm run` or `speclm build` to RUN/eval/recommended.json)."),
    domain: Optional[str] = typer.Option(None, "--domain", help="With --recommended and several domains: which one."),
    force: bool = typer.Option(False, "--force", help="Replace a previous export of this same checkpoint in --out."),
) -> None:
    """Write a checkpoint as a Hugging Face transformers folder (LlamaForCausalLM config,
    safetensors, tokenizer, model card) that AutoModelForCausalLM.from_pretrained loads.
    --out must be a new or empty folder (or, with --force, a previous export of the same
    checkpoint).

    \b
    Example:
      speclm export --run runs/tiny --recommended --out my-model
      speclm export --checkpoint runs/tiny/specialize/slm-is/kjv/16k/final --out my-model"""
    from ..core.errors import SpeclmError
    from .export import export_checkpoint

    facts = None
    if recommended:
        if checkpoint is not None:
            raise SpeclmError("give --checkpoint or --recommended, not both")
        if run is None:
            raise SpeclmError("--recommended needs --run RUN (the run whose plan recommends a checkpoint)")
        checkpoint, facts = recommended_checkpoint(Path(run), domain)
    elif checkpoint is None:
        raise SpeclmError("give --checkpoint CHECKPOINT (or a job folder), or --run RUN --recommended")
    else:
        run = run_of_checkpoint(checkpoint, run)
    path = export_checkpoint(checkpoint, out, _tokens_dir(run), force=force, facts=facts)
    typer.echo(f"transformers folder: {path} (model card: {path / 'README.md'})")


def recommended_checkpoint(run: Path, domain: Optional[str]) -> tuple[Path, dict]:
    """The checkpoint and card facts that RUN/eval/recommended.json names for ``domain``."""
    import json

    from ..core.errors import SpeclmError
    from ..core.manifest import hash_file

    path = run / "eval" / "recommended.json"
    if not path.is_file():
        raise SpeclmError(f"no recommendation in {run} ({path} is missing): run `speclm plan --run {run}` first")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        models = {m["domains"][0]: m for m in doc["models"]}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise SpeclmError(f"{path} is damaged ({type(e).__name__}); run `speclm plan --run {run}` again") from None
    if doc.get("config_sha256") != hash_file(run / "config.toml"):
        raise SpeclmError(f"{run}/config.toml changed since {path} was written; run `speclm plan --run {run}` again")
    if domain is None and len(models) > 1:
        raise SpeclmError(f"the run recommends one model per domain ({', '.join(sorted(models))}); name one with --domain")
    name = domain or next(iter(models))
    if name not in models:
        raise SpeclmError(f"no recommended model for domain {name!r}; domains: {', '.join(sorted(models))}")
    return Path(models[name]["checkpoint"]), models[name]


def _check_length(model, max_new_tokens: int, samples: int) -> None:
    """A generation this machine could not finish in a year is refused with the estimate;
    one over an hour is said before it starts. Each new token is one forward pass over the
    context (up to the model's window) at this machine's FLOP ceiling, plus 0.1 ms of per-step
    overhead: a lower bound on the real time."""
    import sys

    from ..core.errors import SpeclmError
    from ..model.transformer import flops_per_token
    from ..train.budget import YEAR_S, machine_ceiling

    ctx = model.shape.max_seq_len
    rate, what = machine_ceiling()
    seconds = samples * max_new_tokens * (ctx * flops_per_token(model.shape, ctx) / 3 / rate + 1e-4)
    if seconds > YEAR_S:
        raise SpeclmError(f"--max-new-tokens {max_new_tokens:,} x {samples} sample(s) takes at least "
                          f"{seconds / YEAR_S:.3g} years on this machine ({what}); ask for fewer tokens")
    if seconds > 3600:
        print(f"speclm: warning: --max-new-tokens {max_new_tokens:,} x {samples} sample(s) takes at least "
              f"{seconds / 3600:.3g} hours on this machine", file=sys.stderr)


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
    _check_length(model, max_new_tokens, samples)
    for i in range(samples):
        text = generate_text(model, tok, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_k=top_k, seed=seed + i)
        if samples > 1:
            typer.echo(f"--- sample {i + 1}")
        typer.echo(prompt + text)
