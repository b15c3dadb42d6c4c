"""The clusters stage: embed windows, fit k-means for every k, assign every window,
describe the domains. ``build_clusters(run)`` does all of it; the CLI also runs the steps
one at a time (``speclm clusters embed | fit | describe``).

Which windows Sentence-BERT reads: every window, unless ``clusters.embed_sample`` (generic
train) or ``clusters.embed_sample_other`` (every other set/split) caps it, in which case a
seeded random sample is embedded and the other windows get their cluster from the
token-bag proxy (:mod:`speclm.clusters.propagate`). k-means is fitted on the embedded
generic train windows (at most ``clusters.fit_sample`` of them).

Under torchrun, every rank embeds its share of the cache shards; rank 0 then fits,
assigns and describes while the others wait.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..core import atomic, manifest
from ..core.progress import progress as progress_bar
from ..core.errors import SpeclmError
from ..core.atomic import read_required_json
from ..core.run import Run
from ..corpus.store import GENERIC
from ..core.ranks import env_local_rank, env_rank_world, wait_all
from . import describe as desc
from .embed import EMBED_DIM, MODEL_PACKAGE, Embedder, effective_dtype, model_version, resolve_device
from .runtime import resolve_backend
from .kmeans import assign_levels, check_ks, cluster_sizes, fit_levels, normalize
from .store import Clusters, EmbeddingCache, k_dir

STAGE = "clusters"
SUMMARY = "summary.json"
SPLITS = ("train", "valid", "test")
PROXY_FIT_MAX = 50_000  # embedded generic windows the token-bag proxy is fitted on (memory)
PROXY_BATCH = 20_000  # windows per proxy prediction batch


# -- configuration, inputs, ranks ---------------------------------------------------------


def stage_config(run: Run) -> dict:
    cfg = dataclasses.asdict(run.config.clusters)
    for key in ("device", "batch_size", "backend"):  # where and in what batches: same embeddings
        cfg.pop(key, None)  # (the backend that runs is an input, below: "auto" differs by device)
    return cfg


def embed_backend(run: Run) -> str:
    """The backend that embeds this run's windows (``clusters.backend`` resolved for its device)."""
    cfg = run.config.clusters
    return resolve_backend(cfg.backend, resolve_device(cfg.device))


def stage_inputs(run: Run) -> dict[str, str]:
    inputs = {
        "tokens": manifest.require_fingerprint(run.tokens_dir, "tokens"),
        "model": f"{MODEL_PACKAGE}=={model_version()}",
    }
    backend = embed_backend(run)
    if backend != "torch":  # (torch runs keep the fingerprint they had before runtimes existed)
        inputs["backend"] = backend
    return inputs


def sample_rows(n: int, cap: int, seed: int, salt: str) -> np.ndarray:
    """Sorted indices of the windows to embed: all of them, or a seeded sample of ``cap``."""
    if cap <= 0 or cap >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([seed, int(manifest.hash_obj(salt)[:8], 16)])
    return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)


def jobs(shards) -> list[tuple[str, str]]:
    return [(s, sp) for s in shards.sets() for sp in SPLITS]


def check_windows(shards) -> dict[str, dict[str, int]]:
    """Window counts; a set whose train split has no window is an error."""
    counts = {s: {sp: len(shards.windows(s, sp)) for sp in SPLITS} for s in shards.sets()}
    for s, c in counts.items():
        if c["train"] == 0:
            what = "the generic set" if s == GENERIC else f"domain {s!r}"
            raise SpeclmError(f"{what} has no windows in its train split: give it more text or lower tokens.window")
    return counts


def window_texts(shards, windows, rows: np.ndarray) -> list[str]:
    toks = windows.batch(rows)[:, : windows.window]
    return shards.tokenizer.decode_batch([t.tolist() for t in toks], skip_special_tokens=True)


# -- step 1: embed -----------------------------------------------------------------------


