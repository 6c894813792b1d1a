#!/bin/bash
# One epoch of the cross-entropy recipe and one of the self-critical recipe on Flickr8k, with
# this tree's code and then with another tree's (an older commit), on the same cached features.
# Each run's history.jsonl has the epoch's seconds of training steps (train_seconds, validation
# not counted), its loss or reward and its dev scores.
#
#   git worktree add /tmp/old COMMIT
#   benchmarks/train_epoch_ab.sh /tmp/old/src work/speed_ab [ce scst]
#
# The optional last arguments pick the stages (default both).
#
# Needs the Lite0 cache work/f8k_lite0_final (captioner features --data ../shared/datasets/flickr8k
# --split train,val --out work/f8k_lite0_final).
set -euo pipefail
OLD_SRC=${1:?the other tree\'s src folder}
OUT=${2:?output folder}
shift 2
STAGES=${*:-ce scst}
cd "$(dirname "$0")/.."
D=../shared/datasets/flickr8k
mkdir -p "$OUT"
run() {  # code stage recipe extra...
  local code=$1 stage=$2; shift 2
  if [ "$code" = old ]; then export PYTHONPATH=$OLD_SRC; else unset PYTHONPATH; fi
  rm -rf "$OUT/${stage}_$code"
  /usr/bin/time -f "%e s wall" .venv/bin/python -m captioner train --data $D --out "$OUT/${stage}_$code" \
    --set optim.epochs=1 --quiet "$@" > "$OUT/${stage}_$code.log" 2>&1
}
for stage in $STAGES; do
  for code in new old; do
    case $stage in
      ce) run $code ce --config flickr8k_lite0 ;;
      scst) run $code scst --config flickr8k_lite0_scst --set init_from=src/captioner/pretrained/flickr8k-lite0 ;;
      *) echo "unknown stage $stage (ce or scst)" >&2; exit 2 ;;
    esac
  done
done
