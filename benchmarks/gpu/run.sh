#!/usr/bin/env bash
# The one prepared script for a lent GPU (see docs/benchmarks.md). It trains the bundled models and the
# faithful baseline for fixed wall-clock budgets (thesis-128 and cats-128 get the same one, for the
# ablation), exports all four generators, benchmarks the training loop, and leaves under $OUT at most
# 8 files, each < 16 MiB, as the device call allows:
#   log.txt, and bundle.tar.part-00.. : one tar of every run's config, metrics.jsonl, loss plot and last
#   sample grid, and the exported generators (fp16): cats-64, cats-64-diffaug, cats-128, thesis-128.
# Before the call: `bash benchmarks/gpu/pack.sh`; call with carry [".gpu-carry"], timeout_s 600.
# After it: `bash benchmarks/gpu/unpack.sh FILES_AT` joins the parts and scores every generator here.
# Rehearse on the CPU (a few minutes):
#   DEVICE=cpu B64=20 BDIFF=20 B128=25 BTHESIS=25 STANDING=2 BENCH=0 OUT=/tmp/gpu bash benchmarks/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu}
DATA=${DATA:-.gpu-carry/data}
DEVICE=${DEVICE:-cuda}
B64=${B64:-50}           # training seconds for cats-64 (the CPU trains it well already)
BDIFF=${BDIFF:-50}       # ... cats-64-diffaug (the small-data recipe, against cats-64)
B128=${B128:-150}        # ... cats-128
BTHESIS=${BTHESIS:-150}  # ... thesis-128 (the faithful baseline, against cats-128 on the same budget)
BENCH=${BENCH:-1}        # 1: run benchmarks/train_speed.py too
STANDING=${STANDING:-100} # batches of 64 latents for the exports' BatchNorm statistics (a CPU needs few)
PEAK=${PEAK:-989}        # dense bf16 TFLOP/s of the card, for MFU (H100 and H200 SXM: 989)
read -ra extra <<< "${TRAIN_ARGS:-}"  # more `catgan train` options for every run (tests: --batch 4)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PY:-python3}
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT  # checkpoints with D and Adam states: over 1 GiB
mkdir -p "$OUT"
amp=(); [ "$DEVICE" = cuda ] && amp=(--amp)

train() {  # name preset dataset seconds: SIGINT at the budget makes catgan save and stop cleanly
  echo "== train $1 ($2, ${4}s)"
  timeout -s INT "$4" $PY -m catgan train "$3" --preset "$2" --run "$RUNS/$1" --device "$DEVICE" "${amp[@]}" \
    --epochs 100000 --sample-every 500 --checkpoint-every 10 --keep 1 --no-progress "${extra[@]}"
  tail -n 1 "$RUNS/$1/metrics.jsonl"
}

{
  date -u; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
  train cats-64 cats-64 "$DATA/cats-64" "$B64"
  train cats-64-diffaug cats-64-diffaug "$DATA/cats-64" "$BDIFF"
  train cats-128 cats-128 "$DATA/cats-128" "$B128"
  train thesis-128 thesis-128 "$DATA/cats-128" "$BTHESIS"
  for m in cats-64 cats-64-diffaug cats-128 thesis-128; do
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

# One tar, split below the 16 MiB a returned file may have: each run's config, metrics, loss plot and
# last sample grid, and the 4 fp16 generators (~106 MiB). A call returns 8 files: log.txt and 7 parts.
# Were the tar ever larger, the weights least needed from a GPU stay behind, in this order.
part_kib=16383 max_parts=7
(cd "$RUNS" && shopt -s nullglob && tar cf bundle.tar --exclude=checkpoints --exclude=samples */ &&
  for d in */; do
    last=$(find "$d"samples -type f 2>/dev/null | sort | tail -n 1)
    [ -n "$last" ] && tar rf bundle.tar "$last"
  done
  weights=(./*.safetensors); [ ${#weights[@]} -eq 0 ] || tar rf bundle.tar "${weights[@]}")
for w in cats-64-diffaug cats-64; do
  [ "$(stat -c %s "$RUNS/bundle.tar")" -le $((max_parts * part_kib * 1024)) ] && break
  echo "bundle over $max_parts parts: leaving $w.safetensors out" | tee -a "$OUT/log.txt"
  (cd "$RUNS" && tar --delete -f bundle.tar "./$w.safetensors")
done
split -b "${part_kib}k" -d "$RUNS/bundle.tar" "$OUT/bundle.tar.part-"
ls -la "$OUT"
