#!/usr/bin/env bash
# Latency of the shared models, qtk vs ONNX Runtime, float and int8. Each
# model is quantized once to int8 QDQ (qtk quantize: per-channel weights,
# uint8 activations, calibrated on Fashion-MNIST training images; weights
# `--weights auto` unless --weights says otherwise: 7-bit where qtk's int8
# kernels here are AVX2 without VNNI, full-range int8 elsewhere). Then for each model x batch x threads, back to back:
#   qtk float    qtk bench MODEL            (median of --runs single runs)
#   ORT float    tests/ort/ort_run.mjs MODEL --bench (median of --iters runs)
#   qtk int8     qtk bench MODEL.int8 --integer (integer session)
#   ORT int8     tests/ort/ort_run.mjs MODEL.int8 --bench (ORT's QDQ fusion)
# all on random inputs of the same shape, with the same thread count
# (ORT: intra-op threads, sequential execution), and prints the medians and
# the ratios qtk/ORT (below 1: qtk faster) and qtk float/int8 (the speed-up
# qtk's int8 gives over its float). Builds nothing: needs BUILD_DIR/qtk,
# the dataset-fashion-mnist package, and onnxruntime-node (tests/ort/setup_ort.sh).
#
# usage: bench/compare_ort.sh [BUILD_DIR] [--models "mlp cnn resnet20"]
#          [--batches "1 64"] [--threads "1 2"] [--runs N] [--iters N]
#          [--warmup N] [--calib-samples N] [--rounds R] [--weights W] [--markdown]
#          [--memory]
# --rounds R repeats the four measurements of each row R times, interleaved,
# and prints the median of the R medians (the machine is shared and noisy).
# --memory prints each session's resident memory instead of latencies: qtk's
# from `qtk bench --json` (growth over the RSS before the session, its own
# copy of the model included: the peak through build and runs, and while
# running), and ONNX Runtime's from tests/ort/ort_memory.mjs (the same two
# readings for a first session, which pays ORT's one-off set-up, and for a
# second one created while the first lives). qtk/ORT compares peaks with
# ORT's second session. "need" is issue 4's yardstick: the session's packed
# weights + its largest pair of live activations.
# --weights W quantizes with `qtk quantize --weights W` (default auto; int7
# is what qtk's AVX2 kernels multiply with vpmaddubsw exactly, int8 forces
# full range). The chosen format is printed first. QTK_ISA=avx2 in the
# environment caps qtk's kernels at AVX2; ONNX Runtime has no such switch
# and uses what the CPU has.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$ROOT/build"
MODELS="mlp cnn resnet20"
BATCHES="1 64"
THREADS="1 2"
RUNS=50           # qtk: timed runs (median reported)
ITERS=50          # ORT: timed runs (median reported)
WARMUP=5          # both: untimed runs first
CALIB_SAMPLES=128
WEIGHTS=auto
ROUNDS=1
MARKDOWN=0
MEMORY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --batches) BATCHES="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --iters) ITERS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --calib-samples) CALIB_SAMPLES="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --weights) WEIGHTS="$2"; shift 2 ;;
    --markdown) MARKDOWN=1; shift ;;
    --memory) MEMORY=1; shift ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) BUILD="$(cd "$1" && pwd)"; shift ;;
  esac
done

