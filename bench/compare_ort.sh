#!/usr/bin/env bash
# Float latency, qtk vs ONNX Runtime, on the shared models: for each
# model x batch x threads it runs qtk's benchmark binary (Google Benchmark,
# JSON, median over repetitions) and then ONNX Runtime for Node
# (tests/ort/ort_run.mjs --bench, median over single runs after warm-up) on
# the same kind of input, back to back, and prints a table of medians.
# Builds nothing: build qtk with the benchmarks first (QTK_BUILD_BENCH=ON and
# libbenchmark-dev installed) and install onnxruntime-node (tests/ort/setup_ort.sh).
#
# usage: bench/compare_ort.sh [BUILD_DIR] [--models "mlp cnn resnet20"]
#          [--batches "1 64"] [--threads "1 2"] [--reps N] [--iters N]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build"
MODELS="mlp cnn resnet20"
BATCHES="1 64"
THREADS="1 2"
REPS=10        # qtk: repetitions (the median of their means is reported)
ITERS=50       # ORT: timed runs (the median is reported)
MIN_TIME=0.1   # qtk: seconds per repetition at least
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --batches) BATCHES="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --iters) ITERS="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) BUILD="$(cd "$1" && pwd)"; shift ;;
  esac
done

BENCH="$BUILD/bench/qtk_float_models_bench"
ORT_RUN="$ROOT/tests/ort/ort_run.mjs"
[ -x "$BENCH" ] || { echo "no $BENCH: configure with -DQTK_BUILD_BENCH=ON (needs libbenchmark-dev) and build" >&2; exit 1; }
[ -d "$ROOT/tests/ort/node_modules/onnxruntime-node" ] || { echo "onnxruntime-node missing: run tests/ort/setup_ort.sh" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

printf '%-9s %5s %7s %10s %10s %8s\n' model batch threads "qtk ms" "ORT ms" "qtk/ORT"
for m in $MODELS; do
  for b in $BATCHES; do
    for t in $THREADS; do
      name="float/$m/batch:$b/threads:$t"
      "$BENCH" --benchmark_filter="^${name}(/real_time)?\$" --benchmark_format=json --benchmark_repetitions="$REPS" \
        --benchmark_report_aggregates_only=true --benchmark_min_time="$MIN_TIME" > "$TMP/qtk.json" 2> "$TMP/qtk.err" \
        || { cat "$TMP/qtk.err" >&2; exit 1; }
      node "$ORT_RUN" "$ROOT/models/$m.onnx" "random:$b" --bench "$ITERS" --threads "$t" > "$TMP/ort.json"
      node -e '
        const fs = require("fs");
        const [qf, of, name, m, b, t] = process.argv.slice(1);
        const q = JSON.parse(fs.readFileSync(qf, "utf8"));
        const e = q.benchmarks.find((x) => (x.run_name === name || x.run_name === name + "/real_time") && x.aggregate_name === "median");
        if (!e || e.error_occurred) { console.error("qtk benchmark " + name + " gave no median" + (e && e.error_message ? ": " + e.error_message : "")); process.exit(1); }
        const scale = { ns: 1e-6, us: 1e-3, ms: 1, s: 1e3 }[e.time_unit];
        const qms = e.real_time * scale;
        const o = JSON.parse(fs.readFileSync(of, "utf8"));
        const pad = (s, n) => String(s).padStart(n);
        console.log(m.padEnd(9) + " " + pad(b, 5) + " " + pad(t, 7) + " " + pad(qms.toFixed(3), 10) + " " +
                    pad(o.median_ms.toFixed(3), 10) + " " + pad((qms / o.median_ms).toFixed(2), 8));
      ' "$TMP/qtk.json" "$TMP/ort.json" "$name" "$m" "$b" "$t"
    done
  done
done
