"""Typed configuration: one dataclass per stage, composed into :class:`Config`.

Presets live in ``speclm/configs/NAME.toml`` (tiny, demo, paper). A preset names only
what differs from the defaults; the resolved config (every default written out) is saved
as ``config.toml`` in the run folder. ``--set section.key=value`` overrides one value.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .errors import SpeclmError
from .sections import ClustersConfig, CorpusConfig, MethodsConfig, ModelConfig, TokensConfig, TrainConfig

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
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpeclmError(f"config file {path} is not valid TOML: {e}")


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
    return from_dict(Config, data)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))
