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


# The table of ``config.toml`` that records what the user set with ``--set`` (and only that):
# a later command with another preset re-resolves defaults < preset < these values.
EXPLICIT = "explicit"


def preset_data(preset: str) -> dict:
    """The values of a preset (a name of :func:`presets` or a path to a TOML file)."""
    p = Path(preset)
    if p.suffix == ".toml" or p.exists():
        data = read_toml(p)
    elif (PRESET_DIR / f"{preset}.toml").exists():
        data = read_toml(PRESET_DIR / f"{preset}.toml")
    else:
        raise SpeclmError(f"unknown preset {preset!r}; known: {', '.join(presets())}, or a path to a .toml file")
    data.pop(EXPLICIT, None)  # a run's config.toml used as a preset: its values, not its record
    return data


def overrides_data(overrides: list[str] | None) -> dict:
    """``--set`` items as one nested dict (a later item for the same key wins)."""
    data: dict = {}
    for item in overrides or []:
        data = _merge(data, _parse_override(item))
    return data


def diff(a: dict, b: dict) -> dict:
    """The leaves of ``a`` whose value differs from (or is missing in) ``b``, nested."""
    out: dict = {}
    for k, v in a.items():
        w = b.get(k) if isinstance(b, dict) else None
        if isinstance(v, dict) and isinstance(w, dict):
            sub = diff(v, w)
            if sub:
                out[k] = sub
        elif k not in (b if isinstance(b, dict) else {}) or v != w:
            out[k] = v
    return out


def leaves(d: dict, prefix: str = "") -> list[str]:
    """The dotted names of a nested dict's leaves: ``tokens.vocab_size``."""
    out = []
    for k, v in d.items():
        out += leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return out


def load(preset: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Resolve a config: defaults < ``base`` (e.g. a run's saved config) < preset < overrides.

    ``preset`` is a preset name (see :func:`presets`) or a path to a TOML file.
    """
    data: dict = dict(base or {})
    data.pop(EXPLICIT, None)
    if preset:
        data = _merge(data, preset_data(preset))
    data = _merge(data, overrides_data(overrides))
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg


def resolve(preset: str | None, overrides: list[str] | None, saved: dict | None) -> tuple[Config, dict]:
    """The config of a run folder and the values the user set explicitly (kept in config.toml).

    - no saved config: defaults < preset (``tiny`` when none) < ``--set``;
    - a saved config and no preset: the saved config < ``--set``;
    - a saved config and a preset: defaults < preset < the saved explicit values < ``--set``:
      a preset means the same config in every folder, whatever an earlier command wrote.
      A config.toml written before the record existed: its values that differ from its own
      preset (its ``name``) count as explicit.
    """
    new = overrides_data(overrides)
    if saved is None:
        return load(preset or "tiny", overrides), new
    saved = dict(saved)
    explicit = saved.pop(EXPLICIT, None)
    if explicit is None:  # written before the record: what differs from its preset was set by hand
        name = saved.get("name")
        try:
            ref = to_dict(load(name if name in presets() else None))
        except SpeclmError:
            ref = to_dict(Config())
        explicit = diff(saved, ref)
        explicit.pop("name", None)
    elif not isinstance(explicit, dict):
        raise SpeclmError(f"config.toml: [{EXPLICIT}] must be a table of the values you set, got {explicit!r}")
    explicit = _merge(explicit, new)
    if preset:
        data = _merge(preset_data(preset), explicit)
    else:
        data = _merge(saved, new)
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg, explicit


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
    for name in ("max_steps", "max_tokens"):
        v = getattr(tr, name)
        need(not isinstance(v, int) or v < 2**63, f"train.{name} = {v} is beyond any training (over 2^63); lower it")
    positive_number("train.lr", tr.lr)
    for name in ("batch_size", "grad_accum", "patience"):
        at_least(f"train.{name}", getattr(tr, name), 1)
    for name in ("warmup_steps", "max_steps", "max_tokens", "max_flops", "max_device_hours", "eval_every",
                 "eval_batches", "log_every", "checkpoint_every", "weight_decay", "grad_clip"):
        at_least(f"train.{name}", getattr(tr, name), 0)
    need(_finite(tr.min_lr_ratio) and 0 <= tr.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {tr.min_lr_ratio!r}")
    m = cfg.methods
    need(bool(m.sizes) and all(isinstance(x, str) and x.strip() for x in m.sizes),
         f"methods.sizes must name at least one size (e.g. [\"16k\", \"all\"]), got {m.sizes!r}")
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


def to_toml(cfg: Config, explicit: dict | None = None) -> str:
    d = to_dict(cfg)
    if explicit is not None:
        # written even when empty: a config.toml without the table reads as one from before the
        # record, whose differences from its preset count as hand-set, so an edited preset
        # file would not reach a folder that only ever used the preset
        d[EXPLICIT] = explicit
    return tomli_w.dumps(d)
