"""Audit the asymmetric methods (slm-is, slm-mix, slm-pn) of a finished run folder, read-only.

When they trail the SLM beyond the interval, it may be a defect: each check recomputes what it
can with speclm's own code. 0: where they trail slm. 1: each domain's cluster histograms, and
the windows each slm-is pretraining really read (its seeded draw recomputed, its sampler
replayed) against the target. 2: the resample's passes and Kish ESS. 3: the expert each
slm-mix / slm-pn specialization took against the rule, and that its fine-tune started there.
4: each slm-mix expert's budget, lr schedule and data against slm's. 5: PN's materialization
(parameters, logits against the routed network's, the saved experts). 6: the fine-tuning rate
of every specialization against the rule and slm's.

Usage: python scripts/audit_methods.py RUN_FOLDER [--out FILE.md]: prints the markdown report
(per check a PASS/WARN/FAIL line, its findings and numbers), exit 0; bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from speclm.clusters.store import histogram_of
from speclm.core import atomic, manifest
from speclm.core.run import open_run
from speclm.methods import base, inputs, pretraining, selection, specset
from speclm.methods.finetune import small_set
from speclm.methods.slm_mix import expert_dir
from speclm.report.results import grid_rows
from speclm.report.rows import config_hash
from speclm.train.budget import Budget
from speclm.train.checkpoint import load_projected, load_transformer, read_meta
from speclm.train.data import WindowSampler
from speclm.train.schedule import Schedule
from speclm.train.validate import window_nll

LEVELS = ("PASS", "WARN", "FAIL")
ASYM = ("slm-is", "slm-is-full", "slm-mix", "slm-pn", "slm-pn-hist")
TOL_LOGITS = 1e-4  # materialized vs routed logits, saved vs fresh expert weights
TOL_LOSS = 1e-6  # a fine-tune's step-0 validation loss vs its start checkpoint's


class Section:
    def __init__(self, title: str):
        self.title, self.issues, self.body = title, [], []  # body: markdown lines

    def flag(self, level: str, text: str) -> None:
        self.issues.append((level, text))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.body += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.body += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]

    @property
    def verdict(self) -> str:
        return max((lvl for lvl, _ in self.issues), key=LEVELS.index, default="PASS")

    def render(self) -> str:
        head = f"**{self.verdict}**: " + (f"{len(self.issues)} finding(s)" if self.issues else "no defect found")
        found = [f"- {lvl}: {t}" for lvl, t in sorted(self.issues, key=lambda it: -LEVELS.index(it[0]))]
        return "\n".join([f"## {self.title}", "", head, "", *found, *self.body])


def g(x, d: int = 3) -> str:
    return "-" if x is None else f"{x:.{d}g}" if isinstance(x, float) else str(x)


def hist_text(h: np.ndarray, top: int = 3) -> str:
    if len(h) <= 8:
        return " ".join(f"{x:.2f}" for x in h)
    order = np.argsort(-h, kind="stable")[:top]
    return ", ".join(f"c{i}: {h[i]:.2f}" for i in order if h[i] > 0) + f" (+{int((h > 0).sum()) - top} more)"


def tv_noise(p: np.ndarray, n: int) -> float:
    """Expected TV distance between ``p`` and the histogram of ``n`` draws from it (normal
    approximation of each cluster's count: E|x - np| = sqrt(2 n p (1 - p) / pi))."""
    return float(0.5 * np.sum(np.sqrt(2 * p * (1 - p) / (math.pi * max(n, 1)))))


def loop_result(folder: Path) -> dict:
    """A training folder's result (steps, tokens, flops, best_valid, last_valid), {} if none."""
    p = folder / "train.json"
    return (json.loads(p.read_text(encoding="utf-8")).get("result") or {}) if p.is_file() else {}


def summary(folder: Path) -> dict | None:
    return manifest.job_summary(folder) if manifest.is_done(folder) else None


def jsonl(path: Path) -> list[dict]:
    return atomic.read_jsonl(path) if path.is_file() else []


def windows_read(sampler, steps: int, grad_accum: int) -> np.ndarray:
    """The window ids a one-process training loop read in ``steps`` steps."""
    ids = [sampler.window_ids(p) for p in range(steps * grad_accum)]
    return np.concatenate(ids) if ids else np.empty(0, np.int64)


# -- 0. where they trail ---------------------------------------------------------------------

def check_trail(ctx, sec: Section) -> None:
    results = ctx.run.eval_dir / "results.jsonl"
    if not results.is_file():
        return sec.flag("WARN", f"no {results}: nothing to compare")
    rows, out, trailing = grid_rows(results, config_hash(ctx.run)), [], []
    for (meth, d, s), r in sorted(rows.items()):
        slm = rows.get(("slm", d, s))
        if meth not in ASYM or slm is None or r.get("ppl_lo") is None or slm.get("ppl_hi") is None:
            continue
        beyond = r["ppl_lo"] > slm["ppl_hi"]
        trailing += [f"{meth} {d}/{s}"] if beyond else []
        out.append([meth, d, s, *(f"{x['ppl']:.2f} [{x['ppl_lo']:.2f}, {x['ppl_hi']:.2f}]" for x in (r, slm)),
                    "**yes**" if beyond else "no"])
    sec.table(["method", "domain", "size", "ppl [interval]", "slm ppl [interval]", "trails beyond"], out)
    by = {mm: sum(t.startswith(mm + " ") for t in trailing) for mm in ASYM}
    if trailing:
        sec.flag("WARN", f"{len(trailing)} of {len(out)} rows trail slm beyond the interval ("
                         + ", ".join(f"{mm}: {n}" for mm, n in by.items() if n) + "): checks 1-6 look for a defect behind them")


# -- 1. slice histograms ---------------------------------------------------------------------

def check_histograms(ctx, sec: Section) -> None:
    m, c = ctx.config.methods, ctx.clusters
    for k in sorted({m.is_k, m.mix_k, m.pn_k}):
        if k not in c.ks:
            sec.flag("FAIL", f"k={k} is configured but not clustered")
            continue
        gen = c.histogram(k, inputs.GENERIC)
        rows = [["generic", hist_text(gen), int((gen > 0).sum()), "0"]]
        for d in inputs.domains(ctx):
            h = c.histogram(k, d)
            rows.append([d, hist_text(h), int((h > 0).sum()), f"{specset.total_variation(h, gen):.2f}"])
        used = ", ".join(n for n in ("is_k", "mix_k", "pn_k") if getattr(m, n) == k)
        sec.body.append(f"\n**k={k}** ({used}; whole train splits)")
        sec.table(["set", "histogram", "clusters used", "TV to generic"], rows)
    if m.is_k not in c.ks:
        return
    rows, generic = {}, ctx.shards.windows(inputs.GENERIC, "train")
    assign = np.asarray(c.assign(m.is_k, inputs.GENERIC, "train"), np.int64)
    for name in ("slm-is", "slm-is-full"):
        meth = base.get(name)
        for view in [ctx.run.with_seed(i) for i in range(m.seeds if name in m.seed_methods else 1)]:
            vctx = base.Context(run=view, log=lambda s: None)
            for d in inputs.domains(ctx):
                for s in m.sizes:
                    target = meth.pretrain_target(vctx, d, s)
                    folder = meth.pretrain_folder(vctx, d, target)
                    if folder in rows:  # sizes whose slices have the same histogram share one pretraining
                        rows[folder][3] += f", {s}"
                    if folder in rows or (info := summary(folder)) is None:
                        continue
                    idx, rep = meth.pretrain_indices(vctx, d, target, quiet=True)
                    rec, now = info.get("importance", {}), rep["importance"]
                    if any(rec.get(f) != now[f] for f in ("draws", "drawn_unique", "max_passes")):
                        sec.flag("FAIL", f"{folder}: the recomputed draw differs from the recorded one")
                    cfg = pretraining.pretrain_config(vctx, meth.budget_share(vctx))
                    sampler = WindowSampler(generic, cfg.batch_size, seed=cfg.seed, indices=idx)
                    read = windows_read(sampler, int(loop_result(folder).get("steps", 0)), cfg.grad_accum)
                    tv_draw = specset.total_variation(histogram_of(assign[idx], m.is_k), target.histogram)
                    tv_read = specset.total_variation(histogram_of(assign[read], m.is_k), target.histogram)
                    noise = tv_noise(np.asarray(now["cluster_probs"]), len(read))
                    rows[folder] = [name, view.seed_offset, d, s, len(target.windows), f"{target.tv:.2f}", len(idx), len(read),
                                    f"{tv_draw:.3f}", f"{tv_read:.3f}", f"{noise:.3f}", folder.relative_to(ctx.run.path)]
                    where = f"{name} {d}/{s} seed {view.seed_offset}"
                    if tv_read > 3 * noise + 1e-9:
                        sec.flag("FAIL" if tv_read > 6 * noise else "WARN",
                                 f"{where}: the windows read are {tv_read:.3f} (TV) from the target, "
                                 f"{tv_read / max(noise, 1e-12):.1f}x the noise of {len(read)} draws")
                    if target.tv > 0.2 and view.seed_offset == 0 and name == "slm-is":
                        sec.flag("WARN", f"slm-is {d}/{s}: its slice's histogram at k={m.is_k} is {target.tv:.2f} (TV) "
                                         "from the whole split's (a small set at a large k: the trade-off of "
                                         "docs/paper.md §2.3, not a code defect)")
    sec.body.append(f"\n**slm-is pretrainings** (k={m.is_k}): the draw recomputed, the windows read by replaying the "
                    "sampler for the steps trained; TV to the slice's histogram; noise = expected TV of that many draws")
    sec.table(["method", "seed", "domain", "sizes", "slice windows", "TV slice→split", "drawn", "read",
               "TV draw→target", "TV read→target", "noise", "folder"], list(rows.values()))
    if not rows:
        sec.flag("WARN", "no finished slm-is pretraining found")


# -- 2. the resample's passes ----------------------------------------------------------------

def check_passes(ctx, sec: Section) -> None:
    rows = [r for r in jsonl(ctx.run.eval_dir / "results.jsonl") if r.get("method") in ("slm-is", "slm-is-full")]
    slm, window = loop_result(ctx.run.pretrain_dir("slm")), ctx.shards.window
    n_gen = len(ctx.shards.windows(inputs.GENERIC, "train"))
    if slm.get("tokens"):
        sec.body.append(f"\nfor scale, slm read {slm['tokens'] // window} of the {n_gen} generic train windows "
                        f"({slm['tokens'] / window / n_gen:.2f} passes, each window at most once per pass)")
    out, heavy = [], []
    for r in sorted(rows, key=lambda r: (r["method"], r["domain"], r["size"], r.get("seed", 0))):
        imp, where = (r.get("extra") or {}).get("importance"), f"{r['method']} {r['domain']}/{r['size']} seed {r.get('seed', 0)}"
        if not imp:
            sec.flag("FAIL", f"{where}: the row has no extra.importance")
            continue
        ratio = imp["kish_ess"] / max(imp["draws"], 1)
        out.append([r["method"], r["domain"], r["size"], r.get("seed", 0), imp["draws"], imp["drawn_unique"], imp["max_passes"],
                    f"{imp['mean_passes']:.2f}", f"{imp['kish_ess']:.0f}", f"{imp['kish_ess_fraction']:.3f}", f"{ratio:.2f}"])
        if imp["max_passes"] >= 5 or ratio < 1:
            heavy.append((ratio, f"{where} (max {imp['max_passes']}, mean {imp['mean_passes']:.2f}, "
                                 f"ESS {imp['kish_ess']:.0f} for {imp['draws']} draws)"))
    if heavy:
        few, many = sum(float(r[-1]) < 1 for r in out), sum(int(r[6]) >= 5 for r in out)
        sec.flag("WARN", f"{many} of {len(out)} rows read a generic window 5+ times, {few} have a Kish ESS below "
                         f"their draws (the stream repeats); the worst: {'; '.join(t for _, t in sorted(heavy)[:3])}")
    sec.table(["method", "domain", "size", "seed", "draws", "distinct", "max passes", "mean passes", "Kish ESS",
               "ESS / generic", "ESS / draws"], out)
    if not out:
        sec.flag("WARN", "no slm-is row in eval/results.jsonl")


# -- 3. routing and expert choice ------------------------------------------------------------

def check_routing(ctx, sec: Section) -> None:
    m, out, cache = ctx.config.methods, [], {}
    mix = summary(ctx.run.pretrain_dir("slm-mix"))

    def loss(d: str, ckpt: Path) -> float:  # the fine-tune's own validation (same windows)
        if (d, ckpt) not in cache:
            cache[(d, ckpt)] = pretraining.valid_fn(ctx, d)(load_transformer(ckpt))
        return cache[(d, ckpt)]

    for name in ("slm-mix", "slm-pn", "slm-pn-hist"):
        k = m.mix_k if name == "slm-mix" else m.pn_k
        for d in inputs.domains(ctx):
            for s in m.sizes:
                folder = ctx.run.specialize_dir(name, d, s)
                info, where = summary(folder), f"{name} {d}/{s}"
                if info is None:
                    continue
                choice = info["expert"] if name == "slm-mix" else info  # slm-pn records it at the top level
                rule, expert = choice.get("rule"), int(choice["expert"])
                scores = {int(i): v for i, v in (choice.get("scores") or {}).items()}
                t = specset.cluster_target(ctx, d, s, k)
                recorded = np.asarray(info.get("domain_histogram") or info.get("histogram"), np.float64)
                if recorded.shape != t.histogram.shape or np.abs(recorded - t.histogram).max() > 1e-5:
                    sec.flag("FAIL", f"{where}: the recorded histogram is not the slice's")
                if rule in ("most_frequent", "histogram"):  # histogram: the argmax labels the mix
                    pool = selection.ExpertPool(k=k, histogram=t.histogram, experts=mix["experts"] if name == "slm-mix" else None)
                    expect = selection.select("most_frequent", pool).expert
                else:  # best_pretrained / finetune_all: the lowest recorded score
                    expect = min(scores, key=lambda i: (scores[i], i)) if scores else expert
                if expect != expert:
                    sec.flag("FAIL", f"{where}: rule {rule} gives expert {expect}, the job took {expert}")
                if int(np.argmax(t.whole)) != expert and rule != "histogram":
                    sec.flag("WARN", f"{where}: the slice's top cluster {expert} is not the whole split's ({np.argmax(t.whole)})")
                s0 = next((r["valid_loss"] for r in jsonl(folder / "metrics.jsonl") if r.get("step") == 0 and "valid_loss" in r), None)
                hits = "-"
                if rule != "finetune_all":
                    mdir = ctx.run.pretrain_dir("slm-mix")
                    starts = {i: expert_dir(mdir, i) / "final" for i in mix["experts"]} if name == "slm-mix" else {expert: folder / "expert"}
                    losses = {i: loss(d, p) for i, p in starts.items()}
                    found = [i for i, v in losses.items() if s0 is not None and abs(v - s0) <= TOL_LOSS]
                    hits = ",".join(map(str, found)) or "none"
                    if expert not in found:
                        sec.flag("FAIL", f"{where}: the fine-tune's step-0 loss {g(s0, 6)} is not expert {expert}'s "
                                         f"({g(losses.get(expert), 6)})")
                out.append([name, d, s, rule, expert, f"{t.histogram[expert]:.2f}", f"{t.whole[expert]:.2f}",
                            int(np.argmax(t.whole)), g(s0, 5), hits])
    sec.body.append("\nshare = the domain's windows in the chosen expert's cluster (slice / whole train split); step-0 = "
                    "the fine-tune's first validation loss; started from = the start checkpoints (slm-mix: every expert; "
                    f"slm-pn: the job's materialized `expert/`, see check 5) whose loss equals it within {TOL_LOSS}")
    sec.table(["method", "domain", "size", "rule", "expert", "share (slice)", "share (split)", "split's top",
               "step-0 loss", "started from"], out)
    if not out:
        sec.flag("WARN", "no finished slm-mix / slm-pn specialization found")


# -- 4. each expert's schedule and budget ----------------------------------------------------

def check_experts(ctx, sec: Section) -> None:
    m, t, shards = ctx.config.methods, ctx.config.train, ctx.shards
    mix_dir, slm_dir = ctx.run.pretrain_dir("slm-mix"), ctx.run.pretrain_dir("slm")
    mix, slm = summary(mix_dir), loop_result(slm_dir)
    if mix is None or not slm:
        return sec.flag("WARN", "no finished slm-mix or slm pretraining")
    experts, warm = mix["experts"], t.warmup_steps
    cfg = pretraining.pretrain_config(ctx, 1.0 / len(experts))  # the code's split (slm_mix.py, pretrain)
    generic, valid = shards.windows(inputs.GENERIC, "train"), shards.windows(inputs.GENERIC, "valid")
    assign = np.asarray(ctx.clusters.assign(m.mix_k, inputs.GENERIC, "train"), np.int64)
    vassign = np.asarray(ctx.clusters.assign(m.mix_k, inputs.GENERIC, "valid"), np.int64)
    slm_model = load_transformer(slm_dir / "final")
    sched = lambda n: Schedule(lr=cfg.lr, warmup_steps=warm, kind=cfg.schedule, total_steps=n, min_ratio=cfg.min_lr_ratio)  # noqa: E731
    is_steps = sorted({loop_result(p.parent).get("steps") for p in ctx.run.path.glob("pretrain/slm-is/*/h-*/train.json")} - {None})
    sec.body.append(f"\nslm: {slm['steps']} steps, {slm['tokens']} tokens, {slm['flops']:.3g} FLOPs, warmup {warm} "
                    f"({warm / slm['steps']:.0%}), final lr / lr {sched(slm['steps'])(slm['steps'] - 1) / cfg.lr:.3f}. The code "
                    f"gives each of the {len(experts)} experts 1/{len(experts)} of it (slm_mix.py: "
                    f"`pretrain_config(ctx, 1.0 / len(experts))`); methods.per_domain_budget = {m.per_domain_budget} "
                    f"(slm-is's share: its pretrainings trained {', '.join(map(str, is_steps)) or '-'} steps, warmup {warm})")
    rows, long_warmup, n_eval = [], [], t.eval_batches * t.batch_size
    for i in experts:
        folder = expert_dir(mix_dir, i)
        res, info, where = loop_result(folder), summary(folder) or {}, f"expert {i}"
        steps = int(res.get("steps", 0))
        share_t, share_f = res.get("tokens", 0) / slm["tokens"], res.get("flops", 0.0) / slm["flops"]
        horizon = Budget.from_config(cfg).horizon_steps(cfg.batch_size * shards.window * cfg.grad_accum,
                                                        res.get("flops", 0.0) / max(steps, 1))
        lr_err = max((abs(r["lr"] - sched(steps)(r["step"] - 1)) / cfg.lr for r in jsonl(folder / "metrics.jsonl") if "lr" in r),
                     default=float("nan"))
        members = np.nonzero(assign == i)[0]
        read = windows_read(WindowSampler(generic, cfg.batch_size, seed=cfg.seed + i, indices=members), steps, cfg.grad_accum)
        inside = float(np.mean(assign[read] == i)) if len(read) else float("nan")
        own = np.nonzero(vassign == i)[0][:n_eval]
        nll = [float(window_nll(mdl, valid, own).sum() / (len(own) * shards.window)) if len(own) else float("nan")
               for mdl in (load_transformer(folder / "final"), slm_model)]
        rows.append([i, info.get("windows"), len(members), steps, res.get("tokens"), f"{share_t:.3f}", f"{share_f:.3f}",
                     f"{warm}/{steps}", horizon, g(lr_err), f"{sched(steps)(steps - 1) / cfg.lr:.3f}",
                     f"{len(read) / max(len(members), 1):.2f}", f"{inside:.3f}", g(res.get("best_valid"), 4),
                     g(res.get("last_valid"), 4), f"{nll[0]:.3f} / {nll[1]:.3f}"])
        if abs(share_t - 1 / len(experts)) > cfg.batch_size * shards.window / slm["tokens"] + 1e-9:
            sec.flag("FAIL", f"{where}: {share_t:.3f} of slm's tokens, the code's rule is 1/{len(experts)}")
        if abs(share_t - m.per_domain_budget) > 1e-3:
            sec.flag("WARN", f"{where}: {share_t:.3f} of slm's tokens, not methods.per_domain_budget = {m.per_domain_budget}")
        if horizon != steps or not lr_err <= 1e-9:
            sec.flag("FAIL", f"{where}: cosine horizon {horizon}, lr log error {g(lr_err)}: not a cosine to its {steps} steps")
        if info.get("windows") != len(members) or inside != 1.0:
            sec.flag("FAIL", f"{where}: recorded {info.get('windows')} windows, its cluster holds {len(members)}, "
                             f"{inside:.3f} of the windows read are in it")
        if warm / max(steps, 1) > 2 * warm / slm["steps"]:
            long_warmup.append(f"{i} ({warm}/{steps})")
    if long_warmup:
        sec.flag("WARN", f"experts {', '.join(long_warmup)} spend over twice slm's share of their steps in warmup (slm "
                         f"{warm}/{slm['steps']}): pretraining.py pretrain_config keeps train.warmup_steps when it shrinks "
                         "the budget (slm-is's quarter budget too)")
    sec.table(["expert", "windows (recorded)", "cluster windows", "steps", "tokens", "tokens / slm", "FLOPs / slm",
               "warmup", "cosine horizon", "lr log error", "final lr / lr", "passes over cluster", "read in cluster",
               "best valid", "last valid", "own-cluster NLL: expert / slm"], rows)
    sec.body.append(f"valid = the loop's generic validation (every cluster); own-cluster NLL: the expert and slm on up "
                    f"to {n_eval} generic valid windows of the expert's cluster")


# -- 5. PN's materialization -----------------------------------------------------------------

def saved_gap(want: dict, have: dict) -> tuple[float, list[str]]:
    """The largest weight difference between a materialized state ``want`` and a saved one
    ``have``, and the names found on one side only. A tied weight (the output layer sharing the
    embedding) is saved once, so a name missing from ``have`` is fine when its tensor equals one
    that was saved."""
    odd = [n for n in want if n not in have and not any(
        m in have and want[m].shape == want[n].shape and torch.equal(want[m], want[n]) for m in want)]
    odd += [f"{n} (saved only)" for n in have if n not in want]
    gaps = [float((want[n] - have[n]).abs().max()) for n in want if n in have]
    return max(gaps, default=float("inf")), odd


def check_pn(ctx, sec: Section) -> None:
    pre = ctx.run.pretrain_dir("slm-pn")
    if summary(pre) is None:
        return sec.flag("WARN", "no finished slm-pn pretraining")
    pn = load_projected(pre / "final").eval()
    counts, slm_params = pn.param_counts(), read_meta(ctx.run.pretrain_dir("slm") / "final").get("param_count")
    pn_res, slm_res = loop_result(pre), loop_result(ctx.run.pretrain_dir("slm"))
    sec.body.append(f"\nprojected network: {pn.param_count()} parameters (recorded {counts['total']}), "
                    f"{counts['total'] / counts['inference']:.2f}x one expert; slm: {slm_params}; pretraining FLOPs "
                    f"{g(pn_res.get('flops'))} vs slm {g(slm_res.get('flops'))}, tokens {pn_res.get('tokens')} vs {slm_res.get('tokens')}")
    if pn.param_count() != counts["total"]:
        sec.flag("FAIL", f"the network holds {pn.param_count()} parameters, its counts say {counts['total']}")
    split = "valid" if len(ctx.shards.windows(inputs.GENERIC, "valid")) else "train"
    windows = ctx.shards.windows(inputs.GENERIC, split)
    assign = np.asarray(ctx.clusters.assign(pn.k, inputs.GENERIC, split), np.int64)
    rows = []
    with torch.no_grad():
        for c in range(pn.k):
            idx, plain = np.nonzero(assign == c)[0][:4], pn.materialize(pn.expert_vector(c)).eval()
            n = sum(p.numel() for p in plain.parameters())
            if n != slm_params:
                sec.flag("FAIL", f"expert {c} materializes {n} parameters, slm has {slm_params}")
            if not len(idx):
                rows.append([c, n, 0, "-", "-"])
                continue
            x = torch.from_numpy(windows.batch(idx)[:, :-1])
            routed = pn(x, expert=torch.full((len(idx),), c))[0]
            diff = float((plain(x)[0] - routed).abs().max())
            other = float((pn(x, expert=torch.full((len(idx),), (c + 1) % pn.k))[0] - routed).abs().max())
            rows.append([c, n, len(idx), f"{diff:.2e}", f"{other:.2e}"])
            if not diff <= TOL_LOGITS:
                sec.flag("FAIL", f"expert {c}: materialized logits differ from the routed ones by {diff:.2e}")
    sec.table(["cluster", "materialized params", f"generic {split} windows", "max abs logits diff vs routed",
               "(routed to the next expert instead)"], rows)
    saved = []
    for folder in sorted(ctx.run.path.glob("specialize/slm-pn*/*/*/expert")) + sorted(ctx.run.path.glob("specialize/slm-pn*/*/*/experts/*/expert")):
        about = read_meta(folder).get("materialized_from") or {}
        vec = pn.histogram_vector(about["histogram"]) if "histogram" in about else pn.expert_vector(int(about.get("expert", -1)))
        gap, odd = saved_gap(pn.materialize_state(vec), load_file(str(folder / "model.safetensors")))
        saved.append(gap)
        if odd:
            sec.flag("FAIL", f"{folder.relative_to(ctx.run.path)}: tensors not matched between the saved expert and "
                             f"its materialization: {', '.join(odd)}")
        if not saved[-1] <= TOL_LOGITS:
            sec.flag("FAIL", f"{folder.relative_to(ctx.run.path)}: the saved expert is {saved[-1]:.2e} from its materialization")
    sec.body.append(f"saved experts (specialize/slm-pn*/.../expert) against a fresh materialization of their vector: "
                    f"{len(saved)}, max abs weight diff {max(saved, default=0.0):.2e}")


# -- 6. the fine-tuning rate rule ------------------------------------------------------------

def check_rates(ctx, sec: Section) -> None:
    m, t = ctx.config.methods, ctx.config.train
    base_lr = m.finetune_lr or t.lr
    rule = {s: base_lr * (m.finetune_small_lr_factor if small_set(ctx, s) else 1.0) for s in m.sizes}
    own = {"slm-nopt": lambda s: m.nopt_lr or t.lr, "llm-lora": lambda s: rule[s] * m.lora_lr_factor}  # their own rules
    seen: dict[tuple[str, str], set] = {}
    for man in sorted(ctx.run.path.glob("specialize/*/*/*/manifest.json")) + sorted(ctx.run.path.glob("seed-*/specialize/*/*/*/manifest.json")):
        folder = man.parent
        meth, size, info = folder.parent.parent.name, folder.name, summary(man.parent)
        if info is None or size not in rule or "plan" not in info:
            continue
        lr = round(info["plan"]["lr"], 12)
        seen.setdefault((meth, size), set()).add(lr)
        applied = {round(r["lr"], 12) for r in jsonl(folder / "metrics.jsonl") if "lr" in r}
        if meth not in own and m.finetune_schedule == "constant" and not m.finetune_warmup_steps and applied - {lr}:
            sec.flag("FAIL", f"{folder.relative_to(ctx.run.path)}: planned lr {lr:.4g}, the loop logged {sorted(applied)}")
    rows = []
    for s in m.sizes:
        slm = seen.get(("slm", s), set())
        for meth in sorted(mm for mm, ss in seen if ss == s):
            lrs, expect = seen[(meth, s)], own[meth](s) if meth in own else rule[s]
            ok = lrs == {round(expect, 12)}
            rows.append([s, meth, ", ".join(f"{x:.4g}" for x in sorted(lrs)), f"{expect:.4g}" + (" (own rule)" if meth in own else ""),
                         "yes" if lrs == slm else "no", "yes" if ok else "**no**"])
            if not ok:
                sec.flag("FAIL", f"{meth} at {s}: lr {sorted(lrs)}, the rule says {expect:.4g}")
            elif meth not in own and lrs != slm:
                sec.flag("FAIL", f"{meth} at {s}: lr {sorted(lrs)}, slm used {sorted(slm)}")
    sec.body.append(f"\nrule (finetune.py plan, small_set): {base_lr:.4g} (methods.finetune_lr or train.lr), times "
                    f"{m.finetune_small_lr_factor:.4g} for sets of at most methods.finetune_small_tokens = "
                    f"{m.finetune_small_tokens} tokens; schedule {m.finetune_schedule}, warmup {m.finetune_warmup_steps}; "
                    "the lr the loop logged (metrics.jsonl) is checked against the planned one")
    sec.table(["size", "method", "lr used (every domain, seed)", "rule", "same as slm", "follows the rule"], rows)


CHECKS = [("0. Where the asymmetric methods trail slm", check_trail), ("1. Slice histograms", check_histograms),
          ("2. The resample's passes", check_passes), ("3. Routing and expert choice", check_routing),
          ("4. Each expert's schedule and budget", check_experts), ("5. PN's materialization", check_pn),
          ("6. The fine-tuning rate rule", check_rates)]


def open_context(path: Path) -> base.Context:
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder")
    missing = [p for p in ("config.toml", "tokens/manifest.json", "clusters/manifest.json") if not (path / p).is_file()]
    if missing:
        raise ValueError(f"{path} is not a run folder with tokens and clusters (no {', '.join(missing)})")
    return base.Context(run=open_run(path, save=False), log=lambda s: None)


def audit(path: Path) -> str:
    ctx = open_context(path)
    m = ctx.config.methods
    sections = [Section(title) for title, _ in CHECKS]
    for sec, (_, fn) in zip(sections, CHECKS):
        try:
            fn(ctx, sec)
        except Exception as e:  # a check that cannot run is a finding, not the end of the audit
            sec.flag("FAIL", f"the check could not run: {type(e).__name__}: {e}")
    head = [f"# Audit of the asymmetric methods: {path}", "",
            f"preset {ctx.config.name}; is_k={m.is_k}, mix_k={m.mix_k}, pn_k={m.pn_k} (h={m.pn_h}, m={m.pn_m}), expert_rule "
            f"{m.expert_rule}, sizes {', '.join(m.sizes)}, per_domain_budget {m.per_domain_budget}, seeds {m.seeds}",
            "", "| check | verdict |", "|---|---|", *[f"| {s.title} | {s.verdict} |" for s in sections], ""]
    return "\n".join(head + [s.render() + "\n" for s in sections])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished run folder (read only)")
    p.add_argument("--out", type=Path, help="also write the markdown report to this file")
    a = p.parse_args(argv)
    try:
        text = audit(a.run)
    except Exception as e:  # bad input: one line, exit 2
        print(f"audit_methods: error: {(str(e).splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return 2
    print(text)
    if a.out:
        a.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
