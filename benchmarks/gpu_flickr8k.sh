#!/usr/bin/env bash
# Flickr8k training runs on a lent GPU machine (benchmarks/gpu_flickr8k_runs.py).
#
# The machine takes at most 64 MiB of files per call, so the 147 MB of Flickr8k photos go in
# several calls to the same warm machine: benchmarks/make_gpu_flickr8k_parts.py cuts them into
# gitignored folders .f8k_part1 ... .f8k_partN; each call carries one (the first also carries
# .gpu_carry with the weights package); the last call runs this script, which joins them and
# trains. Extra arguments go to gpu_flickr8k_runs.py.
#
#   OUT=/path/to/empty/dir bash benchmarks/gpu_flickr8k.sh --budget-s 420
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
DATA=${F8K_DATA:-/tmp/f8k}
export PYTHONPATH="src:.gpu_carry/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MPLBACKEND=Agg
{
    nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    mkdir -p "$DATA/images"
    for part in .f8k_part*; do
        [[ -d $part ]] || continue
        cp -n "$part"/*.txt "$DATA"/ 2>/dev/null
        find "$part/images" -name '*.jpg' -exec mv -t "$DATA/images" {} + 2>/dev/null
    done
    expected=$(cat "$DATA"/Flickr_8k.trainImages.txt "$DATA"/Flickr_8k.devImages.txt 2>/dev/null | sed '/^\s*$/d' | wc -l)
    found=$(find "$DATA/images" -name '*.jpg' | wc -l)
    echo "Flickr8k assembled in $DATA: $found images of $expected listed"
    if [[ $found -lt $expected ]]; then
        echo "missing images: not training on a partial dataset"
        exit 3
    fi
    "$PYTHON" benchmarks/gpu_flickr8k_runs.py --data "$DATA" --out "$OUT" "$@"
} 2>&1 | tee "$OUT/gpu_flickr8k.log"
