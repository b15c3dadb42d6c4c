"""``speclm build``: the user's domain text in, a Hugging Face model folder out.

In order, each step resumable (every stage and grid row is skipped when done for its
config, so a second call after a kill continues where it stopped):

1. check the inputs (domain names and paths, the generic set, the output folder) before
   anything is written;
2. the corpus: the user's domains (a folder of .txt, JSONL, JSON, CSV, Parquet, each also
   gzipped, or a saved dataset) imported beside a generic set: the one shipped in the
   package (``--generic tiny``), the default corpus's generic sources (``default``, built
   once into the download cache) or the user's own (a path); then the contamination check
   and the tokens;
3. the recipe (speclm.build.recipe): the run's own evidence where its report's premises
   hold (a previous build or grid in the same run folder), else the paper's Figure 1 for
   ``--n-domains``;
4. the budget (``--budget``): the pretraining sized to it (speclm.grid.budgeting), then the
   dry-run table of every job, before anything is trained;
5. the grid restricted to what the recipe and the plain-SLM baseline need: those two
   methods, the user's domains, one size (all of each domain's train split);
6. the report, and the recipe confirmed or replaced by the run's own evidence when its
   premises hold;
7. the recommended checkpoint of each domain (the seed with the best validation loss)
   exported with its model card, then the folder, the perplexity against the plain SLM and
   a three-line sample are printed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..core.errors import SpeclmError

BASELINE = "slm"
SIZE = "all"
GENERIC_CHOICES = ("tiny", "default")


@dataclass
class Request:
    domains: dict[str, str]  # name -> path
    out: Path
    generic: str = "tiny"  # tiny | default | a path
    n_domains: Optional[int] = None  # domains the user will serve (default: those given)
    budget: Optional[str] = None
    preset: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    run: Optional[Path] = None
    text_field: str = "text"

    @property
    def n(self) -> int:
        return self.n_domains or len(self.domains)

    @property
    def preset_name(self) -> str:
        """tiny with the shipped generic set (it is too small for more), else demo."""
        return self.preset or ("tiny" if self.generic == "tiny" else "demo")

    @property
    def run_path(self) -> Path:
        return self.run or Path("runs") / self.out.name


def check(req: Request) -> None:
    """Refuse bad input in one line before anything is written."""
    from ..corpus.store import check_domain_name

    if not req.domains:
        raise SpeclmError("give at least one domain: --domain NAME=PATH")
    for name, path in req.domains.items():
        check_domain_name(name)
        if not Path(path).expanduser().exists():
            raise SpeclmError(f"--domain {name}={path}: path not found")
    if req.generic not in GENERIC_CHOICES and not Path(req.generic).expanduser().exists():
        raise SpeclmError(f"--generic {req.generic}: not tiny, default, nor an existing path")
    if req.n_domains is not None and req.n_domains < len(req.domains):
        raise SpeclmError(f"--n-domains {req.n_domains} is fewer than the {len(req.domains)} domains given")
    out = req.out
    if out.exists() and not out.is_dir():
        raise SpeclmError(f"--out {out} is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not _ours(out, req):
        raise SpeclmError(f"--out {out} is not empty (and not a previous `speclm build` of these domains); "
                          "give a new or empty folder")
    if req.run_path.resolve() == out.resolve() or out.resolve() in req.run_path.resolve().parents:
        raise SpeclmError(f"--out {out} would hold the run folder {req.run_path}; give another --run or --out")
    saved = req.run_path / "config.toml"
    if saved.is_file():  # never import over another kind of run (runs/tiny of `speclm run`, say)
        from ..core.config import read_toml

        source = (read_toml(saved).get("corpus") or {}).get("source", "tiny")
        if source != "import":
            raise SpeclmError(f"{req.run_path} holds a run of corpus.source {source!r}, not a build; "
                              "give another --run (or another --out)")


def _ours(out: Path, req: Request) -> bool:
    """A previous build's output: one export (one domain) or one per domain."""
    from ..inference.export import EXPORT_MARKER

    if len(req.domains) == 1:
        return (out / EXPORT_MARKER).is_file()
    return all(p.name in req.domains and (p / EXPORT_MARKER).is_file() for p in out.iterdir())


