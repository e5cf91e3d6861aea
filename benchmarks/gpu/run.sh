#!/usr/bin/env bash
# The one prepared script for a lent GPU (see docs/benchmarks.md). The 128 px ablation first: cats-128
# (B128 s, exported as cats-128-ablation) and the faithful thesis-128 (BTHESIS s) train for the same
# wall-clock budget; then the cats-128 run goes on for BMORE s more (exported as cats-128, the model to
# bundle; its last TAIL s keep a checkpoint every TAIL_EVERY steps, and the export averages them). The
# first GPU session (2026-11-30) brought back cats-128-ablation at B128=90; thesis-128 did not fit what a
# call brings back beside it, so B128 is now 0 by default: thesis-128, then cats-128.
# BATCH128 is the cats-128 run's batch: 64, its preset's, until the benchmark (cats-128 at 64, 128 and 256)
# shows a larger batch's steps cost under 1.26 batch-64 steps (docs/benchmarks.md: a step at batch 128 was
# worth about 1.26 at 64 px). Then it benchmarks the training loop. It leaves under $OUT what a device
# call brings back (at most 8 files under 16 MiB each, 64 MiB together): log.txt, and bundle.tar.part-00..:
# one tar of every run's config and metrics, the exported generators (fp16) in the order of need while
# they fit, loss plots and last sample grids. The tar is rebuilt after each export, so a call stopped at
# its limit still brings back every model finished before it.
# The 64 px models and their ablations train on the CPU (docs/benchmarks.md); B64=50 BDIFF=50 adds them.
# Before the call: `bash benchmarks/gpu/pack.sh`; call with carry [".gpu-carry"], timeout_s 500. The run
# ends about END=450 s after it starts (BMORE=auto takes what is left), so that a machine's start (a minute
# or two), the call and a second, shorter call after an early failure fit in a session's 15 minutes.
# After it: `bash benchmarks/gpu/unpack.sh FILES_AT` scores every generator here, on the CPU.
# Rehearse on the CPU (a few minutes):
#   DEVICE=cpu B128=25 BTHESIS=25 BMORE=10 STANDING=2 BENCH=0 OUT=/tmp/gpu bash benchmarks/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu}
DATA=${DATA:-.gpu-carry/data}
DEVICE=${DEVICE:-cuda}
B128=${B128:-0}          # training seconds for cats-128 (exported as cats-128-ablation; 90 measured)
BTHESIS=${BTHESIS:-90}   # ... thesis-128 (the faithful baseline, against cats-128 on the same budget)
BPROJ=${BPROJ:-120}      # ... projected-128 (FastGAN G + projected D, issue 35; skipped with a line where
                         # the EfficientNet-Lite0 weights package is missing: PROJECTED=1 pack.sh carries it)
BMORE=${BMORE:-auto}     # ... for the same cats-128 run after that (exported as cats-128); auto: what
END=${END:-450}          # is left of END seconds since the start, less RESERVE for its export and the
RESERVE=${RESERVE:-90}   # benchmarks (a fresh GPU machine's start-up costs are not known in advance)
BATCH128=${BATCH128:-64}  # cats-128's batch (its preset's: 64)
TAIL=${TAIL:-60}         # cats-128's last TAIL s of BMORE keep a checkpoint every TAIL_EVERY steps, and its
TAIL_EVERY=${TAIL_EVERY:-568}  # export averages them (checkpoint averaging; TAIL=0: its last EMA of G alone);
                         # 568 steps: 8 epochs of the 4,559 faces of >= 128 px at batch 64
B64=${B64:-0}            # ... cats-64 (0: not here; the CPU trains it to FID-10k 7.96)
BDIFF=${BDIFF:-0}        # ... cats-64-diffaug (0: not here; its ablation ran on the CPU)
BENCH=${BENCH:-1}        # 1: benchmarks/train_speed.py at 128 px; 2: + cats-64 and benchmarks/ddp_overhead.py
STANDING=${STANDING:-100} # batches of 64 latents for the exports' BatchNorm statistics (a CPU needs few)
PEAK=${PEAK:-989}        # dense bf16 TFLOP/s of the card, for MFU (H100 and H200 SXM: 989)
read -ra extra <<< "${TRAIN_ARGS:-}"  # more `catgan train` options for every run (tests: --batch 4)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
[ -d .gpu-carry/site ] && PYTHONPATH=$PYTHONPATH:$PWD/.gpu-carry/site  # the weights wheel's files (pack.sh)
PY=${PY:-python3}
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT  # checkpoints with D and Adam states: over 1 GiB
mkdir -p "$OUT"
amp=(); [ "$DEVICE" = cuda ] && amp=(--amp)

