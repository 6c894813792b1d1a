#!/usr/bin/env bash
# Flickr8k training runs on a lent GPU machine (benchmarks/gpu_flickr8k_runs.py).
#
# The machine takes at most 64 MiB of files per call (counted in disk blocks, the working tree
# included), so the 147 MB of Flickr8k photos go in several calls to the same warm machine:
# benchmarks/make_gpu_flickr8k_parts.py cuts them into gitignored folders .f8k_part1 ...
# .f8k_partN. A carried folder does not survive to the next call, so each call carries one part
# and stashes it outside the checkout (the first also carries .gpu_carry/site, the weights
# package), and the last call trains:
#
#   carry [.gpu_carry/site, .f8k_part1]:  bash benchmarks/gpu_flickr8k.sh --stash
#   carry [.f8k_part2] ... [.f8k_partN-1]: bash benchmarks/gpu_flickr8k.sh --stash
#   carry [.f8k_partN]:                   bash benchmarks/gpu_flickr8k.sh --budget-s 480 --parallel 9
#
# (as run on 2026-11-26, with the same moves typed inline). Runs on EfficientNet-Lite2 also need
# its weights package, .gpu_carry/site_lite2, carried by the second call (make_gpu_carry.sh; cut
# the parts with --first-parts-mb 20,13.5 to leave it room). Lite2 runs alone need only that
# package: on 2026-11-27 the first call carried [.gpu_carry, .f8k_part1] with
# --first-parts-mb 12 --part-mb 37, five calls in all. Other arguments go to
# gpu_flickr8k_runs.py (--soup-of RUN,... averages finished runs' decoders after the runs).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
DATA=${F8K_DATA:-/tmp/f8k}
SITE=${F8K_SITE:-/tmp/site}
stash() {  # move what this call carried to where the next calls still find it
    mkdir -p "$DATA/images"
    for site in .gpu_carry/site*; do
        [[ -d $site ]] && mkdir -p "$SITE" && cp -r "$site"/. "$SITE"/
    done
    for part in .f8k_part*; do
        [[ -d $part ]] || continue
        cp -n "$part"/*.txt "$DATA"/ 2>/dev/null
        find "$part/images" -name '*.jpg' -exec mv -t "$DATA/images" {} + 2>/dev/null
    done
    echo "stashed: $(find "$DATA/images" -name '*.jpg' | wc -l) images in $DATA"
}
if [[ ${1:-} == --stash ]]; then
    stash
    exit 0
fi
export PYTHONPATH="src:.gpu_carry/site:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg
{
    nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    stash
    expected=$(cat "$DATA"/Flickr_8k.trainImages.txt "$DATA"/Flickr_8k.devImages.txt 2>/dev/null | sed '/^\s*$/d' | wc -l)
    found=$(find "$DATA/images" -name '*.jpg' | wc -l)
    echo "Flickr8k assembled in $DATA: $found images of $expected listed"
    if [[ $found -lt $expected ]]; then
        echo "missing images: not training on a partial dataset"
        exit 3
    fi
    "$PYTHON" benchmarks/gpu_flickr8k_runs.py --data "$DATA" --out "$OUT" "$@"
} 2>&1 | tee "$OUT/gpu_flickr8k.log"
