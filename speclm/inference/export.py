"""``speclm export``: a checkpoint as a Hugging Face transformers folder.

The folder holds ``config.json`` (``LlamaForCausalLM``), ``model.safetensors`` with
Llama's tensor names, ``generation_config.json``, the tokenizer (``tokenizer.json`` +
``tokenizer_config.json``) and a model card ``README.md``, so
``AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained
(folder)`` load it with no speclm code. Our maths is Llama's, so logits agree to float
rounding. When transformers is installed (the ``hf`` extra) the folder is written by its
own ``save_pretrained`` (config, weights, generation config and tokenizer as transformers
writes them); without it, the same files are written by hand. The generation config
names the end-of-text token (as eos and pad) and sets no ``max_length``, so
``generate(max_new_tokens=...)`` runs without a warning.

A job folder (``pretrain/slm``, ``specialize/slm-is/DOMAIN/SIZE``) is accepted in place
of a checkpoint: :func:`resolve_checkpoint` takes its result (see there).

The plain 2-matrix MLP has no Llama equivalent; it is written exactly as a Llama MLP with
biases (``mlp_bias``): ``gate = W_up``, ``up = 0·x + 1``, ``act = gelu``, so
``down(gelu(gate x) * 1) = down(gelu(W_up x))``. That file carries one extra zero matrix
per layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from ..core import atomic
from ..core.errors import SpeclmError
from ..model.transformer import Transformer
from ..tokens.bpe import EOT
from ..core.manifest import hash_file



def tokenizer_sha256(path: str | Path) -> str:
    return hash_file(path)


def find_tokenizer(checkpoint: str | Path, run_tokens_dir: Optional[str | Path] = None) -> Path:
    """The tokenizer of a checkpoint: its own copy, else the run's; checked against the
    hash recorded at training time when there is one."""
    from ..train.checkpoint import read_meta

    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    cands = [checkpoint / "tokenizer.json"]
    if run_tokens_dir is not None:
        cands.append(Path(run_tokens_dir) / "tokenizer.json")
    for c in cands:
        if c.is_file():
            want = meta.get("tokenizer_sha256")
            if want and tokenizer_sha256(c) != want:
                raise SpeclmError(
                    f"tokenizer {c} is not the one {checkpoint} was trained with (sha256 differs); "
                    f"pass the run folder the model was trained in"
                )
            return c
    raise SpeclmError(f"no tokenizer.json in {checkpoint}; pass --run with the run folder the model was trained in")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or the best checkpoint of a training (job) folder:
    ``merged/`` (LoRA, merged) when there is one; else, for a fine-tune (its ``final/`` is
    the best validated weights, early stopping restores them) ``final/``; for a pretraining
    its best validated weights ``best/``, else ``final/``. A one-line error otherwise."""
    from ..train.checkpoint import MODEL_FILE

    path = Path(path)
    if (path / "model.json").is_file() or not path.is_dir():
        return path  # a checkpoint (or a missing path: read_meta says so)
    phase = ""
    for cost in (path / "cost.json", path / "final" / "cost.json"):
        try:
            phase = str(json.loads(cost.read_text(encoding="utf-8")).get("phase", "")) if cost.is_file() else ""
        except (OSError, ValueError):
            phase = ""
        if phase:
            break
    order = ["merged", "final", "best"] if phase == "specialize" else ["merged", "best", "final"]
    for name in order:
        if (path / name / "model.json").is_file() and (path / name / MODEL_FILE).is_file():
            return path / name
    raise SpeclmError(f"{path} is neither a checkpoint folder (model.safetensors + model.json) nor a training folder "
                      "holding one (merged/, final/ or best/); is the job finished?")


