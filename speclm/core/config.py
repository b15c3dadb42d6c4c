"""Typed configuration: one dataclass per stage, composed into :class:`Config`.

Presets live in ``speclm/configs/NAME.toml`` (tiny, demo, paper). A preset names only
what differs from the defaults; the resolved config (every default written out) is saved
as ``config.toml`` in the run folder. ``--set section.key=value`` overrides one value.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .errors import SpeclmError
from .sections import (CURVE_METHODS, NO_CURVE, ClustersConfig, CorpusConfig, MethodsConfig, ModelConfig, TokensConfig,
                       TrainConfig)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class Config:
    name: str = "tiny"
    seed: int = 0
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    clusters: ClustersConfig = field(default_factory=ClustersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is list:
        (inner,) = typing.get_args(typ) or (Any,)
        if not isinstance(value, list):
            raise SpeclmError(f"config {where}: expected a list, got {value!r}")
        return [_coerce(v, inner, where) for v in value]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool):
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise SpeclmError(f"config {where}: expected {typ.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise SpeclmError(f"config {where or 'root'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpeclmError(
            f"config {where or 'root'}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        typ = hints[key]
        here = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value, here)
        else:
            kwargs[key] = _coerce(value, typ, here)
    return cls(**kwargs)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_override(item: str) -> dict:
    if "=" not in item:
        raise SpeclmError(f"--set expects section.key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string
    node: dict = {}
    cur = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise SpeclmError(f"config file not found: {path}")
    if not path.is_file():
        raise SpeclmError(f"config {path} is a folder, not a .toml file (a preset is a name or a .toml file)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpeclmError(f"config file {path} is not valid TOML: {e}")
    except OSError as e:
        raise SpeclmError(f"config file {path} cannot be read: {e.strerror or e}")


def load(preset: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Resolve a config: defaults < ``base`` (e.g. a run's saved config) < preset < overrides.

    ``preset`` is a preset name (see :func:`presets`) or a path to a TOML file.
    """
    data: dict = dict(base or {})
    if preset:
        p = Path(preset)
        if p.suffix == ".toml" or p.exists():
            data = _merge(data, read_toml(p))
        elif (PRESET_DIR / f"{preset}.toml").exists():
            data = _merge(data, read_toml(PRESET_DIR / f"{preset}.toml"))
        else:
            raise SpeclmError(f"unknown preset {preset!r}; known: {', '.join(presets())}, or a path to a .toml file")
    for item in overrides or []:
        data = _merge(data, _parse_override(item))
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg


def _finite(x: float) -> bool:
    return math.isfinite(x)


