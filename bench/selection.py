"""Data selection for one domain: cluster importance sampling (SLM-is) against DSIR (SLM-dsir).

Both resample the generic train windows to the same token budget (the grid's pretraining
budget). This prints, for one domain of a run folder:

- the per-domain selection time of each (IS: histogram + draws, given the clusters stage;
  DSIR: hashed n-gram fit + weights of every generic window), and the ratio DSIR / IS;
- how much each resample repeats (Kish effective sample size, distinct windows drawn);
- at a small scale, the domain test perplexity after pretraining on each resample and
  fine-tuning, next to the plain SLM (uniform generic data) as the reference.

    python bench/selection.py                                  # tiny preset, built under /tmp
    python bench/selection.py --run runs/demo --domain legal --size 64k
    python bench/selection.py --no-train                       # selection only
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from speclm.grid.experiment import evaluate_model
from speclm.methods import inputs  # noqa: E402
from speclm.methods.base import Context, get  # noqa: E402
from speclm.methods.sizes import parse_size  # noqa: E402
from speclm.core.run import open_run

# The tiny preset, with a sampled clustering so the stage takes seconds, not minutes.
TINY = [
    "clusters.ks=[2, 4]",
    "clusters.embed_sample=400",
    "clusters.embed_sample_other=50",
    "clusters.window_embedding='first'",
    "methods.is_k=4",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("/tmp/speclm-bench-selection"))
    ap.add_argument("--preset", default=None, help="preset for a new run folder (default: tiny)")
    ap.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--domain", default=None)
    ap.add_argument("--size", default=None, help="fine-tuning size (default: the smallest of methods.sizes)")
    ap.add_argument("--repeats", type=int, default=3, help="timings of each selection (median)")
    ap.add_argument("--no-train", action="store_true", help="only time the selections")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared machine's spin-waits hurt)")
    args = ap.parse_args()

    import statistics

    import torch

    torch.set_num_threads(args.threads)
    new = not (args.run / "config.toml").exists()
    overrides = (TINY if new and args.preset in (None, "tiny") else []) + args.set
    run = open_run(args.run, args.preset or ("tiny" if new else None), overrides)
    from speclm.grid.pipeline import run_pipeline

    run_pipeline(run)
    ctx = Context(run=run, log=print)
    domain = args.domain or inputs.domains(ctx)[0]
    size = args.size or sorted(run.config.methods.sizes, key=lambda s: parse_size(s) or math.inf)[0]
    is_m, dsir_m = get("slm-is"), get("slm-dsir")

    t_is, t_dsir = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, is_rep = is_m.pretrain_indices(ctx, domain)
        t_is.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, dsir_rep = dsir_m.pretrain_indices(ctx, domain)
        t_dsir.append(time.perf_counter() - t0)
    mi, md = statistics.median(t_is), statistics.median(t_dsir)
    imp, ds = is_rep["importance"], dsir_rep["dsir"]
    print(f"\nselection for {domain} (k={imp['k']} clusters vs {ds['ngrams']}-gram DSIR, {ds['buckets']} buckets), "
          f"{imp['generic_windows']} generic windows, {imp['draws']} draws; median of {args.repeats}:")
    print("| selection | seconds per domain | Kish ESS (fraction) | distinct drawn | repeat factor |")
    print("|---|---|---|---|---|")
    print(f"| slm-is (clusters) | {mi:.3f} | {imp['kish_ess']:.0f} ({imp['kish_ess_fraction']:.1%}) | "
          f"{imp['drawn_unique']} | {imp['drawn_repeat_factor']:.2f} |")
    print(f"| slm-dsir (n-grams) | {md:.3f} | {ds['kish_ess']:.0f} ({ds['kish_ess_fraction']:.1%}) | "
          f"{ds['drawn_unique']} | {ds['drawn_repeat_factor']:.2f} |")
    print(f"ratio DSIR / IS selection time: {md / mi:.1f}x")
    print(f"shared one-off costs: DSIR featurized its {ds['pool_windows']}-window generic pool in "
          f"{ds['pool_seconds']:.1f} s (cached); IS needs the clusters stage (Sentence-BERT + k-means), "
          f"see clusters/summary.json")
    if args.no_train:
        return

    rows = []
    for name in ("slm", "slm-is", "slm-dsir"):
        m = get(name)
        t0 = time.perf_counter()
        ckpt = m.specialize(ctx, domain, size)
        secs = time.perf_counter() - t0
        ev = evaluate_model(run, ckpt, domain)
        rows.append((name, ev["nll"], secs))

    base = rows[0][1]
    print(f"\n{domain} test perplexity after pretraining and fine-tuning on {size} (same pretraining tokens):")
    print("| method | test ppl | ratio to slm | wall s (this call) |")
    print("|---|---|---|---|")
    for name, nll, secs in rows:
        print(f"| {name} | {math.exp(nll):.2f} | {math.exp(nll - base):.3f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
