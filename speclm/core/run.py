"""A run folder: its resolved config and one sub-folder per stage (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import atomic
from .config import Config, diff, leaves, read_toml, resolve, to_dict, to_toml


@dataclass
class Run:
    path: Path
    config: Config
    # Seed i > 0 of a grid with several seeds: its pretraining and specialization jobs live
    # under ``seed-<i>/`` (the tokens, clusters and eval folders are shared); see with_seed.
    seed_offset: int = 0
    # A point of an operating curve (methods.curve_fractions): specializations start from the
    # pretraining's snapshot at this fraction and live under ``curves/f-<f>/``; see with_curve.
    curve: float | None = None
    # The values the user set with ``--set`` (nested), kept in config.toml's [explicit] table.
    explicit: dict | None = None

    @property
    def jobs_path(self) -> Path:
        return self.path / f"seed-{self.seed_offset}" if self.seed_offset else self.path

    def with_curve(self, fraction: float) -> "Run":
        """The run as the point ``fraction`` of an operating curve sees it (seed 0 only): the
        same config and pretraining folders (a curve method's specialization reads the
        pretraining's ``snapshots/f-<f>/`` instead of its ``final/``), and its own
        specialization folders, ``curves/f-<f>/specialize/<method>/<domain>/<size>/``."""
        from .errors import SpeclmError

        if self.seed_offset:
            raise SpeclmError(f"operating curves are computed for seed 0 only, not seed {self.seed_offset}")
        if not (isinstance(fraction, float) and 0 < fraction < 1):
            raise SpeclmError(f"a curve point is a fraction of the pretraining in (0, 1), got {fraction!r}")
        return Run(path=self.path, config=self.config, seed_offset=0, curve=fraction)

    def with_seed(self, offset: int) -> "Run":
        """The run as seed ``offset`` of a multi-seed grid sees it: ``train.seed + offset``
        (data order and initialization; the top-level seed, which draws the specialization
        slices and resamples, is kept) and its own job folders."""
        import dataclasses

        if offset == 0:
            return self
        cfg = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, seed=self.config.train.seed + offset))
        return Run(path=self.path, config=cfg, seed_offset=offset)

    def stage_dir(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    @property
    def corpus_dir(self) -> Path:
        return self.path / "corpus"

    @property
    def tokens_dir(self) -> Path:
        return self.path / "tokens"

    @property
    def clusters_dir(self) -> Path:
        return self.path / "clusters"

    @property
    def eval_dir(self) -> Path:
        """The grid's results file, its tables and plots, and the plan's picture."""
        return self.path / "eval"

    def pretrain_dir(self, method: str, domain: str | None = None) -> Path:
        """A method's pretraining job: shared (``pretrain/METHOD``) or per domain (``pretrain/METHOD/DOMAIN``)."""
        p = self.jobs_path / "pretrain" / method
        return p / domain if domain else p

    def specialize_dir(self, method: str, domain: str, size: str) -> Path:
        """A method's specialization job for one domain and size."""
        if self.curve is not None:
            return self.path / "curves" / fraction_label(self.curve) / "specialize" / method / domain / size
        return self.jobs_path / "specialize" / method / domain / size

    def train_dir(self, set_name: str, shape: str) -> Path:
        """Where ``speclm train`` writes by default."""
        return self.path / "train" / set_name / shape

    def save_config(self) -> None:
        """Write the resolved config to ``config.toml`` (only when it changed); a seed view
        (:meth:`with_seed`) or a curve view (:meth:`with_curve`) never writes: the run's
        config is the base one."""
        if self.seed_offset or self.curve is not None:
            return
        saved = self.path / "config.toml"
        text = f"{HEAD}\n{to_toml(self.config, self.explicit)}{TAIL}\n"
        if not saved.exists() or saved.read_text(encoding="utf-8") != text:
            atomic.write_text(saved, text)


def fraction_label(fraction: float) -> str:
    """The folder name of a curve point / snapshot: ``f-0.5`` (every digit kept: two
    fractions never share a folder)."""
    return f"f-{float(fraction)!r}"


def open_run(
    run: str | Path | None = None, preset: str | None = None, overrides: list[str] | None = None, save: bool = True
) -> Run:
    """Open (or create) a run folder.

    The config is the run's saved ``config.toml`` (if any), then ``preset``, then
    ``overrides``. With neither a saved config nor a preset, the ``tiny`` preset is used.
    The resolved config is written back to ``config.toml``; with ``save=False`` nothing is
    written (call ``Run.save_config()`` once the command succeeded, so a command that
    fails on bad input leaves the run folder as it was).
    """
    if run is None:
        run = Path("runs") / (Path(preset).stem if preset else "tiny")
    path = Path(run)
    if path.exists() and not path.is_dir():
        from .errors import SpeclmError

        raise SpeclmError(f"--run {path} is a file; a run folder is a folder (give a new or existing folder)")
    saved = path / "config.toml"
    base = read_saved(saved)
    cfg, explicit = resolve(preset, overrides, base)
    r = Run(path=path, config=cfg, explicit=explicit)
    _keep_import(r, base, overrides)
    if base is not None and preset:
        _note_changes(r, base)
    if save:
        r.save_config()
    return r


# The first and last lines of a config.toml speclm writes: a file that has the first and not
# the last was cut short (a file without either was written by an older speclm).
HEAD = "# speclm: this run folder's config. [explicit] holds the values you set with --set (kept when the preset changes)."
TAIL = "# end of config.toml"


def read_saved(saved: Path) -> dict | None:
    """A run's config.toml, or None when there is none; an empty, cut-short or damaged one is
    refused in one line naming it and the way out (never silent defaults)."""
    if not saved.exists():
        return None
    from .config import EXPLICIT, from_dict
    from .errors import SpeclmError

    fix = "restore it, or delete it to start this run folder's config over from a preset (--preset NAME)"
    text = atomic.read_required_text(saved, fix, "a config file")
    if text.startswith(HEAD) and text.rstrip().splitlines()[-1] != TAIL:
        raise SpeclmError(f"{saved} is cut short (its last line is missing); {fix}")
    try:
        data = read_toml(saved)
        from_dict(Config, {k: v for k, v in data.items() if k != EXPLICIT})
    except SpeclmError as e:
        raise SpeclmError(f"{saved} is damaged ({str(e).removeprefix(f'config file {saved} is ')}); {fix}") from None
    return data


# What a change in each config section makes stale (the folders that hold finished work).
_STALE = {"corpus": ("corpus", "tokens", "clusters", "pretrain", "specialize", "eval"),
          "tokens": ("tokens", "clusters", "pretrain", "specialize", "eval"),
          "clusters": ("clusters", "pretrain", "specialize", "eval"),
          "model": ("pretrain", "specialize", "eval"), "train": ("pretrain", "specialize", "eval"),
          "methods": ("pretrain", "specialize", "eval"), "seed": ("specialize", "eval")}


def _note_changes(r: Run, base: dict) -> None:
    """One line on stderr when a preset changes the values of a folder that already holds
    finished work: how many values change and which finished stages and jobs it makes stale."""
    import sys

    old = {k: v for k, v in base.items() if k != "explicit"}
    changed = [k for k in leaves(diff(to_dict(r.config), old)) if k != "name"]
    if not changed:
        return
    stale: list[str] = []
    for folder in dict.fromkeys(f for k in changed for f in _STALE.get(k.split(".")[0], ())):
        here = r.path / folder
        if folder in ("pretrain", "specialize"):
            n = sum(1 for m in here.rglob("manifest.json") if '"done": true' in _text(m)) if here.is_dir() else 0
            if n:
                stale.append(f"{n} {folder} job(s)")
        elif folder == "eval":
            if here.is_dir() and any(here.glob("*.jsonl")):
                stale.append("the grid's result rows")
        elif (here / "manifest.json").is_file():
            stale.append(f"{folder}/")
    if not stale:
        return
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    print(f"speclm: note: preset {r.config.name} changes {len(changed)} value(s) of {r.path / 'config.toml'} "
          f"({shown}); stale, redone when needed: {', '.join(stale)}", file=sys.stderr)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def holds_import(corpus_dir: Path) -> bool:
    """True when ``corpus_dir`` holds a corpus imported from the user's own files."""
    from . import manifest

    try:
        m = manifest.read(corpus_dir)
    except Exception:  # a damaged manifest: the corpus stage reports it
        return False
    return bool(isinstance(m, dict) and isinstance(m.get("config"), dict) and m["config"].get("import"))


def _keep_import(r: Run, base: dict | None, overrides: list[str] | None) -> None:
    """A run that holds an imported corpus keeps ``corpus.source = "import"`` whatever the
    preset says (``speclm run --preset demo`` after ``corpus import`` uses the user's data);
    only an explicit ``--set corpus.source=...`` asks for another corpus (which the corpus
    stage still refuses to build over the import without ``--force``)."""
    if r.config.corpus.source == "import":
        return
    if any(o.split("=", 1)[0].strip() == "corpus.source" for o in overrides or []):
        return
    saved = ((base or {}).get("corpus") or {}).get("source") if isinstance(base, dict) else None
    if saved == "import" or holds_import(r.corpus_dir):
        r.config.corpus.source = "import"
