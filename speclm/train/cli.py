"""``speclm train``: one plain transformer on one token set through the one training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.options import DeviceOpt, PresetOpt, RunOpt, SetOpt
from ..core.run import open_run
from ..core.errors import SpeclmError



def resolve_shape(run, shards, shape: str):
    """``small``/``large`` (the run's model config) or a named shape / ``dial:N``."""
    from ..model.transformer import named_shape

    m = run.config.model
    name = {"small": m.small, "large": m.large}.get(shape, shape)
    return name, named_shape(name, shards.vocab_size, max_seq_len=shards.window, mlp=m.mlp,
                             tie_embeddings=m.tie_embeddings)


# What the training loop writes in its folder: a folder holding any of them is one it wrote.
_LOOP_FILES = ("train.json", "checkpoint", "final", "best", "metrics.jsonl", "cost.json", "snapshots")


def _is_training_folder(path: Path) -> bool:
    """A folder ``speclm train`` wrote before (it resumes or finds it finished there)."""
    return any((path / name).exists() for name in _LOOP_FILES)


def _check_out(out: Path) -> Path:
    from ..core.outputs import check_out_folder

    return check_out_folder(out, _is_training_folder, "a training folder of `speclm train` (train.json, checkpoint/, final/ ...)")


def train_cmd(
    run: RunOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    set_name: str = typer.Option("generic", "--set-name", help="Which token set to train on: generic or a domain."),
    shape: Optional[str] = typer.Option(None, "--shape", help="small / large (the run's model.small / "
                                        "model.large), or a named shape: tiny, tiny-large, cpu-small, cpu-large, "
                                        "paper-slm, paper-llm, dial:N. Default: the --init checkpoint's, else small."),
    out: Optional[Path] = typer.Option(None, "--out", help="The training folder to write: final/ (the model), "
                                       "checkpoint/, metrics.jsonl, cost.json, train.json (default: RUN/train/SET/SHAPE)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this checkpoint (fine-tuning); without "
                                        "--run, the run is the one that holds it."),
    phase: Optional[str] = typer.Option(None, "--phase", help="pretrain or specialize (default: specialize with "
                                        "--init, else pretrain): where the costs go in cost.json."),
    early_stopping: bool = typer.Option(False, "--early-stopping", help="Stop after train.patience validations "
                                        "without improvement; the best weights are the result."),
    device: DeviceOpt = None,
    restart: bool = typer.Option(False, "--restart", help="Drop OUT's resume state (checkpoint, metrics, "
                                 "results) and train from step 0: the way out of a damaged checkpoint."),
) -> None:
    """Train a plain transformer on one token set with the one training loop.

    Writes OUT/final (the model), OUT/checkpoint (resume state), metrics.jsonl,
    cost.json and train.json. Rerunning the same command resumes a killed run.
    Under torchrun it trains with DDP.

    Budgets: --set train.max_steps=N (or max_tokens, max_flops, max_device_hours;
    the first reached stops).

    \b
    Example:
      speclm train --run runs/tiny --set-name kjv --shape small --set train.max_steps=200"""
    from .validate import make_valid_fn
    from ..model.transformer import Transformer, describe
    from ..tokens.shards import TokenShards
    from . import checkpoint as ckpt
    from .cost import read_cost
    from .data import WindowSampler
    from .loop import restarting, train

    if run is None and init is not None:  # fine-tuning a checkpoint: the run folder that holds it
        from ..core.options import run_of_checkpoint

        run = run_of_checkpoint(init)
    r = open_run(run, preset, set_, save=False)
    cfg = r.config.train
    shards = TokenShards(r.tokens_dir)
    shards.tokenizer  # checks the tokenizer against the shards
    if set_name not in shards.sets():
        raise SpeclmError(f"no set {set_name!r} in {r.tokens_dir}; sets: {', '.join(shards.sets())}")
    if shape is None and init is not None:
        model_shape = ckpt.read_shape(init)
        shape_name = ckpt.read_meta(init).get("shape_name", f"{model_shape.n_layer}x{model_shape.d_model}")
    else:
        shape_name, model_shape = resolve_shape(r, shards, shape or "small")
    import torch

    torch.manual_seed(cfg.seed)
    model = Transformer(model_shape)
    prior = None
    if init is not None:
        from .checkpoint import check_tokenizer

        check_tokenizer(ckpt.read_meta(init), shards, init)
        ckpt.load_weights(model, init)
        try:
            prior = read_cost(init)
        except SpeclmError:
            prior = None
    phase = phase or ("specialize" if init is not None else "pretrain")
    out = _check_out(out or r.train_dir(set_name, shape_name))
    train_w = shards.windows(set_name, "train")
    valid_w = shards.windows(set_name, "valid")
    valid = make_valid_fn(valid_w, max_windows=cfg.eval_batches * cfg.batch_size, batch_size=cfg.batch_size,
                          dtype=cfg.dtype) if len(valid_w) else None
    if early_stopping and valid is None:
        raise SpeclmError(f"--early-stopping needs a validation split, but {set_name}/valid has no windows")
    typer.echo(f"{shape_name}: {describe(model_shape, shards.window)}")
    typer.echo(f"training on {set_name}/train: {len(train_w)} windows of {shards.window} tokens -> {out}")
    meta = {"tokenizer_sha256": shards.tokenizer_sha256, "set": set_name, "shape_name": shape_name}
    with restarting(restart):
        res = train(
            model, WindowSampler(train_w, cfg.batch_size, seed=cfg.seed), cfg, out, valid_fn=valid, phase=phase,
            early_stopping=early_stopping, prior_cost=prior, meta=meta,
            files={"tokenizer.json": shards.dir / "tokenizer.json"}, device=device,
        )
    r.save_config()
    v = f", valid loss {res.best_valid:.4f} (best, step {res.best_step})" if res.best_valid is not None else ""
    typer.echo(f"stopped by {res.stop_reason} after {res.steps} steps, {res.tokens:,} tokens{v}")
    typer.echo(f"model: {res.final_dir}")