def validate(cfg: Config) -> None:
    """Refuse out-of-range values of the whole resolved config in one line, before any
    command writes anything (so a refused value never reaches a run's ``config.toml``).
    Choices and limits that need the data (a window longer than a set, k larger than the
    windows) stay with the stage that knows them."""
    problems: list[str] = []

    def need(ok: bool, text: str) -> None:
        if not ok:
            problems.append(text)

    def at_least(where: str, value: Any, low: float, what: str = "") -> None:
        ok = isinstance(value, (int, float)) and _finite(value) and value >= low
        need(ok, f"{where} must be {what or ('positive' if low == 1 else f'>= {low:g}')}, got {value!r}")

    def positive_number(where: str, value: float) -> None:
        need(_finite(value) and value > 0, f"{where} must be a positive number, got {value!r}")

    for where, seed in (("seed", cfg.seed), ("corpus.seed", cfg.corpus.seed), ("clusters.seed", cfg.clusters.seed),
                        ("train.seed", cfg.train.seed)):
        at_least(where, seed, 0)
    c = cfg.corpus
    need(c.source in ("tiny", "default", "import"), f"corpus.source must be tiny, default or import, got {c.source!r}")
    for where, v in (("corpus.valid_fraction", c.valid_fraction), ("corpus.test_fraction", c.test_fraction)):
        need(_finite(v) and 0 <= v < 1, f"{where} must be in [0, 1), got {v!r}")
    at_least("corpus.min_eval_docs", c.min_eval_docs, 0)
    at_least("corpus.max_mb_per_source", c.max_mb_per_source, 0)
    positive_number("corpus.max_doc_mb", c.max_doc_mb)
    t = cfg.tokens
    at_least("tokens.vocab_size", t.vocab_size, 1)
    at_least("tokens.window", t.window, 1)
    at_least("tokens.min_frequency", t.min_frequency, 0)
    positive_number("tokens.tokenizer_train_mb", t.tokenizer_train_mb)
    at_least("tokens.workers", t.workers, 1)
    k = cfg.clusters
    need(bool(k.ks) and all(x >= 1 for x in k.ks), f"clusters.ks must be a non-empty list of positive k, got {k.ks!r}")
    for name in ("batch_size", "niter", "chunk_pieces"):
        at_least(f"clusters.{name}", getattr(k, name), 1)
    for name in ("fit_sample", "embed_sample", "embed_sample_other", "describe_budget_tokens"):
        at_least(f"clusters.{name}", getattr(k, name), 0)
    tr = cfg.train
    positive_number("train.lr", tr.lr)
    for name in ("batch_size", "grad_accum", "patience"):
        at_least(f"train.{name}", getattr(tr, name), 1)
    for name in ("warmup_steps", "max_steps", "max_tokens", "max_flops", "max_device_hours", "eval_every",
                 "eval_batches", "log_every", "checkpoint_every", "weight_decay", "grad_clip"):
        at_least(f"train.{name}", getattr(tr, name), 0)
    need(_finite(tr.min_lr_ratio) and 0 <= tr.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {tr.min_lr_ratio!r}")
    m = cfg.methods
    at_least("methods.finetune_lr", m.finetune_lr, 0)
    positive_number("methods.finetune_small_lr_factor", m.finetune_small_lr_factor)
    need(all(isinstance(x, int) and x >= 0 for x in m.finetune_max_steps),
         f"methods.finetune_max_steps must be steps >= 0, got {m.finetune_max_steps!r}")
    at_least("methods.finetune_patience", m.finetune_patience, 1)
    positive_number("methods.finetune_max_epochs", m.finetune_max_epochs)
    need(_finite(m.per_domain_budget) and 0 < m.per_domain_budget <= 1,
         f"methods.per_domain_budget must be in (0, 1], got {m.per_domain_budget!r}")
    for name in ("finetune_small_tokens", "finetune_eval_every", "finetune_warmup_steps", "finetune_batch_size", "nopt_max_epochs", "nopt_lr",
                 "eval_max_windows", "pretrain_steps", "is_smoothing"):
        at_least(f"methods.{name}", getattr(m, name), 0)
    for name in ("is_k", "mix_k", "pn_k"):
        at_least(f"methods.{name}", getattr(m, name), 1)
    _check_curves(m, need)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpeclmError(f"config: {problems[0]}{more}")


def _check_curves(m, need) -> None:
    """methods.curve_fractions: each in (0, 1), sorted, unique; methods.curve_methods: methods
    with one shared generic pretraining, each once; both set or neither."""
    fr, names = m.curve_fractions, m.curve_methods
    need(all(isinstance(f, float) and _finite(f) and 0 < f < 1 for f in fr),
         f"methods.curve_fractions must be fractions of the pretraining in (0, 1), got {fr!r}")
    need(list(fr) == sorted(set(fr)), f"methods.curve_fractions must be sorted and without repeats, got {fr!r}")
    bad = [n for n in names if n not in CURVE_METHODS]
    why = "; ".join(f"{n}: {NO_CURVE[n]}" for n in bad if n in NO_CURVE)
    unknown = [n for n in bad if n not in NO_CURVE]
    need(not unknown, f"methods.curve_methods: unknown method(s) {', '.join(map(repr, unknown))}; "
                      f"curves exist for {', '.join(CURVE_METHODS)}")
    need(not why, f"methods.curve_methods: no operating curve for {why}; curves exist for {', '.join(CURVE_METHODS)}")
    need(len(set(names)) == len(names), f"methods.curve_methods names a method twice: {names!r}")
    need(bool(fr) == bool(names), "methods.curve_fractions and methods.curve_methods go together: set both or neither "
                                  f"(got {len(fr)} fraction(s), {len(names)} method(s))")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))
