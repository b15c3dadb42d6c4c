"""Kill every stage at random points, rerun it, and check the result is bit-identical.

For each stage (corpus, tokens, clusters, pretraining with `speclm train`, fine-tuning with
`speclm train --init`) this script builds a reference run without interruption, then copies
the reference's upstream folders into a fresh run, starts the stage's command, SIGKILLs it
after a random delay (several times), reruns it to completion, and compares the sha256 of
the stage's outputs with the reference's. It also checks that no temporary file
(``.*.tmp``, ``.*.old``) is left anywhere in the run. A summary table goes to stdout; the
exit code is 1 when any stage differs or leaves a temp file.

Last, the grid's parent: `speclm grid --workers 2` is started, its parent process alone is
SIGKILLed while its workers train, and the workers must be gone within 10 seconds (they
watch their parent between training steps), with no traceback (no BrokenPipeError) on their
stderr; the grid is then rerun to completion (their locks released, their jobs resumed) and
its rows must match an uninterrupted grid's.

    python scripts/kill_resume.py [--kills-per-stage 5] [--seed 0] [--keep DIR]

Shapes are tiny (the `tiny` preset, a few dozen training steps): a few minutes of CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ["--preset", "tiny"]
TRAIN = ["--set", "train.max_steps=60", "--set", "train.checkpoint_every=5", "--set", "train.eval_every=20",
         "--set", "train.eval_batches=2", "--set", "train.log_every=5"]
CLUSTERS = ["--set", "clusters.ks=[2, 4]", "--set", "clusters.embed_sample=48", "--set", "clusters.embed_sample_other=4",
            "--set", "clusters.chunk_pieces=16", "--set", "clusters.niter=5"]
PRETRAINED = "train/generic/tiny"

# name, command (after `speclm`), upstream folders copied from the reference, outputs compared
STAGES = [
    ("corpus", ["corpus", "build"], [], ["corpus"]),
    ("tokens", ["tokens"], ["corpus"], ["tokens"]),
    ("clusters", ["clusters", *CLUSTERS], ["corpus", "tokens"], ["clusters"]),
    ("pretrain", ["train", *TRAIN], ["corpus", "tokens"], [f"{PRETRAINED}/final/model.safetensors"]),
    ("finetune", ["train", *TRAIN, "--set-name", "{domain}", "--init", "{ref}/" + PRETRAINED + "/final",
                  "--out", "{run}/ft"], ["corpus", "tokens", "train"], ["ft/final/model.safetensors"]),
]
# files whose content names the time or the machine, not the result
VOLATILE = ("manifest.json", "summary.json", "cost.json", "train.json", "metrics.jsonl", "meta.json", ".lock")


def speclm(args: list[str], capture: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "speclm.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if capture else subprocess.DEVNULL, start_new_session=True)


def digest(run: Path, outputs: list[str]) -> str:
    h = hashlib.sha256()
    for o in outputs:
        p = run / o
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            if f.name.endswith(VOLATILE) or "last-run" in f.name:
                continue
            h.update(str(f.relative_to(run)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def leftovers(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*") if p.name.endswith((".tmp", ".old")))


def finish(args: list[str]) -> float:
    t0 = time.perf_counter()
    p = speclm(args, capture=True)
    _, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"speclm {' '.join(args)} failed ({p.returncode}):\n{err.decode()[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills-per-stage", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--only", default="", help="comma-separated stages to run (corpus, tokens, clusters, pretrain, "
                    "finetune, grid); default: all")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = a.keep or Path(tempfile.mkdtemp(prefix="speclm-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    ref = work / "reference"
    rows, ok, t_start = [], True, time.perf_counter()
    domain = None
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    for name, cmd, upstream, outputs in STAGES:
        if only and name not in only:
            continue
        if domain is None and (ref / "tokens").is_dir():
            domain = sorted(p.name for p in (ref / "tokens").iterdir() if p.is_dir() and p.name != "generic")[0]
        fill = lambda args, run: [s.format(domain=domain, ref=ref, run=run) for s in args]  # noqa: E731
        seconds = finish(fill(cmd, ref) + ["--run", str(ref), *BASE])
        want = digest(ref, fill(outputs, ref))
        run = work / f"killed-{name}"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        shutil.copy(ref / "config.toml", run / "config.toml")
        for up in upstream:
            shutil.copytree(ref / up, run / up, symlinks=True)
        args = fill(cmd, run) + ["--run", str(run), *BASE]
        kills, tries, delays, same, left = 0, 0, [], True, []
        while kills < a.kills_per_stage and tries < 4 * a.kills_per_stage:
            tries += 1
            delay = rng.uniform(0.1, 0.9) * seconds
            p = speclm(args)
            try:
                p.wait(timeout=delay)  # finished before the kill: not counted; check it, start over
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                kills += 1
                delays.append(delay)
                continue
            if p.returncode != 0:
                raise SystemExit(f"speclm {' '.join(args)} failed ({p.returncode}) after a kill")
            same &= digest(run, fill(outputs, run)) == want
            left += leftovers(run)
            shutil.rmtree(run / fill(outputs, run)[0].split("/")[0])
        finish(args)
        got = digest(run, fill(outputs, run))
        left = sorted(set(left + leftovers(run)))
        same &= got == want
        ok &= same and not left
        rows.append((name, kills, f"{seconds:.1f}", ", ".join(f"{d:.1f}" for d in delays), "yes" if same else "NO",
                     ", ".join(left) or "none", got[:12]))
        print(f"{name}: {kills} kills, identical={same}, leftovers={left or 'none'}", file=sys.stderr)
    if not only or "grid" in only:
        if not (ref / "tokens").is_dir():
            finish(["run", "--until", "tokens", "--run", str(ref), *BASE])
        ok &= grid_parent(work, ref, rows)
    head = ("stage", "kills", "uninterrupted s", "kill delays s", "bit-identical", "temp files left", "sha256 / workers")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")
    print(f"\n{sum(r[1] for r in rows)} kills in all, {time.perf_counter() - t_start:.0f} s; "
          f"{'all bit-identical, no temp files left' if ok else 'FAILED'}")
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


GRID = ["grid", "--methods", "slm,slm-nopt", "--domains", "{domain}", "--sizes", "4k", "--workers", "2",
        "--set", "methods.finetune_max_steps=[20]", "--set", "methods.bootstrap=10"]
WORKERS_GONE_S = 10.0


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def grid_rows(run: Path) -> list[tuple]:
    import json

    rows = [json.loads(x) for x in (run / "eval" / "results.jsonl").read_text().splitlines() if x.strip()]
    return sorted((r["method"], r["domain"], r["size"], round(r["nll"], 6)) for r in rows)


def grid_parent(work: Path, ref: Path, rows: list) -> bool:
    """Kill the grid's parent alone; its workers must stop within WORKERS_GONE_S, quietly."""
    domain = sorted(p.name for p in (ref / "tokens").iterdir() if p.is_dir() and p.name != "generic")[0]
    args = lambda run: [s.format(domain=domain) for s in GRID] + ["--run", str(run), *BASE, *TRAIN]  # noqa: E731
    runs = {}
    for name in ("grid-reference", "grid-killed"):
        run = work / name
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        shutil.copy(ref / "config.toml", run / "config.toml")
        for up in ("corpus", "tokens"):
            shutil.copytree(ref / up, run / up, symlinks=True)
        runs[name] = run
    seconds = finish(args(runs["grid-reference"]))
    want = grid_rows(runs["grid-reference"])
    run = runs["grid-killed"]
    log = work / "grid-killed.stderr"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as err:
        p = subprocess.Popen([sys.executable, "-m", "speclm.cli", *args(run)], env=env, stdout=subprocess.DEVNULL,
                             stderr=err, start_new_session=True)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.9 * seconds and not list((run / "pretrain").rglob("checkpoint")):
        time.sleep(0.2)  # until a worker is training (a checkpoint written), or most of a grid's time
    workers = children(p.pid)
    os.kill(p.pid, signal.SIGKILL)  # the parent alone: its workers are not signalled
    p.wait()
    t_kill = time.perf_counter()
    while any(alive(w) for w in workers) and time.perf_counter() - t_kill < 30:
        time.sleep(0.1)
    gone_s = time.perf_counter() - t_kill
    left = [w for w in workers if alive(w)]
    for w in left:  # a worker that outlived the check: stop it, so the rerun is not blocked
        os.kill(w, signal.SIGKILL)
    text = log.read_text(errors="replace")
    quiet = "Traceback" not in text and "BrokenPipeError" not in text
    finish(args(run))
    same = grid_rows(run) == want
    leftover = leftovers(run)
    ok = bool(workers) and not left and gone_s <= WORKERS_GONE_S and quiet and same and not leftover
    rows.append(("grid parent", 1, f"{seconds:.1f}", f"{t_kill - t0:.1f}", "yes" if same else "NO",
                 ", ".join(leftover) or "none", f"{len(workers)} workers gone in {gone_s:.1f} s"
                 + ("" if quiet else "; TRACEBACK on stderr")))
    print(f"grid parent: {len(workers)} workers gone in {gone_s:.1f} s (limit {WORKERS_GONE_S:g}), quiet={quiet}, "
          f"rows identical={same}, leftovers={leftover or 'none'}", file=sys.stderr)
    return ok


if __name__ == "__main__":
    sys.exit(main())
