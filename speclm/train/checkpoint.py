"""Checkpoint folders: safetensors plus JSON, written whole or not at all.

::

    CKPT/model.safetensors      the weights (a tied matrix stored once)
    CKPT/model.json             {"shape": {...ModelShape...}, "param_count": ..., ...}
    CKPT/optimizer.safetensors  for resume: every optimizer state tensor, "<param>.<name>"
    CKPT/state.json             for resume: step, data position, counters, RNG, param groups

No pickle anywhere: torch's RNG state is stored as base64 text in state.json.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Mapping, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from ..core import atomic
from ..core.errors import SpeclmError
from ..core.manifest import hash_file
from ..model.transformer import ModelShape, Transformer

MODEL_FILE = "model.safetensors"
META_FILE = "model.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
TOKENIZER_FILE = "tokenizer.json"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


# -- writing ------------------------------------------------------------------------------


def model_meta(model: torch.nn.Module, extra: Optional[Mapping] = None) -> dict:
    model = unwrap(model)
    meta: dict = {"format": "speclm", "param_count": sum(p.numel() for p in model.parameters())}
    if isinstance(model, Transformer):
        meta["kind"] = "transformer"
        meta["shape"] = model.shape.to_dict()
    meta.update(extra or {})
    return meta


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def rng_state() -> dict:
    enc = lambda t: base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")  # noqa: E731
    out = {"torch": enc(torch.get_rng_state())}
    if torch.cuda.is_available():
        out["cuda"] = [enc(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: Mapping) -> None:
    dec = lambda s: torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)  # noqa: E731
    torch.set_rng_state(dec(state["torch"]))
    if torch.cuda.is_available() and "cuda" in state and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([dec(s) for s in state["cuda"]])


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    meta: Optional[Mapping] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    state: Optional[Mapping] = None,
    files: Optional[Mapping[str, str | Path]] = None,
    documents: Optional[Mapping[str, Mapping]] = None,
) -> Path:
    """Write a checkpoint folder atomically (readers see the old folder or the new one).

    ``optimizer`` and ``state`` make it resumable; ``files`` copies extra files in
    (e.g. ``{"tokenizer.json": path}``); ``documents`` writes extra JSON files in (e.g. a
    snapshot's ``{"cost.json": {...}}``).
    """
    path = Path(path)
    model = unwrap(model)
    meta = dict(meta or {})
    tok = (files or {}).get(TOKENIZER_FILE)
    if tok is not None and "tokenizer_sha256" not in meta:  # every checkpoint names its tokenizer
        meta["tokenizer_sha256"] = hash_file(tok)
    with atomic.atomic_dir(path) as tmp:
        _os_errors(save_model, model, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        (tmp / META_FILE).write_text(json.dumps(model_meta(model, meta), indent=2, sort_keys=True) + "\n")
        if optimizer is not None:
            tensors, rest = _optimizer_tensors(optimizer)
            _os_errors(save_file, tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": "pt"})
            st = dict(state or {})
            st["optimizer"] = rest
            st["rng"] = rng_state()
            (tmp / STATE_FILE).write_text(json.dumps(st, indent=2, sort_keys=True, default=str) + "\n")
        elif state is not None:
            (tmp / STATE_FILE).write_text(json.dumps(dict(state), indent=2, sort_keys=True, default=str) + "\n")
        for name, src in (files or {}).items():
            shutil.copyfile(src, tmp / name)
        for name, doc in (documents or {}).items():
            (tmp / name).write_text(json.dumps(dict(doc), indent=2, sort_keys=True) + "\n")
    return path


# -- reading ------------------------------------------------------------------------------


MAX_VOCAB = 1 << 24  # 16M tokens: far above any real vocabulary


def _os_errors(write, *args, **kw) -> None:
    """Run a safetensors writer; its I/O failures (a full disk, a read-only folder) come back
    as the OSError they are (safetensors raises its own error type), so the atomic writer
    turns them into its one line naming the file."""
    import errno as _errno
    import os
    import re

    try:
        write(*args, **kw)
    except SafetensorError as e:
        code = re.search(r"code: (\d+)", str(e))
        if code:
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from None
        if "No space left" in str(e) or "StorageFull" in str(e):
            raise OSError(_errno.ENOSPC, os.strerror(_errno.ENOSPC)) from None
        raise


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    f = path / META_FILE
    if not (path / MODEL_FILE).is_file() or not f.is_file():
        raise SpeclmError(f"{path} is not a checkpoint folder (needs {MODEL_FILE} and {META_FILE})")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise SpeclmError(f"{f} is not valid JSON ({e}); restore that checkpoint or train it again") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("shape", {}), dict):
        raise SpeclmError(f"{f} is not a checkpoint description (expected a JSON object with a 'shape' object); "
                          "restore that checkpoint or train it again")
    return meta


def read_shape(path: str | Path) -> ModelShape:
    meta = read_meta(path)
    if "shape" not in meta:
        raise SpeclmError(f"{path} holds a {meta.get('kind', 'non-transformer')} model, not a plain transformer")
    try:
        shape = ModelShape.from_dict(meta["shape"])
    except (TypeError, ValueError, KeyError) as e:
        raise SpeclmError(f"{Path(path) / META_FILE}: not a usable model shape ({e})") from None
    if shape.vocab_size > MAX_VOCAB:  # an absurd vocabulary would allocate terabytes before failing
        raise SpeclmError(f"{Path(path) / META_FILE}: vocab_size {shape.vocab_size} is absurd (over {MAX_VOCAB}); the file is damaged")
    return shape


def _shape_diff(a: Mapping, b: Mapping) -> str:
    diffs = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diffs)


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load a checkpoint's weights into ``model``; another shape is a clear error."""
    path = Path(path)
    meta = read_meta(path)
    target = unwrap(model)
    if isinstance(target, Transformer) and "shape" in meta:
        mine = target.shape.to_dict()
        theirs = dict(meta["shape"])
        diff = _shape_diff(theirs, mine)
        if diff:
            raise SpeclmError(f"checkpoint {path} is for another model shape ({diff}; checkpoint vs model)")
    try:
        load_model(target, str(path / MODEL_FILE), strict=True, device=str(next(target.parameters()).device))
    except SafetensorError as e:
        raise SpeclmError(f"{path / MODEL_FILE} is truncated or corrupt ({e}); retrain or restore that checkpoint") from None
    except RuntimeError as e:  # the detail (which tensor, both shapes) is after the first line
        detail = "; ".join(line.strip() for line in str(e).strip().splitlines()[1:4] if line.strip())
        raise SpeclmError(f"checkpoint {path} does not fit this model: {detail or e}") from None
    return model


def load_transformer(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Build the plain transformer a checkpoint describes and load its weights."""
    model = Transformer(read_shape(path)).to(device)
    load_weights(model, path)
    return model


def load_projected(path: str | Path, device: str | torch.device = "cpu"):
    """The projected network saved in checkpoint folder ``path`` (written by slm-pn's pretraining)."""
    from ..model.projected import ProjectedNetwork

    pn = ProjectedNetwork.from_meta(read_meta(path), str(path)).to(device)
    load_weights(pn, path)
    return pn


def is_resumable(path: str | Path) -> bool:
    path = Path(path)
    return all((path / f).is_file() for f in (MODEL_FILE, META_FILE, OPTIMIZER_FILE, STATE_FILE))


def load_resume(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG from a resumable checkpoint; return its state."""
    path = Path(path)
    try:
        load_weights(model, path)
    except SpeclmError as e:
        raise SpeclmError(f"{e}; or rerun with --restart to start this training job over") from None
    try:
        return _load_resume(path, optimizer)
    except SpeclmError:
        raise
    except Exception as e:  # a damaged state.json / optimizer file: which one, and the way out
        which = OPTIMIZER_FILE if isinstance(e, SafetensorError) else STATE_FILE
        raise SpeclmError(
            f"the resume state in {path / which} is damaged ({type(e).__name__}: {e}); "
            f"rerun with --restart to start this training job over"
        ) from None


def _load_resume(path: Path, optimizer: torch.optim.Optimizer) -> dict:
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    opt = state.pop("optimizer")
    tensors = load_file(str(path / OPTIMIZER_FILE))
    per_param: dict[int, dict] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = t
    for key, v in opt["scalars"].items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = v
    groups = opt["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    if len(groups) != len(optimizer.param_groups) or any(
        len(a["params"]) != len(b["params"]) for a, b in zip(groups, optimizer.param_groups)
    ):
        raise SpeclmError(f"checkpoint {path} was saved for other trainable parameters; use a new output folder")
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    set_rng_state(state.pop("rng"))
    _check_counters(path / STATE_FILE, state)
    return state


# The loop's counters in state.json and their types (speclm.train.resume.new_state).
_COUNTERS = {"step": int, "position": int, "tokens": int, "flops": (int, float), "wall_seconds": (int, float)}


def _check_counters(path: Path, state: dict) -> None:
    for key, typ in _COUNTERS.items():
        v = state.get(key)
        if not isinstance(v, typ) or isinstance(v, bool) or v < 0:
            raise SpeclmError(f"{key!r} in {path} is {v!r}, not a count >= 0; rerun with --restart to start this "
                              "training job over")

def check_tokenizer(meta: Mapping, shards, checkpoint) -> None:
    """Refuse a checkpoint trained with another tokenizer than the shards' (by the hash its
    model.json records, or else by the tokenizer.json it carries)."""
    want = meta.get("tokenizer_sha256")
    own = Path(checkpoint) / TOKENIZER_FILE
    if not want and own.is_file():
        want = hash_file(own)
    if want and want != shards.tokenizer_sha256:
        raise SpeclmError(
            f"checkpoint {checkpoint} was trained with another tokenizer than the one in {shards.dir}; "
            f"pass the run folder it was trained in"
        )
    vocab = meta.get("shape", {}).get("vocab_size")
    if vocab is not None and vocab < shards.vocab_size:
        raise SpeclmError(
            f"checkpoint {checkpoint} has a vocabulary of {vocab} but the shards in {shards.dir} use {shards.vocab_size}"
        )