def llama_config(model: Transformer, eos_id: Optional[int]) -> dict:
    s = model.shape
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": s.vocab_size,
        "hidden_size": s.d_model,
        "intermediate_size": s.d_mlp,
        "num_hidden_layers": s.n_layer,
        "num_attention_heads": s.n_head,
        "num_key_value_heads": s.n_head,
        "head_dim": s.head_dim,
        "hidden_act": "silu" if s.mlp == "swiglu" else "gelu",
        "mlp_bias": s.mlp == "plain",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "max_position_embeddings": s.max_seq_len,
        "rms_norm_eps": s.norm_eps,
        "rope_theta": s.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": s.rope_theta},
        "tie_word_embeddings": s.tie_embeddings,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def llama_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under Llama's names (fused q/k/v and gate/up matrices split)."""
    s = model.shape
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out = {"model.embed_tokens.weight": sd["embed.weight"], "model.norm.weight": sd["norm.weight"]}
    if not s.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(s.n_layer):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = sd[src + "attn.qkv.weight"].chunk(3, dim=0)
        out[dst + "self_attn.q_proj.weight"] = q
        out[dst + "self_attn.k_proj.weight"] = k
        out[dst + "self_attn.v_proj.weight"] = v
        out[dst + "self_attn.o_proj.weight"] = sd[src + "attn.proj.weight"]
        out[dst + "input_layernorm.weight"] = sd[src + "attn_norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = sd[src + "mlp_norm.weight"]
        if s.mlp == "swiglu":
            gate, up = sd[src + "mlp.gate_up.weight"].chunk(2, dim=0)
            out[dst + "mlp.gate_proj.weight"] = gate
            out[dst + "mlp.up_proj.weight"] = up
            out[dst + "mlp.down_proj.weight"] = sd[src + "mlp.down.weight"]
        else:
            w_up = sd[src + "mlp.up.weight"]
            out[dst + "mlp.gate_proj.weight"] = w_up
            out[dst + "mlp.gate_proj.bias"] = torch.zeros(s.d_mlp)
            out[dst + "mlp.up_proj.weight"] = torch.zeros_like(w_up)
            out[dst + "mlp.up_proj.bias"] = torch.ones(s.d_mlp)
            out[dst + "mlp.down_proj.weight"] = sd[src + "mlp.down.weight"]
            out[dst + "mlp.down_proj.bias"] = torch.zeros(s.d_model)
    return {k: v.contiguous() for k, v in out.items()}


def generation_config(eos_id: Optional[int]) -> dict:
    """End of text as eos and pad (open-ended generation needs no padding warning); no
    ``max_length``: the caller's ``max_new_tokens`` decides."""
    return {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id}


def _save_with_transformers(model: Transformer, cfg: dict, tmp: Path) -> bool:
    """Write the model through transformers' own ``save_pretrained`` (config, weights,
    generation config); False when transformers is not installed. The tokenizer files are
    ours (``PreTrainedTokenizerFast``, which every transformers version since 4 loads)."""
    try:
        import transformers
    except ImportError:
        return False
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")})
    hf_cfg.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(hf_cfg)
    sd = llama_state_dict(model)
    hf.load_state_dict(sd, strict=False, assign=True)
    if model.shape.tie_embeddings:
        hf.tie_weights()
    missing = [n for n, p in hf.named_parameters() if p.is_meta]
    if missing:  # every parameter must come from our weights
        raise SpeclmError(f"export: transformers' Llama has parameters our model does not fill: {', '.join(missing[:4])}")
    hf.generation_config = transformers.GenerationConfig(**generation_config(cfg["eos_token_id"]))
    hf.save_pretrained(str(tmp), safe_serialization=True)
    return True


def export_hf(model: Transformer, tokenizer_path: str | Path, out_dir: str | Path, marker: Optional[dict] = None,
              card: Optional[str] = None) -> Path:
    """Write ``model`` and its tokenizer as a transformers folder (atomically); ``marker``
    (which checkpoint this is) goes into ``speclm-export.json``, ``card`` (markdown with
    YAML front matter) into ``README.md``."""
    from ..tokens.bpe import open_tokenizer

    if not isinstance(model, Transformer):
        raise SpeclmError("export needs a plain speclm transformer (specialize a method's model first)")
    tok = open_tokenizer(tokenizer_path, fix="restore it (a checkpoint's copy is the run's tokens/tokenizer.json)")
    n_tok = tok.get_vocab_size()
    if n_tok > model.shape.vocab_size:
        raise SpeclmError(
            f"tokenizer {tokenizer_path} has {n_tok} tokens but the model only {model.shape.vocab_size}: "
            f"not the tokenizer this model was trained with"
        )
    eos_id = tok.token_to_id(EOT)
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.shape.max_seq_len,
        "clean_up_tokenization_spaces": False,
    }
    if eos_id is not None:
        tok_cfg.update({"eos_token": EOT, "bos_token": EOT, "unk_token": EOT})
    out_dir = Path(out_dir)
    cfg = llama_config(model, eos_id)
    with atomic.atomic_dir(out_dir) as tmp:
        if not _save_with_transformers(model, cfg, tmp):
            save_file(llama_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            (tmp / "generation_config.json").write_text(json.dumps(generation_config(eos_id), indent=2) + "\n")
        (tmp / "tokenizer.json").write_bytes(Path(tokenizer_path).read_bytes())
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
        if card is not None:
            (tmp / "README.md").write_text(card, encoding="utf-8")
        if marker is not None:
            (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return out_dir


EXPORT_MARKER = "speclm-export.json"
# Every file an export writes: --force replaces a folder holding these and nothing else.
EXPORT_FILES = frozenset({"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                          "tokenizer_config.json", "README.md", EXPORT_MARKER})  # README.md: the model card


def check_export_target(checkpoint: str | Path, out_dir: str | Path, force: bool = False) -> dict:
    """Refuse an ``--out`` that would destroy data: the checkpoint itself, a folder inside
    or around it, another checkpoint, a file, or a non-empty folder that is not a previous
    export of this same checkpoint (that one only with ``force``). Returns the marker the
    export writes (the checkpoint's weights hash)."""
    from ..core.manifest import hash_file
    from ..train.checkpoint import MODEL_FILE, read_meta

    ck, out = Path(checkpoint).resolve(), Path(out_dir).resolve()
    read_meta(ck)  # a real checkpoint, or a one-line error
    marker = {"format": "speclm-export", "checkpoint": str(ck), "model_sha256": hash_file(ck / MODEL_FILE)}
    if out == ck or ck in out.parents or out in ck.parents:
        raise SpeclmError(f"--out {out_dir} is the checkpoint {checkpoint}, inside it or around it; "
                          f"export into a new or empty folder")
    if not out.exists():
        return marker
    if not out.is_dir():
        raise SpeclmError(f"--out {out_dir} is a file; export into a new or empty folder")
    if not any(out.iterdir()):
        return marker
    if (out / "model.json").exists():
        raise SpeclmError(f"--out {out_dir} holds a speclm checkpoint; export into a new or empty folder")
    mark = out / EXPORT_MARKER
    try:
        prev = json.loads(mark.read_text(encoding="utf-8")) if mark.is_file() else None
    except (OSError, ValueError):
        prev = None
    if not isinstance(prev, dict) or prev.get("model_sha256") != marker["model_sha256"]:
        raise SpeclmError(f"--out {out_dir} is not empty (and not an export of this checkpoint); "
                          f"export into a new or empty folder")
    if not force:
        raise SpeclmError(f"--out {out_dir} holds a previous export of this checkpoint; pass --force to replace it")
    others = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES)
    if others:  # --force replaces the export, never a file the user put beside it
        raise SpeclmError(f"--out {out_dir} holds files that are not part of the export ({', '.join(others[:3])}"
                          f"{' ...' if len(others) > 3 else ''}); move them out, or export into a new folder")
    return marker


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, run_tokens_dir: Optional[str | Path] = None, force: bool = False,
    facts: Optional[dict] = None,
) -> Path:
    """Export a checkpoint (or a job folder's best checkpoint) with its model card: from
    ``facts`` (what the run measured: speclm.inference.card) when given, else from the
    checkpoint's own files."""
    from ..train.checkpoint import load_transformer
    from .card import checkpoint_facts, render_card

    checkpoint = resolve_checkpoint(checkpoint)
    marker = check_export_target(checkpoint, out_dir, force)
    model = load_transformer(checkpoint)
    card = render_card({"name": Path(out_dir).name, **checkpoint_facts(checkpoint, model), **(facts or {})})
    return export_hf(model, find_tokenizer(checkpoint, run_tokens_dir), out_dir, marker=marker, card=card)