def embed_windows(run: Run, progress: bool | None = None, rank: int | None = None, world: int | None = None,
                  gather: bool = True) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Embed the planned windows of every set/split (cached, resumable, sharded over ranks:
    rank r computes the missing shards i with i % world == r).

    Returns {(set, split): (rows, embeddings)} (empty with ``gather=False``: fill only)."""
    from ..tokens.shards import TokenShards

    cfg = run.config.clusters
    shards = TokenShards(run.tokens_dir)
    check_windows(shards)
    inputs = stage_inputs(run)
    device = resolve_device(cfg.device)
    env_rank, env_world = env_rank_world()
    rank = env_rank if rank is None else rank
    world = env_world if world is None else world
    if device == "cuda" and world > 1:
        device = f"cuda:{env_local_rank(rank)}"
    dtype = effective_dtype(device.split(":")[0], cfg.dtype)
    backend = resolve_backend(cfg.backend, device)
    cache = EmbeddingCache(run.clusters_dir)
    dim = EMBED_DIM
    plan = {}
    for s, sp in jobs(shards):
        n = len(shards.windows(s, sp))
        cap = cfg.embed_sample if (s, sp) == (GENERIC, "train") else cfg.embed_sample_other
        rows = sample_rows(n, cap, cfg.seed, f"{s}/{sp}")
        key = manifest.hash_obj({
            "inputs": inputs, "mode": cfg.window_embedding, "chunk_pieces": cfg.chunk_pieces, "dtype": dtype,
            "set": s, "split": sp, "rows": manifest.hash_obj(rows.tolist()),
        })
        plan[(s, sp)] = (rows, key)
    work = [(j, sh) for j, (rows, _) in plan.items() for sh in range(cache.n_shards(len(rows)))]
    state = {"embedder": None, "computed": 0, "seconds": 0.0}

    def shard_rows(j, sh):
        rows = plan[j][0]
        return rows[sh * cache.shard_size : (sh + 1) * cache.shard_size]

    def compute(j, sh, bar):
        if state["embedder"] is None:
            state["embedder"] = Embedder(mode=cfg.window_embedding, chunk_pieces=cfg.chunk_pieces, dtype=dtype,
                                         batch_size=cfg.batch_size, device=device, backend=backend)
        rows = shard_rows(j, sh)
        t0 = time.perf_counter()
        emb = state["embedder"].embed(window_texts(shards, shards.windows(*j), rows))
        state["seconds"] += time.perf_counter() - t0
        state["computed"] += len(rows)
        cache.save(*j, sh, plan[j][1], emb)
        bar.update(len(rows))
        return emb

    # Pass 1: each rank fills its share of the missing shards.
    mine = [(j, sh) for i, (j, sh) in enumerate(work) if i % world == rank]
    todo = [(j, sh) for j, sh in mine if cache.load(*j, sh, plan[j][1], len(shard_rows(j, sh)), dim) is None]
    with progress_bar(sum(len(shard_rows(*w)) for w in todo), desc=f"embed (rank {rank})" if world > 1 else "embed",
                      unit="win", show=None if progress is None and todo else bool(progress and todo)) as bar:
        for j, sh in todo:
            compute(j, sh, bar)
    _write_run_stats(run, rank, state, dtype, device)
    if not gather:
        return {}
    wait_all(world)
    # Pass 2: read everything back (a shard lost or corrupted since is recomputed here).
    out = {}
    with progress_bar(0, desc="embed (repair)", unit="win", show=False) as bar:
        for j, (rows, key) in plan.items():
            parts = []
            for sh in range(cache.n_shards(len(rows))):
                emb = cache.load(*j, sh, key, len(shard_rows(j, sh)), dim)
                parts.append(emb if emb is not None else compute(j, sh, bar))
            out[j] = (rows, np.concatenate(parts) if parts else np.zeros((0, dim), np.float32))
    _write_run_stats(run, rank, state, dtype, device)
    return out


def _write_run_stats(run: Run, rank: int, state: dict, dtype: str, device: str) -> None:
    """Record the speed of the embeddings computed by this call (nothing when all were cached)."""
    if not state["computed"]:
        return
    cfg = run.config.clusters
    atomic.write_json(run.clusters_dir / "embeddings" / f"last-run-rank{rank}.json", {
        "windows": state["computed"], "seconds": round(state["seconds"], 2),
        "windows_per_s": round(state["computed"] / max(state["seconds"], 1e-9), 2),
        "dtype": dtype, "device": device, "backend": embed_backend(run), "mode": cfg.window_embedding, "chunk_pieces": cfg.chunk_pieces,
    })
    state["computed"], state["seconds"] = 0, 0.0


# -- step 2: fit and assign --------------------------------------------------------------


def fit_and_assign(run: Run, emb: dict, progress: bool | None = None) -> dict:
    """Fit k-means for every k on the embedded generic train windows, assign every window
    of every set/split, write ``k<K>/``; returns the fit summary."""
    from ..tokens.shards import TokenShards
    from .propagate import TokenBagProxy, agreement, token_bags

    cfg = run.config.clusters
    ks = check_ks(cfg.ks, cfg.nested)
    shards = TokenShards(run.tokens_dir)
    show = progress
    gen_rows, gen_emb = emb[(GENERIC, "train")]
    fit_idx = sample_rows(len(gen_rows), cfg.fit_sample, cfg.seed, "fit")
    x = normalize(gen_emb[fit_idx])
    if ks[-1] > len(x):
        raise SpeclmError(
            f"k={ks[-1]} is larger than the number of generic windows to fit on ({len(x)}): "
            "lower clusters.ks, or raise clusters.fit_sample / clusters.embed_sample"
        )
    t0 = time.perf_counter()
    levels = fit_levels(x, ks, cfg.nested, cfg.niter, cfg.seed, progress=show)
    fit_s = time.perf_counter() - t0
    parent_k = {lv.k: lv.parent_k for lv in levels}

    # Sentence-BERT assignment of embedded windows; the token-bag proxy for the others.
    labels = {j: assign_levels(e, levels) if len(e) else {k: np.zeros(0, np.int32) for k in ks} for j, (_, e) in emb.items()}
    missing = {j: np.setdiff1d(np.arange(len(shards.windows(*j))), rows) for j, (rows, _) in emb.items()}
    agree: dict[int, float] = {}
    proxy = None
    if any(len(m) for m in missing.values()):
        sub = sample_rows(len(gen_rows), PROXY_FIT_MAX, cfg.seed, "proxy")
        gen_bags = token_bags(shards.windows(GENERIC, "train"), gen_rows[sub], shards.vocab_size)
        gen_labels = {k: v[sub] for k, v in labels[(GENERIC, "train")].items()}
        agree = agreement(gen_bags, gen_labels, parent_k, shards.vocab_size, cfg.seed)
        proxy = TokenBagProxy(gen_bags, shards.vocab_size).fit(gen_bags, gen_labels, parent_k)
    assigns: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for j, (rows, _) in emb.items():
        n = len(shards.windows(*j))
        full = {k: np.full(n, -1, dtype=np.int32) for k in ks}
        for k in ks:
            full[k][rows] = labels[j][k]
        for b in range(0, len(missing[j]), PROXY_BATCH):
            rows_b = missing[j][b : b + PROXY_BATCH]
            pred = proxy.predict(token_bags(shards.windows(*j), rows_b, shards.vocab_size))
            for k in ks:
                full[k][rows_b] = pred[k]
        assigns[j] = full

    per_k = {}
    for lv in levels:
        k = lv.k
        sizes = cluster_sizes(assigns[(GENERIC, "train")][k], k)
        fit_sizes = cluster_sizes(labels[(GENERIC, "train")][k][fit_idx], k)
        meta = {
            "k": k, "parent_k": lv.parent_k, "generic_train_sizes": sizes.tolist(),
            "empty_clusters": int((sizes == 0).sum()), "empty_in_fit": int((fit_sizes == 0).sum()),
            "fit_windows": int(len(x)), "niter": cfg.niter, "seed": cfg.seed,
        }
        with atomic.atomic_dir(k_dir(run.clusters_dir, k)) as tmp:
            np.save(tmp / "centroids.npy", lv.centroids, allow_pickle=False)
            for (s, sp), per in assigns.items():
                p = tmp / "assign" / s / f"{sp}.npy"
                p.parent.mkdir(parents=True, exist_ok=True)
                np.save(p, per[k], allow_pickle=False)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        per_k[str(k)] = {"empty_clusters": meta["empty_clusters"], "empty_in_fit": meta["empty_in_fit"]}
    return {
        "ks": ks, "nested": cfg.nested, "fit_windows": int(len(x)), "fit_seconds": round(fit_s, 2),
        "per_k": per_k, "propagation_agreement": {str(k): round(v, 4) for k, v in agree.items()},
        "windows": {f"{s}/{sp}": {"windows": len(shards.windows(s, sp)), "embedded": int(len(r))} for (s, sp), (r, _) in emb.items()},
    }


# -- step 3: describe --------------------------------------------------------------------


def describe_clusters(run: Run, emb: dict | None = None, budget_tokens: int | None = None, write: bool = True) -> dict:
    """Tables 9/10 analogues, weights, resample ESS, one PNG per domain and cluster cards,
    written to ``clusters/describe/``; returns the tables."""
    from ..tokens.shards import TokenShards

    cfg = run.config.clusters
    shards = TokenShards(run.tokens_dir)
    clusters = Clusters(run.clusters_dir)
    ks = [k for k in check_ks(cfg.ks, cfg.nested) if k in clusters.ks]
    if not ks:
        raise SpeclmError(f"no clusters in {run.clusters_dir}: run `speclm clusters fit` first")
    hists = {s: {k: clusters.histogram(k, s, "train") for k in ks} for s in shards.sets()}
    gen_counts = {k: np.bincount(clusters.assign(k, GENERIC, "train"), minlength=k) for k in ks}
    budget = cfg.describe_budget_tokens if budget_tokens is None else budget_tokens
    n_gen = len(shards.windows(GENERIC, "train"))
    budget_windows = budget // shards.window if budget > 0 else n_gen
    tables = desc.domain_tables(hists, gen_counts, budget_windows)
    if not write:
        return {"ks": ks, "budget_windows": int(budget_windows), "tables": tables}
    domains = shards.domains()
    gen_windows = shards.windows(GENERIC, "train")
    text_fn = lambda i: window_texts(shards, gen_windows, np.array([i]))[0]  # noqa: E731
    with atomic.atomic_dir(run.clusters_dir / "describe") as tmp:
        for d in domains:
            desc.plot_domain(tmp / f"{d}.png", d, hists[d], hists[GENERIC])
        if emb is not None:
            rows, e = emb[(GENERIC, "train")]
            for k in ks:
                cards = desc.cluster_cards(k, clusters.centroids(k), e, rows, clusters.assign(k, GENERIC, "train"),
                                           text_fn, gen_counts[k])
                (tmp / f"k{k}-clusters.md").write_text(cards, encoding="utf-8")
        report = ["# Clusters of the generic set and the domains\n\n", desc.format_tables(tables, ks),
                  "\nPlots: " + ", ".join(f"[{d}]({d}.png)" for d in domains) + "\n",
                  ("Cluster contents: " + ", ".join(f"[k={k}](k{k}-clusters.md)" for k in ks) + "\n") if emb is not None else ""]
        (tmp / "report.md").write_text("".join(report), encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps({"ks": ks, "tables": tables}, indent=2) + "\n", encoding="utf-8")
    return {"ks": ks, "budget_windows": int(budget_windows), "tables": tables}


# -- the stage ---------------------------------------------------------------------------


def _remove_stale_temps(cdir: Path, embeddings: bool) -> None:
    """Remove what a killed run of this stage left in ``cdir`` (``.describe.*.tmp``,
    ``.k4.*.tmp``, ``.summary.json.*.tmp``; a complete ``.NAME.old`` whose NAME is gone is put
    back); with ``embeddings``, the cache's temp files too. Call it under the stage's lock."""
    if not cdir.is_dir():
        return
    for p in sorted(cdir.glob(".*.old")):
        atomic.remove_stale_temps(cdir / p.name[1:-len(".old")])
    for p in sorted(cdir.glob(".*.tmp")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if embeddings:
        for p in sorted((cdir / "embeddings").rglob(".*.tmp")):
            if p.is_file():
                p.unlink(missing_ok=True)


def build_clusters(run: Run, force: bool = False, progress: bool | None = None) -> dict:
    """Hold the stage folder's lock (another process building it waits) around :func:`_build_clusters`."""
    from ..core.locks import hold_stage

    if env_rank_world()[0] != 0:  # the ranks of one job share the work; rank 0 holds the lock
        return _build_clusters(run, force, progress)

    with hold_stage(run.clusters_dir, f"clusters of {run.path}"):
        return _build_clusters(run, force, progress)


