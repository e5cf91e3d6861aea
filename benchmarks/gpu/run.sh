#!/usr/bin/env bash
# The one prepared script for a lent GPU (see docs/benchmarks.md). It trains the bundled models and the
# faithful baseline for fixed wall-clock budgets, exports the generators, benchmarks the training loop,
# and leaves everything under $OUT (at most 8 files, each <= 16 MiB):
#   log.txt, runs.tgz (config, metrics.jsonl, sample grids, loss plots of every run),
#   cats-64.safetensors, cats-64-diffaug.safetensors (fp16),
#   cats-128.safetensors.part-* (fp16, split; `cat` them back together).
# Before the call: `bash benchmarks/gpu/pack.sh`; call with carry [".gpu-carry"], timeout_s 600.
# Rehearse on the CPU (a few minutes):
#   DEVICE=cpu B64=20 BDIFF=20 B128=25 BTHESIS=15 STANDING=2 BENCH=0 OUT=/tmp/gpu bash benchmarks/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu}
DATA=${DATA:-.gpu-carry/data}
DEVICE=${DEVICE:-cuda}
B64=${B64:-100}          # training seconds for cats-64
BDIFF=${BDIFF:-100}      # ... cats-64-diffaug (the small-data recipe, for the ablation)
B128=${B128:-140}        # ... cats-128
BTHESIS=${BTHESIS:-70}   # ... thesis-128 (the faithful baseline, for the ablation)
BENCH=${BENCH:-1}        # 1: run benchmarks/train_speed.py too
STANDING=${STANDING:-100} # batches of 64 latents for the exports' BatchNorm statistics (a CPU needs few)
PEAK=${PEAK:-989}        # dense bf16 TFLOP/s of the card, for MFU (H100 and H200 SXM: 989)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PY:-python3}
RUNS=$(mktemp -d)
mkdir -p "$OUT"
amp=(); [ "$DEVICE" = cuda ] && amp=(--amp)

train() {  # name preset dataset seconds: SIGINT at the budget makes catgan save and stop cleanly
  echo "== train $1 ($2, ${4}s)"
  timeout -s INT "$4" $PY -m catgan train "$3" --preset "$2" --run "$RUNS/$1" --device "$DEVICE" "${amp[@]}" \
    --epochs 100000 --sample-every 500 --checkpoint-every 10 --keep 1 --no-progress
  tail -n 1 "$RUNS/$1/metrics.jsonl"
}

{
  date -u; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
  train cats-64 cats-64 "$DATA/cats-64" "$B64"
  train cats-64-diffaug cats-64-diffaug "$DATA/cats-64" "$BDIFF"
  train cats-128 cats-128 "$DATA/cats-128" "$B128"
  train thesis-128 thesis-128 "$DATA/cats-128" "$BTHESIS"
  for m in cats-64 cats-64-diffaug cats-128; do
    $PY -m catgan export --run "$RUNS/$m" --out "$RUNS/$m.safetensors" --fp16 --standing-stats "$STANDING"
  done
  if [ "$BENCH" = 1 ]; then
    echo "== benchmark"
    $PY benchmarks/train_speed.py --device "$DEVICE" --preset thesis-128 --data "$DATA/cats-128" --peak-tflops "$PEAK" --steps 30
    $PY benchmarks/train_speed.py --device "$DEVICE" --preset cats-64 --data "$DATA/cats-64" --peak-tflops "$PEAK" --steps 30
    $PY benchmarks/ddp_overhead.py --device "$DEVICE" "${amp[@]}" --steps 50 --warmup 10 --rounds 3
  fi
  date -u
} 2>&1 | tee "$OUT/log.txt"

(cd "$RUNS" && tar czf "$OUT/runs.tgz" --exclude=checkpoints --exclude='*.safetensors' */)
cp "$RUNS"/cats-64*.safetensors "$OUT/" 2>/dev/null
[ -f "$RUNS/cats-128.safetensors" ] && split -b 15M -d "$RUNS/cats-128.safetensors" "$OUT/cats-128.safetensors.part-"
ls -la "$OUT"
