#!/usr/bin/env bash
# ctest ort_memory_report: bench/compare_ort.sh --memory on the mlp model at
# batch 1 prints one float and one int8 row, each with positive sizes for
# qtk (need, peak, running) and ONNX Runtime (first and second session), and
# ratios consistent with them. Catches a renamed JSON field (which would
# print NaN or 0) or a memory reading that stopped working.
# usage: memory_report_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SRC="$1"
BUILD="$2"
OUT="$(bash "$SRC/bench/compare_ort.sh" "$BUILD" --memory --models mlp --batches 1 --threads 1 --runs 3 --iters 3 --warmup 1 --calib-samples 16)"
echo "$OUT"
echo "$OUT" | awk -F'|' '
  /^mlp / {
    split($1, head, " "); split($2, q, " "); split($3, o, " ")
    fmt = head[4]; rows[fmt] = 1
    need = q[1]; peak = q[2]; run = q[3]; ratio = q[4]; first = o[1]; second = o[2]; vs = $4 + 0
    if (!(need > 0 && peak > 0 && run > 0 && first > 0 && second > 0)) { print "bad sizes in: " $0; bad = 1 }
    # need/peak print with 2 decimals in MB: allow their rounding
    if (ratio < peak / (need + 0.005) - 0.02 || ratio > peak / (need - 0.005) + 0.02) { print "peak/need off in: " $0; bad = 1 }
    if (vs < peak / (second + 0.005) - 0.02 || vs > peak / (second - 0.005) + 0.02) { print "qtk/ORT off in: " $0; bad = 1 }
    if (first < second) { print "ORT first session below its second in: " $0; bad = 1 }
  }
  END {
    if (!rows["float"] || !rows["int8"]) { print "missing float or int8 row"; bad = 1 }
    exit bad
  }'
echo "ort_memory_report: ok"