def _build_clusters(run: Run, force: bool = False, progress: bool | None = None) -> dict:
    """Embed, fit, assign and describe (or reuse a matching result); returns the summary."""
    cdir = run.clusters_dir
    cfg, inputs = stage_config(run), stage_inputs(run)
    rank, world = env_rank_world()
    if not force and manifest.is_fresh(cdir, STAGE, cfg, inputs):
        return read_summary(cdir)
    if rank == 0:  # what a killed run left (under the lock; other ranks only write embeddings)
        _remove_stale_temps(cdir, embeddings=world == 1)
    t0 = time.perf_counter()
    if world > 1:  # every rank fills its share of the cache, then rank 0 does the rest
        embed_windows(run, progress, gather=False)
        wait_all(world)
    if rank == 0:
        emb = embed_windows(run, progress, rank=0, world=1)  # reads the cache back (repairs a lost shard)
        summary = fit_and_assign(run, emb, progress)
        summary["describe"] = describe_clusters(run, emb)
        stats = [json.loads(p.read_text()) for p in (cdir / "embeddings").glob("last-run-rank*.json")]
        summary["embed"] = {"mode": run.config.clusters.window_embedding, "chunk_pieces": run.config.clusters.chunk_pieces,
                            "dtype": effective_dtype(resolve_device(run.config.clusters.device), run.config.clusters.dtype),
                            "backend": embed_backend(run),
                            "last_run": stats}
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        atomic.write_json(cdir / SUMMARY, summary)
        ks = summary["ks"]
        outputs = [SUMMARY, "describe/report.md", "describe/summary.json"] + [
            str(p.relative_to(cdir)) for k in ks for p in sorted(k_dir(cdir, k).rglob("*.npy"))
        ] + [f"k{k}/meta.json" for k in ks]
        manifest.write(cdir, STAGE, cfg, inputs, outputs, {"ks": ks, "nested": summary["nested"]})
    wait_all(world)
    return read_summary(cdir)


