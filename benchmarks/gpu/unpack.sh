#!/usr/bin/env bash
# Join the parts that benchmarks/gpu/run.sh brought back and score every generator in them here, on the
# CPU, with the same evaluation as the bundled models (FID/KID/precision/recall, cat-face rate,
# memorisation), plus a sample grid of seeds 0-63 each:
#   bash benchmarks/gpu/unpack.sh FILES_AT [DEST]      (DEST defaults to runs/gpu)
# N= samples per generator (default 10000: ~25 min at 64 px, ~50 min at 128 px on 2 cores);
# DATA= the prepared faces, as `catgan prepare ... --out data/faces` writes them; CACHE= a folder for
# the reference statistics (default: evaluate's own, ~/.cache/catgan).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
src=${1:?usage: bash benchmarks/gpu/unpack.sh FILES_AT [DEST]}
dest=${2:-$root/runs/gpu}
n=${N:-10000}
data=${DATA:-$root/data/faces}
PY=${PY:-python3}
cache=(); [ -n "${CACHE:-}" ] && cache=(--cache-dir "$CACHE")
parts=("$src"/bundle.tar.part-*)
[ -f "${parts[0]}" ] || { echo "no bundle.tar.part-* in $src" >&2; exit 1; }
mkdir -p "$dest"
cat "${parts[@]}" | tar xf - -C "$dest"
[ -f "$src/log.txt" ] && cp "$src/log.txt" "$dest/"
for w in "$dest"/*.safetensors; do  # evaluate picks DATA's cats-S by the generator's own image size
  name=$(basename "$w" .safetensors)
  echo "== $name: $n samples against $data"
  $PY -m catgan generate --weights "$w" --seeds 0-63 --device cpu --out "$dest/$name-samples.jpg"
  $PY -m catgan evaluate --weights "$w" --data "$data" --n "$n" --device cpu "${cache[@]}" \
    --pairs "$dest/$name-pairs.png" --out "$dest/$name-eval.json"
done
