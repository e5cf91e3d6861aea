#!/usr/bin/env bash
# Build the compact dataset that benchmarks/gpu/run.sh trains on, in .gpu-carry/ (git-ignored), and
# check that it fits the device call's 64 MiB working-tree limit. Run here, on the CPU, before the call:
#   bash benchmarks/gpu/pack.sh [FACES_DIR]
# then call the device tool with carry [".gpu-carry"] and the command `bash benchmarks/gpu/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
faces=${1:-../shared/data/cat-faces/cats_bigger_than_64x64}
rm -rf .gpu-carry
# JPEG q90: ~2.5 KB per 64 px face, ~7 KB per 128 px face (PNG would be 4x larger)
python -m catgan prepare "$faces" --out .gpu-carry/data --sizes 64,128 --format jpg --quality 90 --no-progress
rm -f .gpu-carry/data/contact-*.png
size=$(du -sm .gpu-carry | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cm 2>/dev/null | tail -n 1 | cut -f1)
echo "carry: ${size} MiB + tracked tree ~${tree} MiB (limit 64 MiB together)"
[ $((size + tree)) -le 62 ] || { echo "too large for one device call"; exit 1; }
