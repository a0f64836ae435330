#!/usr/bin/env bash
# Training throughput, qtk vs PyTorch (Debian python3-torch), on the same
# resnet20 (src/train/arch.cpp; bench/train_vs_torch.py rebuilds it in
# torch), batch, thread count and optimizer (AdamW, lr 1e-3, as qtk train's
# default). One step = forward + cross-entropy + backward + optimizer update
# on a fixed random 1x28x28 batch; each side reports the median of --steps
# timed steps after --warmup untimed ones. The two run back to back, --rounds
# times interleaved (the machine is shared), and the script prints the median
# over rounds of each side's images/s and the ratio qtk/torch (>= 1: qtk at
# least as fast). Builds nothing: needs BUILD_DIR/bench/qtk_train_step_bench.
#
# usage: bench/train_vs_torch.sh [BUILD_DIR] [--batch B] [--threads N]
#          [--steps N] [--warmup N] [--rounds R] [--optimizer adamw|sgd]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build"
BATCH=64 THREADS=2 STEPS=10 WARMUP=3 ROUNDS=1 OPT=adamw
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) BATCH="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --optimizer) OPT="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) BUILD="$1"; shift ;;
  esac
done
QTK_BENCH="$BUILD/bench/qtk_train_step_bench"
[ -x "$QTK_BENCH" ] || { echo "no $QTK_BENCH (build the qtk_train_step_bench target)" >&2; exit 1; }

# The Debian torch lives in the system interpreter; python3 on PATH may be another one.
PY=""
for cand in /usr/bin/python3 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import torch' 2>/dev/null; then PY="$cand"; break; fi
done
if [ -z "$PY" ]; then
  echo "torch not importable: installing python3-torch with apt-get" >&2
  apt-get install -y python3-torch >&2
  PY=/usr/bin/python3
fi

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; torch via $PY"
Q="" T=""
for r in $(seq "$ROUNDS"); do
  q=$(OMP_NUM_THREADS="$THREADS" "$QTK_BENCH" --arch resnet20 --batch "$BATCH" --threads "$THREADS" \
        --steps "$STEPS" --warmup "$WARMUP" --optimizer "$OPT" | grep '^qtk_train')
  t=$(OMP_NUM_THREADS="$THREADS" "$PY" "$ROOT/bench/train_vs_torch.py" --batch "$BATCH" --threads "$THREADS" \
        --steps "$STEPS" --warmup "$WARMUP" --optimizer "$OPT" | grep '^torch_train')
  echo "$q"; echo "$t"
  Q+="$(echo "$q" | field images_per_s)"$'\n'; T+="$(echo "$t" | field images_per_s)"$'\n'
done
qm=$(printf %s "$Q" | median); tm=$(printf %s "$T" | median)
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'resnet20 train batch=%s threads=%s optimizer=%s: qtk %.1f images/s, torch %.1f images/s, qtk/torch %.2f\n' \
  "$BATCH" "$THREADS" "$OPT" "$qm" "$tm" "$(awk -v a="$qm" -v b="$tm" 'BEGIN {print a / b}')"
