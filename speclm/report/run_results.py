"""One run's results, read once: rows, curves and the clusters' tables (:class:`RunResults`)."""

from __future__ import annotations

from .rows import config_hash


class RunResults:
    """One run's results, read once: the grid rows of its current config (one per (method,
    domain, size, seed); a row written twice counts once, the last one), grouped; the
    operating curves; the clusters' tables. Every report section reads from here."""

    def __init__(self, path, rows: list[dict], curves: list[dict], clusters: dict):
        from ..methods.sizes import parse_size
        from .evidence import group
        from .results import order_methods

        self.path, self.rows, self.curves, self.clusters = path, rows, curves, clusters
        self.groups = group(rows)
        self.methods = order_methods(list(dict.fromkeys(r["method"] for r in rows)))
        self.domains = sorted({r["domain"] for r in rows})
        self.sizes = sorted({r["size"] for r in rows}, key=lambda s: parse_size(s) or float("inf"))
        self.small = {r["method"]: r.get("small_at_inference", True) for r in rows}

    @classmethod
    def open(cls, run, name: str = "results") -> "RunResults":
        import json

        from ..core.errors import SpeclmError
        from .curve_reading import load_curves
        from .results import seed_rows, warn_stderr

        results = run.eval_dir / f"{name}.jsonl"
        if not results.exists():
            raise SpeclmError(f"no grid results in {results}; run `speclm grid --run {run.path}` first")
        rows = list(seed_rows(results, config_hash(run), warn=warn_stderr).values())  # each job once, bad rows named
        if not rows:
            raise SpeclmError(f"no grid results for this run's current config in {results}; "
                              f"run `speclm grid --run {run.path}`")
        try:
            clusters = json.loads((run.clusters_dir / "describe" / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            clusters = {}
        return cls(results, rows, load_curves(run), clusters if isinstance(clusters, dict) else {})

    def flat_rows(self) -> list[dict]:
        """One row per (method, domain, size), seeds averaged (as the plan and the plots read them)."""
        from .results import aggregate_seeds, with_interval

        return [with_interval(aggregate_seeds(sorted(rs, key=lambda r: int(r.get("seed", 0)))))
                for rs in self.groups.values()]
