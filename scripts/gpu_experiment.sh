#!/usr/bin/env bash
# One GPU lease, one corpus-scale result (issue 12, item 4): on one H100-class GPU, in at
# most 8 minutes (the step limits below add up to 480 s),
#   1. build the full default corpus (no per-source cap),
#   2. tokenize it (8k BPE, 256-token windows, as the demo preset),
#   3. cluster it with every window embedded by Sentence-BERT (clusters.embed_sample=0),
#   4. pretrain slm (once) and slm-is (once per domain) for two domains, 1,000 steps of
#      64 x 256 tokens = 16.4M tokens each, 1,024x the 16k-token specialization set,
#      bf16 and compiled (cpu-small, 8.4M parameters: the demo's shapes; not measured on a
#      GPU yet: at 1M tokens/s a pretraining is 16 s plus its compile); fine-tune each at
#      16k tokens and evaluate on the domain's whole test split,
# and write into OUT: the results table (results.md, results.jsonl), the dry-run plan
# (plan.txt: the whole grid this config implies, every method; the script runs two), every
# step's log and wall time (steps.txt), the environment (env.txt).
#   bash scripts/gpu_experiment.sh OUT
#   DRY_RUN=1 bash scripts/gpu_experiment.sh OUT   (or --dry-run OUT): the same steps on
#   this CPU with the tiny preset and a few steps each (seconds to a minute; tests/test_gpu_experiment.py)
# Needs speclm importable (PYTHONPATH=. from a checkout) with torch (CUDA for the real run)
# and sentence-transformers; the default corpus's sources must be reachable or cached (the
# lease's machine has no network: carry a cache, or a run folder whose corpus is built —
# RUN=path reuses it, its finished stages are skipped).
set -u
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
out=${1:?usage: bash scripts/gpu_experiment.sh [--dry-run] OUT}
DRY_RUN=${DRY_RUN:-0}
PY=${PYTHON:-python3}
if [ "$DRY_RUN" != 1 ]; then  # before anything is written
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here (DRY_RUN=1 runs on the CPU)')" || exit 2
fi
mkdir -p "$out"
run=${RUN:-$out/run}
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"

if [ "$DRY_RUN" = 1 ]; then
  domains=kjv,legal
  size=4k
  limits=(60 60 120 240)  # corpus, tokens, clusters, grid (seconds)
  sets=(--preset tiny
        --set clusters.device=cpu --set clusters.embed_sample=48 --set clusters.embed_sample_other=4
        --set clusters.chunk_pieces=16 --set clusters.niter=5
        --set train.dtype=fp32 --set train.compile=false
        --set methods.pretrain_steps=4 --set 'methods.sizes=["4k"]' --set 'methods.finetune_max_steps=[4]'
        --set methods.finetune_eval_every=2 --set methods.eval_max_windows=16)
else
  domains=kjv,python_code
  size=16k
  limits=(60 120 100 200)
  sets=(--preset demo
        --set corpus.max_mb_per_source=0
        --set clusters.embed_sample=0 --set clusters.embed_sample_other=0 --set clusters.fit_sample=0
        --set 'clusters.ks=[4, 64]' --set clusters.batch_size=256 --set clusters.device=cuda
        --set train.dtype=bf16 --set train.compile=true --set train.batch_size=64 --set train.lr=1e-3
        --set train.warmup_steps=100 --set train.eval_every=500 --set train.checkpoint_every=1000
        --set methods.pretrain_steps=1000 --set 'methods.sizes=["16k"]' --set 'methods.finetune_max_steps=[200]'
        --set methods.finetune_batch_size=16 --set methods.finetune_eval_every=20 --set methods.eval_max_windows=0)
fi

{ date -u; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} > "$out/env.txt" 2>&1
: > "$out/steps.txt"

step() {  # step NAME LIMIT CMD...: run with its own time limit, log to OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc, $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/steps.txt"
  if [ $rc -ne 0 ]; then tail -5 "$out/$name.log"; echo "stopped at $name (see $out/$name.log)"; exit 1; fi
}

speclm=("$PY" -m speclm.cli)
step plan 60 "${speclm[@]}" run --run "$run" "${sets[@]}" --dry-run
cp "$out/plan.log" "$out/plan.txt"
step corpus "${limits[0]}" "${speclm[@]}" run --run "$run" "${sets[@]}" --until corpus
step tokens "${limits[1]}" "${speclm[@]}" run --run "$run" "${sets[@]}" --until tokens
step clusters "${limits[2]}" "${speclm[@]}" run --run "$run" "${sets[@]}" --until clusters
step grid "${limits[3]}" "${speclm[@]}" grid --run "$run" "${sets[@]}" --methods slm,slm-is \
  --domains "$domains" --sizes "$size" --name gpu-experiment
cp "$run/eval/gpu-experiment.md" "$out/results.md"
cp "$run/eval/gpu-experiment.jsonl" "$out/results.jsonl"
echo "results: $out/results.md"
cat "$out/results.md"