@contextlib.contextmanager
def _undo_on_error(run_path: Path):
    """A run folder this call created is removed when the user's files cannot be read (a
    refused input leaves nothing behind); an existing one is left as it was."""
    made = [p for p in (run_path.parent, run_path) if not p.exists()]
    try:
        yield
    except BaseException:
        import shutil

        for p in reversed(made):
            if p == run_path:
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise


def generic_path(req: Request, cfg, echo) -> str:
    from ..corpus.default import TINY_DIR, default_generic_file

    if req.generic == "tiny":
        return str(TINY_DIR / "generic.jsonl.gz")
    if req.generic == "default":
        echo("generic set: the default corpus's generic sources (built once into the download cache)")
        return str(default_generic_file(cfg.corpus, log=echo))
    return str(Path(req.generic).expanduser().resolve())


def _finetune_cap(cfg) -> list[str]:
    """The preset's fine-tuning step cap for the size "all" (its entry, else the largest)."""
    from ..methods.sizes import size_label

    caps, sizes = cfg.methods.finetune_max_steps, [size_label(s) for s in cfg.methods.sizes]
    if not caps:
        return []
    cap = caps[sizes.index(SIZE)] if SIZE in sizes and len(caps) == len(sizes) else max(caps)
    return [f"methods.finetune_max_steps=[{cap}]"]


def open_build_run(req: Request, extra: list[str], save: bool = True):
    from ..core.config import load
    from ..core.run import open_run

    base = load(req.preset_name, req.overrides)
    sets = ["corpus.source='import'", f"methods.sizes=['{SIZE}']", *_finetune_cap(base),
            "methods.curve_fractions=[]", "methods.curve_methods=[]", *req.overrides, *extra]
    return open_run(req.run_path, req.preset_name, sets, save=save)


def build(req: Request, echo: Callable[[str], None] = print) -> dict:
    """Run every step; returns {"folders": [...], "recipe": Recipe, "run": path}."""
    from ..corpus.overlap import format_report
    from ..corpus.overlap_stage import apply_overlap
    from ..corpus.stage import ImportSpec, import_corpus
    from ..corpus.store import format_summary
    from ..tokens.stage import build_tokens, format_tokens_summary
    from .recipe import from_evidence, paper_recipe

    check(req)
    run = open_build_run(req, [], save=False)  # the run folder is kept once the user's files are read
    spec = ImportSpec(generic=generic_path(req, run.config, echo), domains=dict(req.domains), text_field=req.text_field)
    with _undo_on_error(req.run_path):
        echo(format_summary(import_corpus(run, spec)))
    run.save_config()
    echo(format_report(apply_overlap(run)))
    echo(format_tokens_summary(build_tokens(run)))

    recipe = from_evidence(run, req.n, SIZE, None) or paper_recipe(req.n)
    echo(f"recipe: {recipe.line()}")
    methods = [recipe.method] if recipe.method == BASELINE else [recipe.method, BASELINE]
    extra = [f"methods.grid_methods={methods!r}"]
    if req.budget:
        from ..grid.budgeting import budget_override

        override, _ = budget_override(open_build_run(req, extra), req.budget, methods, list(req.domains), echo=echo,
                                      warn=False)
        extra.append(override)
    run = open_build_run(req, extra)
    from ..grid.budgeting import plan_with_budget

    plan_with_budget(run, echo=echo, methods=methods, domains=list(req.domains))
    _train(run, methods, list(req.domains), echo)
    return _ship(run, req, recipe, methods, echo)


def _train(run, methods: list[str], domains: list[str], echo) -> None:
    from ..grid.experiment import run_grid
    from ..grid.pipeline import warn_data
    from ..methods import base

    ctx = base.Context(run=run, log=lambda s: None)
    if any(base.get(m).cluster_ks(ctx) for m in methods):
        from ..clusters.stage import build_clusters, format_summary

        echo(format_summary(build_clusters(run)))
    warn_data(run)
    table = run_grid(run, methods=methods, domains=domains, sizes=[SIZE], log=echo)
    echo(f"results: {table}")