# What a call brings back: at most 8 files, each under 16 MiB, 64 MiB together. So one tar, split in
# parts: every run's config and metrics first, then the generators in the order they are needed while
# they fit (fp16: cats-128 14.8 MiB, projected-128 17.8 MiB, thesis-128 45.9 MiB, which is then left out),
# then the loss plots and last sample grids (those can be redrawn here from the weights and metrics).
# Whatever is left out is named in the log.
part_kib=16383
CAP_KIB=${CAP_KIB:-65024}  # 64 MiB less 512 KiB for log.txt
need=(cats-128 projected-128 thesis-128 cats-128-ablation cats-64 cats-64-diffaug)
pack() {
  local tar=$RUNS/bundle.tar f
  rm -f "$tar" && tar cf "$tar" -T /dev/null
  add() {  # add RUNS-relative files to the tar while it stays under the cap (20 KiB for headers, padding)
    for f in "$@"; do
      [ -f "$RUNS/$f" ] || continue
      if [ $(($(stat -c %s "$tar") + $(stat -c %s "$RUNS/$f") + 20480)) -le $((CAP_KIB * 1024)) ]; then
        (cd "$RUNS" && tar rf bundle.tar "$f")
      else
        echo "bundle: leaving $f out (a call brings back 64 MiB)"
      fi
    done
  }
  local small=() plots=() grids=() d
  for d in $(cd "$RUNS" && find . -mindepth 1 -maxdepth 1 -type d -printf '%P\n' | sort); do
    small+=("$d/config.json" "$d/metrics.jsonl")
    plots+=("$d/loss.png")
    grids+=("$(cd "$RUNS" && find "$d/samples" -type f 2>/dev/null | sort | tail -n 1)")
  done
  add "${small[@]}"
  for f in "${need[@]}"; do add "./$f.safetensors"; done
  add "${plots[@]}" "${grids[@]}"
  rm -f "$OUT"/bundle.tar.part-*
  split -b "${part_kib}k" -d "$tar" "$OUT/bundle.tar.part-"
}

leg() {  # preset dataset seconds [train options]: RUNS/preset trains for seconds more (a run already there
  # goes on). SIGINT at the budget makes catgan save a checkpoint and stop; SIGKILL 60 s later if it has not
  timeout -s INT -k 60 "$3" $PY -m catgan train "$2" --preset "$1" --run "$RUNS/$1" --device "$DEVICE" "${amp[@]}" \
    --epochs 100000 --sample-every 2000 --checkpoint-every 5000 --keep 1 --no-progress "${extra[@]}" "${@:4}"
  tail -n 1 "$RUNS/$1/metrics.jsonl"
}

export_pack() {  # preset export-name [export options]: export RUNS/preset's generator, then pack
  $PY -m catgan export --run "$RUNS/$1" --out "$RUNS/$2.safetensors" --fp16 --standing-stats "$STANDING" \
    --device "$DEVICE" "${@:3}"
  pack
}

model() {  # preset dataset seconds export-name [train options]
  [ "$3" -gt 0 ] || return 0
  echo "== train $1 (${3}s) -> $4"
  leg "$1" "$2" "$3" "${@:5}"
  export_pack "$1" "$4"
}

averaged() {  # preset dataset seconds export-name [train options]: as model, but the last TAIL seconds keep
  # a checkpoint every TAIL_EVERY steps, and the export averages them (with the one the leg before saved)
  [ "$3" -gt "$TAIL" ] && [ "$TAIL" -gt 0 ] || { model "$@"; return; }
  echo "== train $1 (${3}s, the last ${TAIL}s averaged) -> $4"
  leg "$1" "$2" $(($3 - TAIL)) "${@:5}"
  local last from
  last=$(find "$RUNS/$1/checkpoints" -name 'step-*.pt' -printf '%f\n' 2>/dev/null | sort | tail -n 1)
  [ -n "$last" ] && from=$((10#${last//[!0-9]/}))  # step-00012345.pt -> 12345
  leg "$1" "$2" "$TAIL" "${@:5}" --checkpoint-every "$TAIL_EVERY" --keep 1000
  export_pack "$1" "$4" ${from:+--average-from "$from"}
}

{
  date -u; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
  model cats-128 "$DATA/cats-128" "$B128" cats-128-ablation --batch "$BATCH128"
  model thesis-128 "$DATA/cats-128" "$BTHESIS" thesis-128
  # projected-128's parameters and FLOPs, or the one line saying why it cannot run here
  if [ "$BPROJ" -gt 0 ] && ! $PY -m catgan info --preset projected-128; then
    echo "== skip projected-128: no EfficientNet-Lite0 weights here (PROJECTED=1 bash benchmarks/gpu/pack.sh)"
    BPROJ=0
  fi
  model projected-128 "$DATA/cats-128" "$BPROJ" projected-128
  [ "$BMORE" = auto ] && BMORE=$((END - SECONDS - RESERVE))
  averaged cats-128 "$DATA/cats-128" "$BMORE" cats-128 --batch "$BATCH128"
  model cats-64 "$DATA/cats-64" "$B64" cats-64
  model cats-64-diffaug "$DATA/cats-64" "$BDIFF" cats-64-diffaug
  speed=(--device "$DEVICE" --peak-tflops "$PEAK" --steps 30 --warmup 10 --no-compile)  # compile: slower
  if [ "$BENCH" -ge 1 ]; then
    echo "== benchmark"
    $PY benchmarks/train_speed.py --preset cats-128 --data "$DATA/cats-128" "${speed[@]}" --batches 128,256
    $PY benchmarks/train_speed.py --preset thesis-128 --data "$DATA/cats-128" "${speed[@]}"
  fi
  if [ "$BENCH" -ge 2 ]; then
    $PY benchmarks/train_speed.py --preset cats-64 --data "$DATA/cats-64" "${speed[@]}"
    $PY benchmarks/ddp_overhead.py --device "$DEVICE" "${amp[@]}" --steps 50 --warmup 10 --rounds 3
  fi
  date -u
} 2>&1 | tee "$OUT/log.txt"
ls -la "$OUT"
