"""CLI of the train stage: ``speclm train``, ``speclm eval``, ``speclm export``, ``speclm generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cli_options import PresetOpt, RunOpt, SetOpt, open_run
from ..errors import SpeclmError

CheckpointOpt = Annotated[
    Path, typer.Option("--checkpoint", "-c", help="A checkpoint folder (model.safetensors + model.json), e.g. OUT/final.")
]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu).")
]


def resolve_shape(run, shards, shape: str):
    """``small``/``large`` (the run's model config) or a named shape / ``dial:N``."""
    from ..model.transformer import named_shape

    m = run.config.model
    name = {"small": m.small, "large": m.large}.get(shape, shape)
    return name, named_shape(name, shards.vocab_size, max_seq_len=shards.window, mlp=m.mlp,
                             tie_embeddings=m.tie_embeddings)


def _tokens_dir(run: Optional[Path]) -> Optional[Path]:
    return None if run is None else Path(run) / "tokens"


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        run: RunOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
        set_name: str = typer.Option("generic", "--set-name", help="Which token set to train on: generic or a domain."),
        shape: Optional[str] = typer.Option(None, "--shape", help="small / large (the run's model.small / "
                                            "model.large), or a named shape: tiny, tiny-large, cpu-small, cpu-large, "
                                            "paper-slm, paper-llm, dial:N. Default: the --init checkpoint's, else small."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN/train/SET/SHAPE)."),
        init: Optional[Path] = typer.Option(None, "--init", help="Start from this checkpoint (fine-tuning)."),
        phase: Optional[str] = typer.Option(None, "--phase", help="pretrain or specialize (default: specialize with "
                                            "--init, else pretrain): where the costs go in cost.json."),
        early_stopping: bool = typer.Option(False, "--early-stopping", help="Stop after train.patience validations "
                                            "without improvement; the best weights are the result."),
        device: DeviceOpt = None,
    ) -> None:
        """Train a plain transformer on one token set with the one training loop.

        Writes OUT/final (the model), OUT/checkpoint (resume state), metrics.jsonl,
        cost.json and train.json. Rerunning the same command resumes a killed run.
        Under torchrun it trains with DDP.

        Budgets: --set train.max_steps=N (or max_tokens, max_flops, max_device_hours;
        the first reached stops).
        """
        from ..evaluate import make_valid_fn
        from ..model.transformer import Transformer, describe
        from ..tokens.shards import TokenShards
        from . import checkpoint as ckpt
        from .cost import read_cost
        from .data import WindowSampler
        from .loop import train

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
            from ..evaluate import check_tokenizer

            check_tokenizer(ckpt.read_meta(init), shards, init)
            ckpt.load_weights(model, init)
            try:
                prior = read_cost(init)
            except SpeclmError:
                prior = None
        phase = phase or ("specialize" if init is not None else "pretrain")
        out = out or r.path / "train" / set_name / shape_name
        train_w = shards.windows(set_name, "train")
        valid_w = shards.windows(set_name, "valid")
        valid = make_valid_fn(valid_w, max_windows=cfg.eval_batches * cfg.batch_size, batch_size=cfg.batch_size,
                              dtype=cfg.dtype) if len(valid_w) else None
        if early_stopping and valid is None:
            raise SpeclmError(f"--early-stopping needs a validation split, but {set_name}/valid has no windows")
        typer.echo(f"{shape_name}: {describe(model_shape, shards.window)}")
        typer.echo(f"training on {set_name}/train: {len(train_w)} windows of {shards.window} tokens -> {out}")
        meta = {"tokenizer_sha256": shards.tokenizer_sha256, "set": set_name, "shape_name": shape_name}
        res = train(
            model, WindowSampler(train_w, cfg.batch_size, seed=cfg.seed), cfg, out, valid_fn=valid, phase=phase,
            early_stopping=early_stopping, prior_cost=prior, meta=meta,
            files={"tokenizer.json": shards.dir / "tokenizer.json"}, device=device,
        )
        r.save_config()
        v = f", valid loss {res.best_valid:.4f} (best, step {res.best_step})" if res.best_valid is not None else ""
        typer.echo(f"stopped by {res.stop_reason} after {res.steps} steps, {res.tokens:,} tokens{v}")
        typer.echo(f"model: {res.final_dir}")

    @app.command("shapes")
    def shapes_cmd(
        vocab: int = typer.Option(32768, "--vocab", help="Vocabulary size."),
        seq: int = typer.Option(1024, "--seq", help="Window (context) length."),
        mlp: Optional[str] = typer.Option(None, "--mlp", help="swiglu or plain (default: each shape's own)."),
    ) -> None:
        """List the named model shapes with parameter counts and training FLOPs per token."""
        from ..model.transformer import NAMED_SHAPES, describe, named_shape

        for name in NAMED_SHAPES:
            s = named_shape(name, vocab, max_seq_len=seq, mlp=mlp)
            typer.echo(f"{name:>11}  {s.n_layer} layers, d={s.d_model}, {s.n_head} heads, {s.mlp} MLP {s.d_mlp}"
                       f"{', tied' if s.tie_embeddings else ''}: {describe(s, seq)}")

    @app.command("eval")
    def eval_cmd(
        checkpoint: CheckpointOpt,
        run: RunOpt = None,
        split: str = typer.Option("test", "--split", help="train, valid or test."),
        sets: Optional[list[str]] = typer.Option(None, "--on", help="Sets to evaluate (repeatable; default: every "
                                                 "domain and generic)."),
        max_windows: int = typer.Option(0, "--max-windows", help="At most this many windows per set, evenly spread "
                                        "(0 = all)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Windows per forward pass (does not change results)."),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16 (autocast)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Result JSON (default: CHECKPOINT/eval-SPLIT.json)."),
        device: DeviceOpt = None,
    ) -> None:
        """Perplexity of a checkpoint on each domain's and the generic set's split, and the
        paper's macro-average over domains (exp of the mean per-domain NLL)."""
        from ..evaluate import evaluate_checkpoint, write_results
        from ..tokens.shards import TokenShards

        r = open_run(run, None, None, save=False)
        shards = TokenShards(r.tokens_dir)
        result = evaluate_checkpoint(checkpoint, shards, device=device, sets=sets or None, split=split,
                                     max_windows=max_windows, batch_size=batch_size, dtype=dtype)
        target = out or Path(checkpoint) / f"eval-{split}.json"
        write_results(target, result)
        for name, row in result["sets"].items():
            typer.echo(f"{name:>20}  ppl {row['ppl']:10.3f}  nll {row['nll']:.4f}  ({row['tokens']:,} tokens)")
        if "macro_ppl" in result:
            typer.echo(f"{'macro-average':>20}  ppl {result['macro_ppl']:10.3f}  over {len(result['macro_domains'])} domains")
        typer.echo(f"results: {target}")

    @app.command("export")
    def export_cmd(
        checkpoint: CheckpointOpt,
        out: Path = typer.Option(..., "--out", "-o", help="The transformers folder to write."),
        run: RunOpt = None,
    ) -> None:
        """Write a checkpoint as a Hugging Face transformers folder (LlamaForCausalLM config,
        safetensors, tokenizer) that AutoModelForCausalLM.from_pretrained loads."""
        from ..export import export_checkpoint

        path = export_checkpoint(checkpoint, out, _tokens_dir(run))
        typer.echo(f"transformers folder: {path}")

    @app.command("generate")
    def generate_cmd(
        checkpoint: CheckpointOpt,
        prompt: str = typer.Option("", "--prompt", help="Text to continue (empty: start a new document)."),
        run: RunOpt = None,
        max_new_tokens: int = typer.Option(100, "--max-new-tokens", help="Tokens to sample."),
        temperature: float = typer.Option(0.8, "--temperature", help="0 = greedy."),
        top_k: int = typer.Option(50, "--top-k", help="Sample among the k most likely tokens (0 = all)."),
        samples: int = typer.Option(1, "--samples", help="How many continuations."),
        seed: int = typer.Option(0, "--seed", help="Random seed (sample i uses seed + i)."),
        device: DeviceOpt = None,
    ) -> None:
        """Sample text from any checkpoint."""
        from tokenizers import Tokenizer

        from ..export import find_tokenizer
        from ..generate import generate_text
        from . import checkpoint as ckpt
        from .distributed import default_device

        tok = Tokenizer.from_file(str(find_tokenizer(checkpoint, _tokens_dir(run))))
        model = ckpt.load_transformer(checkpoint, device=device or default_device())
        for i in range(samples):
            text = generate_text(model, tok, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=top_k, seed=seed + i)
            if samples > 1:
                typer.echo(f"--- sample {i + 1}")
            typer.echo(prompt + text)