def _ship(run, req: Request, recipe, methods: list[str], echo) -> dict:
    from ..grid.pipeline import report_first_line
    from ..report.plan import load_rows
    from ..grid.recommended import write_recommended
    from ..report.page import write_report
    from .recipe import from_evidence, premises

    report = write_report(run)
    echo(f"report: {report.with_suffix('.html')}")
    first = report_first_line(report)
    if first:
        echo(f"report: {first}")
    own = from_evidence(run, req.n, SIZE, None)
    if own is not None and own.method in methods:
        recipe = own
        echo(f"recipe from this run's evidence: {own.line()}")
    else:
        hold, why = premises(run)
        echo(f"recipe kept: {recipe.method} ("
             + ("this run's own recommendation is not among what it trained" if hold else
                f"this run is outside the paper's regime, so its own ranking decides nothing: {why}") + ")")
    rows, _ = load_rows(run)
    doc = write_recommended(run, rows, recipe.method, SIZE, recipe.line(), domains=list(req.domains))
    if own is None and first:  # the card says what the run could not tell
        for m in doc["models"]:
            m["caveat"] = f"the run's report: {first}"
    folders = [_export(run, m, req.out if len(doc["models"]) == 1 else req.out / m["domains"][0], echo)
               for m in doc["models"]]
    for m, folder in zip(doc["models"], folders):
        _summary(run, m, folder, echo)
    return {"folders": folders, "recipe": recipe, "run": run.path}


def _export(run, facts: dict, dest: Path, echo) -> Path:
    import json

    from ..core.manifest import hash_file
    from ..inference.export import EXPORT_MARKER, export_checkpoint
    from ..train.checkpoint import MODEL_FILE

    ckpt = Path(facts["checkpoint"])
    mark = dest / EXPORT_MARKER
    if mark.is_file():
        try:
            prev = json.loads(mark.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prev = {}
        if prev.get("model_sha256") == hash_file(ckpt / MODEL_FILE) and (dest / "README.md").is_file():
            from ..core import atomic
            from ..inference.card import checkpoint_facts, render_card
            from ..train.checkpoint import load_transformer

            card = render_card({"name": dest.name, **checkpoint_facts(ckpt, load_transformer(ckpt)), **facts})
            atomic.write_text(dest / "README.md", card)  # the card follows what the run now says
            echo(f"export: {dest} already holds this checkpoint (model card refreshed)")
            return dest
    return export_checkpoint(ckpt, dest, run.tokens_dir, force=mark.is_file(), facts=facts)


def sample_lines(run, checkpoint: Path, n_lines: int = 3, width: int = 100) -> list[str]:
    """Three lines of text sampled from the model (a new document, seeded)."""
    from ..inference.generate import generate_text
    from ..tokens.bpe import open_tokenizer
    from ..train.checkpoint import load_transformer
    from ..inference.export import find_tokenizer

    tok = open_tokenizer(find_tokenizer(checkpoint, run.tokens_dir), fix="rebuild the run's tokens")
    model = load_transformer(checkpoint)
    out: list[str] = []
    for seed in range(4):
        text = generate_text(model, tok, "", max_new_tokens=min(120, model.shape.max_seq_len * 2), temperature=0.8,
                             top_k=50, seed=seed)
        out += [" ".join(x.split())[:width] for x in text.splitlines() if x.strip()]
        if len(out) >= n_lines:
            break
    return out[:n_lines]


def _summary(run, m: dict, folder: Path, echo) -> None:
    p = m["ppl"]
    echo(f"model: {folder} ({m['method']}, domain {m['domains'][0]}, seed {m['seed']}; load it with "
         f"transformers.AutoModelForCausalLM.from_pretrained('{folder}'); card: {folder / 'README.md'})")
    line = f"perplexity on the {m['domains'][0]} test split: {p['ppl']:.2f} [{p['lo']:.2f}, {p['hi']:.2f}]"
    if m.get("baseline"):
        b = m["baseline"]
        line += f" vs the plain SLM {b['ppl']:.2f} [{b['lo']:.2f}, {b['hi']:.2f}] (95% intervals)"
    echo(line)
    if m.get("difference"):
        echo(f"difference: {m['difference']}")
    if m.get("baseline_better") and m["baseline"].get("checkpoint"):
        import shlex

        echo(f"note: on this run the plain SLM did better; its model: speclm export --checkpoint "
             f"{shlex.quote(m['baseline']['checkpoint'])} --run {shlex.quote(str(run.path))} --out {folder.name}-slm")
    echo("sample:")
    for s in sample_lines(run, Path(m["checkpoint"])):
        echo(f"  {s}")