def read_summary(clusters_dir: str | Path) -> dict:
    return read_required_json(Path(clusters_dir) / SUMMARY, f"no clusters summary in {clusters_dir}: run `speclm clusters` first",
                              fix="rebuild the clusters with `speclm clusters --force`")


def format_summary(summary: dict) -> str:
    d = summary.get("describe", {})
    lines = [f"clusters: k = {', '.join(map(str, summary['ks']))}{' (nested)' if summary.get('nested') else ''}; "
             f"fitted on {summary['fit_windows']:,} generic windows in {summary['fit_seconds']} s"]
    emb = [f"{name} {v['embedded']:,}/{v['windows']:,}" for name, v in summary.get("windows", {}).items()]
    lines.append("embedded (Sentence-BERT / all windows): " + ", ".join(emb))
    runs = summary.get("embed", {}).get("last_run") or []
    if runs:
        n, secs = sum(r["windows"] for r in runs), sum(r["seconds"] for r in runs)
        lines.append(f"embedding: backend {summary['embed'].get('backend', 'torch')}, {n:,} windows computed "
                     f"in {secs:.0f} s ({n / max(secs, 1e-9):.1f} windows/s)")
    if summary.get("propagation_agreement"):
        lines.append("token-bag proxy agreement with Sentence-BERT clusters (held-out): " + ", ".join(
            f"k={k} {v:.0%}" for k, v in summary["propagation_agreement"].items()))
    empty = {k: v["empty_clusters"] for k, v in summary.get("per_k", {}).items() if v["empty_clusters"]}
    if empty:
        lines.append("empty clusters (no generic train window): " + ", ".join(f"k={k}: {v}" for k, v in empty.items()))
    if d:
        lines.append(desc.format_tables(d["tables"], d["ks"]))
    return "\n".join(lines)
