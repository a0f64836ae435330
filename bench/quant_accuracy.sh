#!/usr/bin/env bash
# Top-1 accuracy on the 10,000 Fashion-MNIST test images for each shared
# model under several quantization schemes, as a Markdown table.
# usage: bench/quant_accuracy.sh [BUILD_DIR] [MODEL...]
#   ROWS=REGEX selects scheme rows by label (e.g. ROWS=W2A8 for the 2-bit rows; all
#   rows on all models take over an hour on 2 cores: each row quantizes and
#   evaluates every model).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(mlp cnn resnet20 fmnist_small)
qtk="$build/qtk"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

schemes=(
  "W8A8 u8 per-channel minmax|--weights int8"
  "W8A8 u8 per-tensor minmax|--weights int8 --granularity tensor"
  "W8A8 u8 per-channel entropy|--weights int8 --calibrate entropy"
  "W8A8 u8 per-channel percentile|--weights int8 --calibrate percentile:99.99"
  "W8 dynamic|--weights int8 --activations dynamic"
  "W8 weight-only|--weights int8 --activations float"
  "W4A8 u8 per-channel|--weights int4"
  "W4A8 u8 per-tensor|--weights int4 --granularity tensor"
  "W4 weight-only group:32|--weights int4 --activations float --granularity group:32"
  "W3 weight-only per-channel|--weights int3 --activations float"
  "W2 weight-only group:16|--weights int2 --activations float --granularity group:16"
  # Weight rounding methods (--method; auto is what the rows above get).
  "W4A8 u8 per-channel rtn|--weights int4 --method rtn"
  "W4A8 u8 per-channel gptq|--weights int4 --method gptq"
  "W4A8 u8 per-channel adaround|--weights int4 --method adaround"
  "W4A8 u8 per-channel auto + CLE|--weights int4 --equalize"
  "W2A8 u8 per-channel rtn|--weights int2 --method rtn"
  "W2A8 u8 per-channel gptq|--weights int2 --method gptq"
  "W2A8 u8 per-channel adaround|--weights int2 --method adaround"
  "W2A8 u8 per-channel auto|--weights int2"
  "W2A8 u8 per-channel auto + CLE|--weights int2 --equalize"
  "W2A8 u8 group:16 rtn|--weights int2 --granularity group:16 --method rtn"
  "W2A8 u8 group:16 gptq|--weights int2 --granularity group:16 --method gptq"
  "W2A8 u8 group:16 adaround|--weights int2 --granularity group:16 --method adaround"
  "W2A8 u8 group:16 auto|--weights int2 --granularity group:16"
  "W2A8 u8 group:32 rtn|--weights int2 --granularity group:32 --method rtn"
  "W2A8 u8 group:32 gptq|--weights int2 --granularity group:32 --method gptq"
  "W2A8 u8 group:32 adaround|--weights int2 --granularity group:32 --method adaround"
  "W2A8 u8 group:32 auto|--weights int2 --granularity group:32"
  "W4 weight-only per-channel rtn|--weights int4 --activations float --method rtn"
  "W4 weight-only per-channel gptq|--weights int4 --activations float --method gptq"
  "W4 weight-only per-channel adaround|--weights int4 --activations float --method adaround"
  "W4 weight-only per-channel auto|--weights int4 --activations float"
  # 4-bit activations (defaults: MSE ranges, first and last layer at 8 bits).
  "W4A4 u4 per-channel|--weights int4 --activations uint4"
  "W4A4 u4 per-channel, all layers 4-bit|--weights int4 --activations uint4 --no-first-last-8bit"
  "W4A4 u4 per-channel minmax|--weights int4 --activations uint4 --calibrate minmax"
  "W4A4 u4 per-channel percentile|--weights int4 --activations uint4 --calibrate percentile:99.9"
)

acc() { node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8")); console.log(r[process.argv[1]].toFixed(4))' "$1"; }

printf '| scheme |'; for m in "${models[@]}"; do printf ' %s |' "$m"; done; printf '\n|---|'
for m in "${models[@]}"; do printf -- '---|'; done; printf '\n| float |'
for m in "${models[@]}"; do
  "$qtk" eval "models/$m.onnx" --data fashion-mnist:test --json --threads 2 > "$out/f.json"
  printf ' %s |' "$(acc accuracy < "$out/f.json")"
done
printf '\n'
for s in "${schemes[@]}"; do
  label=${s%%|*}; flags=${s#*|}
  [[ $label =~ ${ROWS:-.} ]] || continue
  printf '| %s |' "$label"
  for m in "${models[@]}"; do
    # shellcheck disable=SC2086
    if "$qtk" quantize "models/$m.onnx" -o "$out/q.onnx" --force --threads 2 $flags \
         --eval fashion-mnist:test --json > "$out/r.json" 2> "$out/err"; then
      printf ' %s |' "$(acc accuracy_after < "$out/r.json")"
    else
      printf ' error: %s |' "$(head -c 80 "$out/err")"
    fi
  done
  printf '\n'
done