QTK="$BUILD/qtk"
ORT_RUN="$ROOT/tests/ort/ort_run.mjs"
[ -x "$QTK" ] || { echo "no $QTK: build qtk first (cmake --build $BUILD --target qtk_cli)" >&2; exit 1; }
[ -d "$ROOT/tests/ort/node_modules/onnxruntime-node" ] || { echo "onnxruntime-node missing: run tests/ort/setup_ort.sh" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Median latency in ms from `qtk bench --json` / `ort_run.mjs --bench`.
qtk_ms() {
  "$QTK" bench "$@" --runs "$RUNS" --warmup "$WARMUP" --json > "$TMP/qtk.json" 2> "$TMP/qtk.err" \
    || { echo "qtk bench $*: $(cat "$TMP/qtk.err")" >&2; exit 1; }
  node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(r.latency_ms.median.toFixed(3))' "$TMP/qtk.json"
}
ort_ms() {
  node "$ORT_RUN" "$1" "random:$2" --bench "$ITERS" --warmup "$WARMUP" --threads "$3" > "$TMP/ort.json"
  node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(r.median_ms.toFixed(3))' "$TMP/ort.json"
}
# Memory mode: one row per model x batch x threads x format.
mb() { awk -v v="$1" 'BEGIN { printf "%.2f", v / 1048576 }'; }
memory_row() {  # MODEL_FILE FORMAT MODEL BATCH THREADS [qtk bench options]
  local file="$1" fmt="$2" m="$3" b="$4" t="$5"
  shift 5
  "$QTK" bench "$file" "$@" --batch "$b" --threads "$t" --runs "$RUNS" --warmup "$WARMUP" --json \
    > "$TMP/qtk.json" 2> "$TMP/qtk.err" || { echo "qtk bench $file: $(cat "$TMP/qtk.err")" >&2; exit 1; }
  node "$ROOT/tests/ort/ort_memory.mjs" "$file" --batch "$b" --threads "$t" --runs "$ITERS" > "$TMP/ort.json"
  local q
  q=$(node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(r.session_weight_bytes + r.activation_pair_bytes, r.session_peak_rss_bytes ?? 0, r.session_running_rss_bytes ?? 0)' "$TMP/qtk.json")
  local o
  o=$(node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(r.first.peak, r.second.peak)' "$TMP/ort.json")
  set -- $q $o  # need, qtk peak, qtk running, ORT first peak, ORT second peak
  local cells=("$m" "$b" "$t" "$fmt" "$(mb "$1")" "$(mb "$2")" "$(mb "$3")" "$(ratio "$2" "$1")" \
    "$(mb "$4")" "$(mb "$5")" "$(ratio "$2" "$5")")
  if [ "$MARKDOWN" = 1 ]; then
    (IFS='|'; echo "|${cells[*]}|" | sed 's/|/ | /g; s/^ //; s/ $//')
  else
    printf '%-9s %5s %7s %6s | %7s %9s %9s %6s | %9s %9s | %7s\n' "${cells[@]}"
  fi
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

for m in $MODELS; do
  "$QTK" quantize "$ROOT/models/$m.onnx" -o "$TMP/$m.int8.onnx" --calib fashion-mnist:train \
    --calib-samples "$CALIB_SAMPLES" --weights "$WEIGHTS" --force --json > "$TMP/quantize.json" 2> "$TMP/quantize.log" \
    || { echo "qtk quantize $m failed:" >&2; cat "$TMP/quantize.log" >&2; exit 1; }
  CHOSEN=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).settings.weights)' \
    "$TMP/quantize.json")
done
echo "int8 models: $CHOSEN weights (qtk quantize --weights $WEIGHTS), qtk kernels: $("$QTK" bench \
  "$ROOT/models/mlp.onnx" --runs 1 --warmup 0 --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).cpu_isa)')"

if [ "$MEMORY" = 1 ]; then
  if [ "$MARKDOWN" = 1 ]; then
    echo "| model | batch | threads | format | need MB | qtk peak MB | qtk running MB | qtk peak / need | ORT 1st session peak MB | ORT 2nd session peak MB | qtk/ORT 2nd |"
    echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  else
    printf '%-9s %5s %7s %6s | %7s %9s %9s %6s | %9s %9s | %7s\n' model batch threads format need "qtk peak" \
      "qtk run" "/need" "ORT 1st" "ORT 2nd" "qtk/ORT"
  fi
  for m in $MODELS; do
    for b in $BATCHES; do
      for t in $THREADS; do
        memory_row "$ROOT/models/$m.onnx" float "$m" "$b" "$t"
        memory_row "$TMP/$m.int8.onnx" int8 "$m" "$b" "$t" --integer
      done
    done
  done
  exit 0
fi
if [ "$MARKDOWN" = 1 ]; then
  echo "| model | batch | threads | qtk float ms | ORT float ms | qtk/ORT float | qtk int8 ms | ORT int8 ms | qtk/ORT int8 | qtk float/int8 |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
else
  printf '%-9s %5s %7s | %10s %10s %7s | %10s %10s %7s | %10s\n' model batch threads \
    "qtk float" "ORT float" "qtk/ORT" "qtk int8" "ORT int8" "qtk/ORT" "float/int8"
fi
for m in $MODELS; do
  for b in $BATCHES; do
    for t in $THREADS; do
      qfs=(); ofs=(); qis=(); ois=()
      for _ in $(seq "$ROUNDS"); do
        qfs+=("$(qtk_ms "$ROOT/models/$m.onnx" --batch "$b" --threads "$t")")
        ofs+=("$(ort_ms "$ROOT/models/$m.onnx" "$b" "$t")")
        qis+=("$(qtk_ms "$TMP/$m.int8.onnx" --integer --batch "$b" --threads "$t")")
        ois+=("$(ort_ms "$TMP/$m.int8.onnx" "$b" "$t")")
      done
      qf=$(median "${qfs[@]}"); of=$(median "${ofs[@]}"); qi=$(median "${qis[@]}"); oi=$(median "${ois[@]}")
      if [ "$MARKDOWN" = 1 ]; then
        echo "| $m | $b | $t | $qf | $of | $(ratio "$qf" "$of") | $qi | $oi | $(ratio "$qi" "$oi") | $(ratio "$qf" "$qi") |"
      else
        printf '%-9s %5s %7s | %10s %10s %7s | %10s %10s %7s | %10s\n' "$m" "$b" "$t" \
          "$qf" "$of" "$(ratio "$qf" "$of")" "$qi" "$oi" "$(ratio "$qi" "$oi")" "$(ratio "$qf" "$qi")"
      fi
    done
  done
done
