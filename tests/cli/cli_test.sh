#!/usr/bin/env bash
# End-to-end checks of the qtk command line: exit codes, the one-line error
# contract, help texts, JSON output and written files.
# usage: cli_test.sh QTK_BINARY MODELS_DIR
set -u

QTK=${1:?usage: cli_test.sh QTK_BINARY MODELS_DIR}
MODELS=${2:?usage: cli_test.sh QTK_BINARY MODELS_DIR}
MLP="$MODELS/mlp.onnx"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

failures=0
checks=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run_qtk ARGS...: runs qtk, leaving $rc, $TMP/out and $TMP/err.
run_qtk() {
  "$QTK" "$@" >"$TMP/out" 2>"$TMP/err"
  rc=$?
}

# expect_ok DESC ARGS...: exit 0 and nothing on stderr.
expect_ok() {
  local desc=$1
  shift
  checks=$((checks + 1))
  run_qtk "$@"
  if [ "$rc" -ne 0 ]; then
    fail "$desc: exit $rc, stderr: $(cat "$TMP/err")"
  elif [ -s "$TMP/err" ]; then
    fail "$desc: unexpected stderr: $(cat "$TMP/err")"
  fi
}

# expect_error DESC WANT_RC PATTERN ARGS...: exit WANT_RC (any non-zero
# below 128 when WANT_RC is '-'), exactly one stderr line that starts with
# "qtk: error:" and matches the extended regex PATTERN, and no stdout.
expect_error() {
  local desc=$1 want=$2 pattern=$3
  shift 3
  checks=$((checks + 1))
  run_qtk "$@"
  local lines
  lines=$(wc -l <"$TMP/err")
  if [ "$rc" -eq 0 ] || [ "$rc" -ge 128 ]; then
    fail "$desc: exit $rc (want an error exit below 128)"
  elif [ "$want" != "-" ] && [ "$rc" -ne "$want" ]; then
    fail "$desc: exit $rc, want $want; stderr: $(cat "$TMP/err")"
  elif [ "$lines" -ne 1 ]; then
    fail "$desc: $lines stderr lines, want 1: $(cat "$TMP/err")"
  elif ! head -n1 "$TMP/err" | grep -q '^qtk: error: '; then
    fail "$desc: stderr does not start with 'qtk: error: ': $(cat "$TMP/err")"
  elif ! grep -Eq -- "$pattern" "$TMP/err"; then
    fail "$desc: stderr does not match /$pattern/: $(cat "$TMP/err")"
  elif [ -s "$TMP/out" ]; then
    fail "$desc: unexpected stdout: $(head -c 300 "$TMP/out")"
  fi
}

# write_npy FILE DESCR SHAPE_CSV [NAN_ROWS]: an .npy of that dtype ('<f4',
# '<f8') and shape, filled with a deterministic ramp in [0,1). NAN_ROWS: every
# 7th value of the first NAN_ROWS samples (axis 0) is NaN; "all": every value.
write_npy() {
  node -e '
    const [file, descr, shapeCsv, nanRows] = process.argv.slice(1);
    const shape = shapeCsv.split(",").map(Number);
    const n = shape.reduce((a, b) => a * b, 1);
    const nanAll = nanRows === "all";
    const nanLimit = nanAll ? n : Number(nanRows || 0) * (n / shape[0]);
    const size = descr === "<f8" ? 8 : 4;
    const tuple = "(" + shape.join(", ") + (shape.length === 1 ? ",)" : ")");
    let dict = `{\x27descr\x27: \x27${descr}\x27, \x27fortran_order\x27: False, \x27shape\x27: ${tuple}, }`;
    while ((10 + dict.length + 1) % 64) dict += " ";
    dict += "\n";
    const head = Buffer.alloc(10);
    Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(head);
    head.writeUInt16LE(dict.length, 8);
    const data = Buffer.alloc(n * size);
    for (let i = 0; i < n; i++) {
      const v = nanAll || (i < nanLimit && i % 7 === 0) ? NaN : (i % 97) / 97;
      if (size === 8) data.writeDoubleLE(v, i * 8); else data.writeFloatLE(v, i * 4);
    }
    require("fs").writeFileSync(file, Buffer.concat([head, Buffer.from(dict, "latin1"), data]));
  ' "$1" "$2" "$3" "${4:-0}"
}

# json_check FILE JS_EXPRESSION: FILE parses as JSON and the expression over `j` is true.
json_check() {
  local desc=$1 file=$2 expr=$3
  checks=$((checks + 1))
  if ! node -e '
      const fs = require("fs");
      const j = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
      if (!('"$expr"')) { console.error("condition failed: " + process.argv[2]); process.exit(1); }
    ' "$file" "$expr" 2>"$TMP/node_err"; then
    fail "$desc: $(cat "$TMP/node_err") in: $(head -c 600 "$file")"
  fi
}

# --- help and version -------------------------------------------------------
expect_ok "qtk --help" --help
grep -q "usage: qtk" "$TMP/out" || fail "qtk --help does not print usage"
expect_ok "qtk help" help
grep -q "inspect" "$TMP/out" || fail "qtk help does not list inspect"
expect_ok "qtk --version" --version
grep -Eq '^qtk [0-9]+\.[0-9]+\.[0-9]+$' "$TMP/out" || fail "qtk --version prints '$(cat "$TMP/out")'"
for cmd in inspect run eval quantize; do
  expect_ok "qtk $cmd --help" "$cmd" --help
  grep -q "usage: qtk $cmd" "$TMP/out" || fail "qtk $cmd --help does not print its usage"
  expect_ok "qtk help $cmd" help "$cmd"
  grep -q -- "--help" "$TMP/out" || fail "qtk help $cmd does not list --help"
done
expect_ok "--help wins over bad options" run --bogus --help

# --- usage errors (exit 2) ----------------------------------------------------
expect_error "no command" 2 "command" 
expect_error "unknown command" 2 "frobnicate" frobnicate
expect_error "unknown top-level option" 2 "--bogus" --bogus
expect_error "unknown option" 2 "--bogus" inspect "$MLP" --bogus
expect_error "unknown option=value" 2 "--bogus" run "$MLP" --bogus=3
expect_error "missing option value" 2 "--input" run "$MLP" --input
expect_error "missing option value before another option" 2 "--output" run "$MLP" --output --json
expect_error "flag with a value" 2 "--json" inspect "$MLP" --json=yes
expect_error "missing MODEL" 2 "MODEL" inspect
expect_error "extra argument" 2 "extra" inspect "$MLP" extra
expect_error "bad integer" 2 "--threads" run "$MLP" --input x.npy --threads abc
expect_error "integer out of range" 2 "--batch" eval "$MLP" --data fashion-mnist:test --batch 0
expect_error "eval without --data" 2 "--data" eval "$MLP"
expect_error "repeated single option" 2 "--limit" eval "$MLP" --data fashion-mnist:test --limit 1 --limit 2
expect_error "help for an unknown command" 2 "nope" help nope

# --- bad model files (exit 1) ---------------------------------------------------
: >"$TMP/empty.onnx"
node -e '
  let x = 12345, b = Buffer.alloc(4096);
  for (let i = 0; i < b.length; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  require("fs").writeFileSync(process.argv[1], b);' "$TMP/random.onnx"
size=$(wc -c <"$MLP")
head -c $((size / 2)) "$MLP" >"$TMP/truncated.onnx"
head -c 100 "$MLP" >"$TMP/truncated_early.onnx"
mkdir "$TMP/dir.onnx"
for cmd in inspect run eval quantize; do
  extra=()
  [ "$cmd" = run ] && extra=(--input "$TMP/x.npy")
  [ "$cmd" = eval ] && extra=(--data fashion-mnist:test --limit 10)
  [ "$cmd" = quantize ] && extra=(-o "$TMP/never.onnx")
  expect_error "$cmd: missing model" 1 "not found" "$cmd" "$TMP/missing.onnx" "${extra[@]}"
  expect_error "$cmd: empty model" 1 "empty" "$cmd" "$TMP/empty.onnx" "${extra[@]}"
  expect_error "$cmd: random bytes" 1 "ONNX|IR version" "$cmd" "$TMP/random.onnx" "${extra[@]}"
  expect_error "$cmd: truncated model" 1 "" "$cmd" "$TMP/truncated.onnx" "${extra[@]}"
  expect_error "$cmd: model cut at 100 bytes" 1 "" "$cmd" "$TMP/truncated_early.onnx" "${extra[@]}"
  expect_error "$cmd: directory as model" 1 "directory" "$cmd" "$TMP/dir.onnx" "${extra[@]}"
done

# --- inspect ------------------------------------------------------------------
expect_ok "inspect text" inspect "$MLP"
grep -q "Gemm" "$TMP/out" || fail "inspect does not show the Gemm ops"
expect_ok "inspect --json" inspect "$MLP" --json
cp "$TMP/out" "$TMP/inspect.json"
json_check "inspect --json" "$TMP/inspect.json" \
  'j.inputs.length === 1 && j.inputs[0].name === "input" && j.inputs[0].dtype === "float32" &&
   j.inputs[0].shape.length === 4 && typeof j.inputs[0].shape[0] === "string" && j.inputs[0].shape[3] === 28 &&
   j.outputs[0].name === "logits" && j.op_histogram.Gemm === 3 && j.parameter_count === 235146 &&
   j.parameter_bytes === 4 * 235146 && j.opset_imports.some(o => o.domain === "ai.onnx" && o.version === 17) &&
   Array.isArray(j.warnings) && j.ir_version > 0'
for m in cnn resnet20; do
  expect_ok "inspect --json $m" inspect "$MODELS/$m.onnx" --json
  cp "$TMP/out" "$TMP/$m.json"
  json_check "inspect --json $m" "$TMP/$m.json" 'j.parameter_count > 100000 && j.op_histogram.Conv > 0'
done

# --- run ----------------------------------------------------------------------
write_npy "$TMP/x.npy" "<f4" "2,1,28,28"
write_npy "$TMP/x64.npy" "<f8" "2,1,28,28"
write_npy "$TMP/x_shape.npy" "<f4" "2,1,28,27"
printf 'not an npy file' >"$TMP/bad.npy"
expect_error "run: wrong dtype" 1 "float64" run "$MLP" --input "$TMP/x64.npy"
expect_error "run: wrong shape" 1 "shape" run "$MLP" --input "input=$TMP/x_shape.npy"
expect_error "run: missing input file" 1 "not found" run "$MLP" --input "$TMP/none.npy"
expect_error "run: corrupt input file" 1 "npy" run "$MLP" --input "$TMP/bad.npy"
expect_error "run: unknown input name" 2 "no input named 'wrong'" run "$MLP" --input "wrong=$TMP/x.npy"
expect_error "run: no --input" 2 "input" run "$MLP"
expect_error "run: input given twice" 2 "more than once" run "$MLP" --input "$TMP/x.npy" --input "input=$TMP/x.npy"
cp "$MLP" "$TMP/model_copy.onnx"
expect_error "run: --output over the model" 2 "refusing" run "$TMP/model_copy.onnx" --input "$TMP/x.npy" --output "$TMP/model_copy.onnx"
cmp -s "$MLP" "$TMP/model_copy.onnx" || fail "run --output changed the model file"
expect_error "run: --output over an input" 2 "refusing" run "$MLP" --input "$TMP/x.npy" --output "$TMP/x.npy"
expect_ok "run writes an npz" run "$MLP" --input "input=$TMP/x.npy" --output "$TMP/out.npz"
grep -q "logits" "$TMP/out" || fail "run does not print the output name"
checks=$((checks + 1))
if [ ! -s "$TMP/out.npz" ]; then
  fail "run --output wrote no file"
else
  node -e '
    const b = require("fs").readFileSync(process.argv[1]);
    if (b.readUInt32LE(0) !== 0x04034b50) throw new Error("no zip local header");
    const nameLen = b.readUInt16LE(26), extraLen = b.readUInt16LE(28);
    if (b.toString("latin1", 30, 30 + nameLen) !== "logits.npy") throw new Error("first member is not logits.npy");
    const npy = b.subarray(30 + nameLen + extraLen);
    const header = npy.toString("latin1", 10, 10 + npy.readUInt16LE(8));
    if (!header.includes("(2, 10)") || !header.includes("<f4")) throw new Error("bad npy header: " + header);
  ' "$TMP/out.npz" 2>"$TMP/node_err" || fail "run --output npz: $(cat "$TMP/node_err")"
fi
expect_ok "run --json" run "$MLP" --input "$TMP/x.npy" --json --threads 2
cp "$TMP/out" "$TMP/run.json"
json_check "run --json" "$TMP/run.json" \
  'j.outputs.length === 1 && j.outputs[0].name === "logits" && j.outputs[0].shape.join() === "2,10" &&
   j.outputs[0].first_values.length === 8 && j.output_file === null'

# --- eval -----------------------------------------------------------------------
mkdir "$TMP/no_data"
QTK_FASHION_MNIST_DIR="$TMP/no_data" expect_error "eval: missing data files" 1 "not found.*apt-get install dataset-fashion-mnist" \
  eval "$MLP" --data fashion-mnist:test
expect_error "eval: unknown data set" 2 "unknown data set" eval "$MLP" --data cifar:test
if [ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "${QTK_FASHION_MNIST_DIR:-}" ]; then
  expect_ok "eval --json" eval "$MLP" --data fashion-mnist:test --limit 200 --batch 64 --json
  cp "$TMP/out" "$TMP/eval.json"
  json_check "eval --json" "$TMP/eval.json" \
    'j.samples === 200 && j.accuracy > 0.5 && j.accuracy <= 1 && j.images_per_second > 0 &&
     j.per_class_accuracy.length === 10 && typeof j.model === "string" && j.correct === Math.round(j.accuracy * 200)'
  expect_ok "eval text" eval "$MLP" --data fashion-mnist:test --limit 100
  grep -Eq '^accuracy +[0-9.]+' "$TMP/out" || fail "eval text has no accuracy line"
fi

# --- quantize -------------------------------------------------------------------
# expect_warning DESC PATTERN ARGS...: exit 0, stdout, and every stderr line a
# "qtk: warning:" line, one of them matching PATTERN.
expect_warning() {
  local desc=$1 pattern=$2
  shift 2
  checks=$((checks + 1))
  run_qtk "$@"
  if [ "$rc" -ne 0 ]; then
    fail "$desc: exit $rc, stderr: $(cat "$TMP/err")"
  elif grep -qv '^qtk: warning: ' "$TMP/err"; then
    fail "$desc: stderr has lines other than warnings: $(cat "$TMP/err")"
  elif ! grep -Eq -- "$pattern" "$TMP/err"; then
    fail "$desc: no warning matching /$pattern/: $(cat "$TMP/err")"
  elif [ ! -s "$TMP/out" ]; then
    fail "$desc: no report on stdout"
  fi
}
# same_bytes DESC FILE_A FILE_B
same_bytes() {
  checks=$((checks + 1))
  cmp -s "$2" "$3" || fail "$1: $2 and $3 differ"
}

Q="$TMP/q"
mkdir "$Q"
write_npy "$Q/calib.npy" "<f4" "32,1,28,28"
write_npy "$Q/calib_shape.npy" "<f4" "32,1,28,27"
write_npy "$Q/calib_f64.npy" "<f8" "32,1,28,28"
write_npy "$Q/calib_some_nan.npy" "<f4" "32,1,28,28" 4
write_npy "$Q/calib_all_nan.npy" "<f4" "32,1,28,28" all
CAL=(--calib "$Q/calib.npy")

expect_error "quantize: no -o" 2 "-o" quantize "$MLP"
expect_error "quantize: unknown --weights" 2 "--weights.*int4" quantize "$MLP" -o "$Q/x.onnx" --weights int5
expect_error "quantize: unknown --activations" 2 "--activations" quantize "$MLP" -o "$Q/x.onnx" --activations fp8
expect_error "quantize: bad --granularity" 2 "group" quantize "$MLP" -o "$Q/x.onnx" --granularity group:0
expect_error "quantize: bad --calibrate" 2 "percentile" quantize "$MLP" -o "$Q/x.onnx" --calibrate percentile:20
expect_error "quantize: --symmetric and --asymmetric" 2 "symmetric" quantize "$MLP" -o "$Q/x.onnx" --symmetric --asymmetric
expect_error "quantize: unknown --calib form" 2 "--calib" quantize "$MLP" -o "$Q/x.onnx" --calib data.csv
expect_error "quantize: unknown --eval data set" 2 "--eval" quantize "$MLP" -o "$Q/x.onnx" --eval cifar:test
expect_error "quantize: --limit without --eval" 2 "--limit" quantize "$MLP" -o "$Q/x.onnx" --limit 10
expect_error "quantize: bad --nbits-accuracy" 2 "--nbits-accuracy.*int8" quantize "$MLP" -o "$Q/x.onnx" --format qoperator --nbits-accuracy int4
expect_error "quantize: --nbits-accuracy without qoperator" 2 "--nbits-accuracy needs --format qoperator" quantize "$MLP" -o "$Q/x.onnx" --nbits-accuracy int8
[ -e "$Q/x.onnx" ] && fail "quantize wrote a model after a usage error"

cp "$MLP" "$Q/model.onnx"
expect_error "quantize: -o is the input" 2 "refusing" quantize "$Q/model.onnx" -o "$Q/model.onnx" "${CAL[@]}"
expect_error "quantize: -o is the input by another path" 2 "refusing" quantize "$Q/model.onnx" -o "$Q/../q/./model.onnx" "${CAL[@]}"
ln -s model.onnx "$Q/link.onnx"
expect_error "quantize: -o is a link to the input" 2 "refusing" quantize "$Q/model.onnx" -o "$Q/link.onnx" --force "${CAL[@]}"
cmp -s "$MLP" "$Q/model.onnx" || fail "quantize changed its input"

expect_ok "quantize with .npy calibration" quantize "$MLP" -o "$Q/npy.onnx" "${CAL[@]}"
for part in "^model +.*mlp.onnx -> .*npy.onnx" "^size +.*bytes" "^calibration +minmax on 32 samples" "f1.weight +weight +Gemm" \
            "^  input +activation" "^left in float" "^warnings"; do
  grep -Eq -- "$part" "$TMP/out" || fail "quantize text report lacks /$part/: $(head -c 1500 "$TMP/out")"
done
expect_error "quantize: existing output" 1 "exists.*--force" quantize "$MLP" -o "$Q/npy.onnx" "${CAL[@]}"
expect_ok "quantize --force" quantize "$MLP" -o "$Q/npy.onnx" "${CAL[@]}" --force
expect_ok "quantize again" quantize "$MLP" -o "$Q/npy2.onnx" "${CAL[@]}" --report "$Q/report.json"
same_bytes "two identical quantize runs" "$Q/npy.onnx" "$Q/npy2.onnx"
json_check "quantize --report" "$Q/report.json" 'j.input.endsWith("mlp.onnx") && j.size_after < j.size_before'
# The quantized model through the integer kernels and through the float
# simulation of its Q/DQ nodes: the same shape, values within a few codes.
expect_ok "run --integer" run "$Q/npy.onnx" --input "$TMP/x.npy" --integer --output "$Q/int.npz" --json
expect_ok "run (float simulation)" run "$Q/npy.onnx" --input "$TMP/x.npy" --output "$Q/sim.npz" --json
node -e '
  const fs = require("fs");
  // The first member of a stored .npz: its float32 values.
  const values = (f) => {
    const b = fs.readFileSync(f), name = b.readUInt16LE(26), extra = b.readUInt16LE(28);
    const npy = b.subarray(30 + name + extra), hl = npy.readUInt16LE(8);
    const data = npy.subarray(10 + hl, 10 + hl + b.readUInt32LE(18) - 10 - hl);
    return new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  };
  const a = values(process.argv[1]), b = values(process.argv[2]);
  if (a.length !== b.length || a.length === 0) throw new Error("lengths " + a.length + " vs " + b.length);
  let d = 0, r = 0;
  for (let i = 0; i < a.length; i++) { d += (a[i] - b[i]) ** 2; r += b[i] ** 2; }
  if (!(Math.sqrt(d / r) < 0.05)) throw new Error("integer vs simulated relative error " + Math.sqrt(d / r));
' "$Q/int.npz" "$Q/sim.npz" || fail "run --integer disagrees with the float simulation"
checks=$((checks + 1))

expect_ok "quantize --json" quantize "$MLP" -o "$Q/json.onnx" "${CAL[@]}" --json --weights int4 --granularity group:32
cp "$TMP/out" "$Q/quantize.json"
json_check "quantize --json" "$Q/quantize.json" \
  'j.input.endsWith("mlp.onnx") && j.output.endsWith("json.onnx") && j.size_before > 3 * j.size_after &&
   j.settings.weights === "int4" && j.settings.granularity === "group:32" && j.settings.activations === "uint8" &&
   j.calibration.samples === 32 && j.calibration.method === "minmax" && j.calibration.nonfinite_skipped === 0 &&
   typeof j.calibration.seconds === "number" && typeof j.quantize_seconds === "number" &&
   j.tensors.filter(t => t.kind === "weight").length === 3 && j.tensors.some(t => t.kind === "activation" &&
   t.tensor === "input" && t.range[0] === 0 && t.range[1] > 0.9) &&
   j.tensors.every(t => typeof t.scheme === "string" && t.scale_max >= t.scale_min) &&
   Array.isArray(j.float_nodes) && Array.isArray(j.warnings) && !("accuracy_before" in j)'

expect_warning "quantize --exclude matching nothing" "--exclude 'NoSuchNode'" \
  quantize "$MLP" -o "$Q/excl.onnx" "${CAL[@]}" --exclude NoSuchNode,Gemm
grep -q "excluded" "$TMP/out" || fail "quantize --exclude Gemm lists no excluded node"

expect_error "quantize: calibration array of the wrong shape" 1 "input 'input'.*\[32,1,28,27\]" \
  quantize "$MLP" -o "$Q/bad.onnx" --calib "$Q/calib_shape.npy"
expect_error "quantize: calibration array of the wrong dtype" 1 "input 'input'.*float64" \
  quantize "$MLP" -o "$Q/bad.onnx" --calib "$Q/calib_f64.npy"
expect_error "quantize: missing calibration file" 1 "not found" quantize "$MLP" -o "$Q/bad.onnx" --calib "$Q/none.npy"
expect_warning "quantize: some NaN in calibration data" "NaN" quantize "$MLP" -o "$Q/nan.onnx" --calib "$Q/calib_some_nan.npy"
grep -q "NaN/Inf values skipped" "$TMP/out" || fail "quantize report does not mention the skipped NaN values"
expect_error "quantize: all NaN calibration data" 1 "no finite value" quantize "$MLP" -o "$Q/bad.onnx" --calib "$Q/calib_all_nan.npy"
[ -e "$Q/bad.onnx" ] && fail "quantize wrote a model after an error"

printf '{"qtk_calibration": 1, "method": "minmax", "samples": 1, "ranges": {"input": [0, ' >"$Q/corrupt.json"
expect_error "quantize: corrupt --calib-cache" 1 "corrupt.json" quantize "$MLP" -o "$Q/bad.onnx" "${CAL[@]}" --calib-cache "$Q/corrupt.json"
printf '{"qtk_calibration": 1, "method": "entropy", "samples": 1, "ranges": {}}' >"$Q/entropy.json"
expect_error "quantize: --calib-cache from another method" 1 "entropy" quantize "$MLP" -o "$Q/bad.onnx" "${CAL[@]}" --calib-cache "$Q/entropy.json"

if [ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "${QTK_FASHION_MNIST_DIR:-}" ]; then
  # Calibrated on a seeded subset of the training set (each run reads all 60,000
  # images, so the runs are few): the same bytes every time.
  expect_ok "quantize mlp" quantize "$MLP" -o "$Q/mlp.onnx" --calib-samples 64
  expect_ok "eval float mlp" eval "$MLP" --data fashion-mnist:test --limit 2000 --json
  cp "$TMP/out" "$Q/eval_float.json"
  expect_ok "eval quantized mlp" eval "$Q/mlp.onnx" --data fashion-mnist:test --limit 2000 --json
  cp "$TMP/out" "$Q/eval_quant.json"
  checks=$((checks + 1))
  node -e '
    const fs = require("fs");
    const a = JSON.parse(fs.readFileSync(process.argv[1])), b = JSON.parse(fs.readFileSync(process.argv[2]));
    if (a.samples !== 2000 || b.samples !== 2000) throw new Error("sample counts " + a.samples + ", " + b.samples);
    if (!(Math.abs(a.accuracy - b.accuracy) <= 0.01)) throw new Error("float " + a.accuracy + " vs quantized " + b.accuracy);
  ' "$Q/eval_float.json" "$Q/eval_quant.json" 2>"$TMP/node_err" || fail "quantized mlp accuracy: $(cat "$TMP/node_err")"
  # The same model on the integer kernels: within a point of the float-kernel run.
  expect_ok "eval --integer" eval "$Q/mlp.onnx" --data fashion-mnist:test --limit 2000 --integer --json
  json_check "eval --integer" "$TMP/out" \
    "j.samples === 2000 && Math.abs(j.accuracy - $(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).accuracy)' "$Q/eval_quant.json")) <= 0.01"

  # A calibration cache: written on the first run, reused on the second; the
  # model is the same bytes either way. The first run also evaluates.
  expect_ok "quantize --calib-cache (write) --eval" quantize "$MLP" -o "$Q/cache1.onnx" --calib-samples 64 \
    --calib-cache "$Q/ranges.json" --json --eval fashion-mnist:test --limit 300
  cp "$TMP/out" "$Q/cache1.json"
  json_check "calibration cache file" "$Q/ranges.json" \
    'j.qtk_calibration === 1 && j.method === "minmax" && j.samples === 64 && j.model === "mlp.onnx" &&
     Array.isArray(j.ranges.input) && j.ranges.input.length === 2 && j.ranges.input[0] <= j.ranges.input[1]'
  json_check "first cached run calibrates and evaluates" "$Q/cache1.json" \
    'j.calibration.cache === "written" && j.calibration.ranges_calibrated > 0 && !j.calibration.skipped &&
     j.calibration.samples === 64 && j.accuracy_before > 0.7 && Math.abs(j.accuracy_before - j.accuracy_after) < 0.03 &&
     j.images_per_second_before > 0 && j.images_per_second_after > 0 && j.images_per_second_integer > 0 &&
     Math.abs(j.accuracy_integer - j.accuracy_after) < 0.03 && j.eval_integer.samples === 300'
  same_bytes "quantize on fashion-mnist twice (with and without a cache)" "$Q/mlp.onnx" "$Q/cache1.onnx"
  cp "$Q/ranges.json" "$Q/ranges_before.json"
  expect_ok "quantize --calib-cache (reuse)" quantize "$MLP" -o "$Q/cache2.onnx" --calib-samples 64 \
    --calib-cache "$Q/ranges.json" --report "$Q/cache2.json"
  grep -Eq "^calibration +minmax ranges: [0-9]+ loaded from .*ranges.json" "$TMP/out" ||
    fail "text report does not say the ranges came from the cache: $(grep calibration "$TMP/out")"
  json_check "second cached run skips range calibration" "$Q/cache2.json" \
    'j.calibration.cache === "loaded" && j.calibration.skipped === true && j.calibration.ranges_calibrated === 0 &&
     j.calibration.ranges_from_cache > 0'
  same_bytes "cache file left alone" "$Q/ranges.json" "$Q/ranges_before.json"
  same_bytes "quantize with a cache hit" "$Q/cache1.onnx" "$Q/cache2.onnx"
fi

# --- bench --------------------------------------------------------------------
expect_ok "qtk bench --help" bench --help
grep -q "usage: qtk bench" "$TMP/out" || fail "qtk bench --help does not print its usage"
expect_ok "bench text" bench "$MLP" --runs 3 --warmup 1
grep -Eq '^latency +median [0-9.]+ ms' "$TMP/out" || fail "bench text has no latency line: $(cat "$TMP/out")"
grep -Eq '^memory +peak RSS [0-9.]+ MB' "$TMP/out" || fail "bench text has no memory line"
expect_ok "bench --json" bench "$MLP" --batch 4 --threads 2 --runs 5 --warmup 0 --json
cp "$TMP/out" "$TMP/bench.json"
json_check "bench --json" "$TMP/bench.json" \
  'j.batch === 4 && j.threads === 2 && j.runs === 5 && j.warmup === 0 && j.integer === false &&
   j.inputs.length === 1 && j.inputs[0].name === "input" && j.inputs[0].shape.join() === "4,1,28,28" &&
   j.latency_ms.median > 0 && j.latency_ms.p10 <= j.latency_ms.median && j.latency_ms.median <= j.latency_ms.p90 &&
   j.latency_ms.min <= j.latency_ms.p10 && j.samples_per_second > 0 && j.build_ms >= 0 && j.load_ms >= 0 &&
   j.weight_bytes === 4 * 235146 && j.peak_rss_bytes > 0 && j.rss_before_session_bytes > 0 &&
   j.activation_peak_bytes >= 4 * 784 * 4 && j.activation_peak_bytes < 4 * 784 * 4 * 4'
# QTK_ISA caps the instruction set the kernels may use (how an AVX2-only
# machine is measured on a newer one); bench reports the tier it ran.
json_check "bench reports cpu_isa" "$TMP/bench.json" '["avx512_vnni", "avx512", "avx2", "scalar"].includes(j.cpu_isa)'
for isa in avx2 scalar; do
  QTK_ISA=$isa expect_ok "bench QTK_ISA=$isa" bench "$MLP" --runs 3 --warmup 0 --json
  json_check "bench QTK_ISA=$isa" "$TMP/out" "j.cpu_isa === \"$isa\" || (\"$isa\" === \"avx2\" && j.cpu_isa === \"scalar\")"
done
expect_ok "bench default runs" bench "$MLP" --json
cp "$TMP/out" "$TMP/bench_auto.json"
json_check "bench picks at least 10 runs" "$TMP/bench_auto.json" 'j.runs >= 10 && j.batch === 1 && j.warmup === 3'
# Memory: the largest live pair lies within the peak live set; batch 64 runs
# in the planned arena unless --no-memory-plan.
expect_ok "bench memory fields" bench "$MLP" --batch 64 --runs 3 --json
json_check "bench memory fields" "$TMP/out" 'j.activation_pair_bytes > 0 && j.activation_pair_bytes <= j.activation_peak_bytes &&
   j.activation_arena_bytes > 0 && j.session_weight_bytes > 0 && (j.memory_ratio === null || j.memory_ratio > 0) &&
   j.sampled_peak_rss_bytes >= j.rss_before_session_bytes && j.peak_rss_bytes >= j.sampled_peak_rss_bytes &&
   (j.memory_ratio_running === null || (j.memory_ratio_running > 0 && j.memory_ratio !== null &&
    j.memory_ratio_running <= j.memory_ratio && j.session_running_rss_bytes <= j.session_peak_rss_bytes))'
expect_ok "bench --profile" bench "$MLP" --batch 8 --runs 3 --profile
grep -Eq '^profile +[0-9.]+ ms per run' "$TMP/out" || fail "bench --profile has no profile line: $(cat "$TMP/out")"
grep -Eq '^  Gemm +[0-9.]+ +[0-9.]+%' "$TMP/out" || fail "bench --profile has no Gemm row: $(cat "$TMP/out")"
expect_ok "bench --profile --json" bench "$MLP" --batch 8 --runs 3 --profile --json
json_check "bench --profile --json" "$TMP/out" 'Array.isArray(j.profile) && j.profile.length > 0 &&
  j.profile.some(n => n.op_type === "Gemm") && j.profile.every(n => typeof n.node === "string" && n.ms >= 0)'
expect_ok "bench --no-memory-plan" bench "$MLP" --batch 64 --runs 3 --no-memory-plan --json
json_check "bench --no-memory-plan" "$TMP/out" 'j.activation_arena_bytes === 0 && j.activation_pair_bytes > 0'
# An int8 QDQ model (calibrated on a small .npy) in an integer session.
write_npy "$TMP/calib.npy" "<f4" "16,1,28,28"
expect_ok "quantize for bench" quantize "$MLP" -o "$TMP/bench_int8.onnx" --calib "$TMP/calib.npy"
expect_ok "bench --integer" bench "$TMP/bench_int8.onnx" --integer --batch 8 --runs 3 --json
cp "$TMP/out" "$TMP/bench_int8.json"
json_check "bench --integer --json" "$TMP/bench_int8.json" 'j.integer === true && j.batch === 8 && j.latency_ms.median > 0'
expect_error "bench: missing MODEL" 2 "MODEL" bench
expect_error "bench: unknown option" 2 "--bogus" bench "$MLP" --bogus
expect_error "bench: --runs 0" 2 "--runs" bench "$MLP" --runs 0
expect_error "bench: bad --batch" 2 "--batch" bench "$MLP" --batch abc
expect_error "bench: negative --warmup" 2 "--warmup" bench "$MLP" --warmup -1
expect_error "bench: --threads 0" 2 "--threads" bench "$MLP" --threads 0
expect_error "bench: missing model" 1 "not found" bench "$TMP/missing.onnx"
expect_error "bench: random bytes" 1 "ONNX|IR version" bench "$TMP/random.onnx"

# --- quantize --method / --equalize ------------------------------------------
expect_error "quantize: unknown --method" 2 "--method.*gptq.*adaround" quantize "$MLP" -o "$Q/m.onnx" --method obq
expect_ok "quantize --method rtn" quantize "$MLP" -o "$Q/rtn.onnx" "${CAL[@]}" --weights int4 --method rtn --json
cp "$TMP/out" "$Q/rtn.json"
json_check "quantize --method rtn" "$Q/rtn.json" 'j.settings.method === "rtn" && j.method === "rtn" &&
   j.tensors.filter(t => t.kind === "weight").every(t => t.method === "rtn")'
expect_error "quantize: int7 is no activation format" 2 "--activations.*uint8" quantize "$MLP" -o "$Q/a7.onnx" --activations int7
# int7 weights: auto rounds to nearest, as at 8 bits.
expect_ok "quantize --weights int7" quantize "$MLP" -o "$Q/int7.onnx" "${CAL[@]}" --weights int7 --json
json_check "quantize --weights int7" "$TMP/out" 'j.settings.weights === "int7" && j.method === "rtn" &&
   j.tensors.filter(t => t.kind === "weight").length === 3'
# --weights auto: int7 where the integer kernels are AVX2 without VNNI, int8 elsewhere.
QTK_ISA=avx2 expect_ok "quantize --weights auto (avx2)" quantize "$MLP" -o "$Q/wauto.onnx" "${CAL[@]}" --weights auto --json
if grep -q avx2 /proc/cpuinfo; then want=int7; else want=int8; fi
json_check "quantize --weights auto (avx2)" "$TMP/out" "j.settings.weights === \"$want\""
QTK_ISA=scalar expect_ok "quantize --weights auto (scalar)" quantize "$MLP" -o "$Q/wauto.onnx" "${CAL[@]}" --weights auto \
  --json --force
json_check "quantize --weights auto (scalar)" "$TMP/out" 'j.settings.weights === "int8"'
expect_warning "quantize --method gptq (32 rows for 784 columns)" "rank-deficient" \
  quantize "$MLP" -o "$Q/gptq.onnx" "${CAL[@]}" --weights int4 --method gptq --json
cp "$TMP/out" "$Q/gptq.json"
json_check "quantize --method gptq" "$Q/gptq.json" 'j.method === "gptq" && j.method_seconds >= 0 &&
   j.tensors.filter(t => t.kind === "weight").every(t => t.method === "gptq" && t.scheme.includes("gptq"))'
expect_warning "quantize --method adaround with too few rows" "AdaRound has 32 input rows.*rounded to nearest" \
  quantize "$MLP" -o "$Q/ada.onnx" "${CAL[@]}" --weights int4 --method adaround
write_npy "$Q/calib80.npy" "<f4" "80,1,28,28"
expect_ok "quantize --method auto at 2 bits" quantize "$MLP" -o "$Q/auto.onnx" --calib "$Q/calib80.npy" --weights int2 \
  --activations float --equalize --json
cp "$TMP/out" "$Q/auto.json"
json_check "quantize auto picks adaround below 8 bits" "$Q/auto.json" 'j.settings.method === "auto" &&
   j.method === "adaround" && j.equalized === true && j.settings.equalize === true &&
   j.tensors.filter(t => t.kind === "weight").every(t => t.method === "adaround" && t.method_seconds >= 0)'
expect_ok "quantize --method auto at 8 bits" quantize "$MLP" -o "$Q/auto8.onnx" "${CAL[@]}" --json
cp "$TMP/out" "$Q/auto8.json"
json_check "quantize auto rounds 8-bit weights to nearest" "$Q/auto8.json" 'j.method === "rtn"'

# 4-bit activations, first/last layers at 8 bits, per-layer precision files.
expect_ok "quantize W4A4" quantize "$MLP" -o "$Q/w4a4.onnx" "${CAL[@]}" --weights int4 --activations uint4 \
  --method rtn --json
cp "$TMP/out" "$Q/w4a4.json"
json_check "W4A4: first/last layer at 8 bits by default" "$Q/w4a4.json" 'j.notes.some(n => n.includes("first and last")) &&
   j.tensors.some(t => t.kind === "activation" && t.scheme.startsWith("uint4")) &&
   j.tensors.some(t => t.kind === "activation" && t.scheme.startsWith("uint8"))'
expect_ok "quantize W4A4 --no-first-last-8bit" quantize "$MLP" -o "$Q/w4a4all.onnx" "${CAL[@]}" --weights int4 \
  --activations uint4 --method rtn --no-first-last-8bit --int8-containers --json
cp "$TMP/out" "$Q/w4a4all.json"
json_check "W4A4 all layers 4-bit, in int8 containers" "$Q/w4a4all.json" 'j.notes.length === 0 &&
   j.tensors.filter(t => t.kind === "activation").every(t => t.scheme.startsWith("uint4") && t.scheme.includes("in uint8"))'
expect_error "quantize: both first/last options" 2 "exclude each other" quantize "$MLP" -o "$Q/x.onnx" \
  --first-last-8bit --no-first-last-8bit
printf '{"/f2/Gemm": {"weights": "int4", "activations": "uint4"}, "nope": "float"}' > "$Q/lp.json"
expect_warning "quantize --layer-precision warns on unknown nodes" "names no node 'nope'" \
  quantize "$MLP" -o "$Q/lp.onnx" "${CAL[@]}" --layer-precision "$Q/lp.json" --method rtn --json
cp "$TMP/out" "$Q/lp.json.out"
json_check "--layer-precision changes only /f2/Gemm" "$Q/lp.json.out" 'j.tensors.filter(t => t.kind === "weight").every(t =>
   t.scheme.startsWith(t.node === "/f2/Gemm" ? "int4" : "int8")) &&
   j.tensors.filter(t => t.kind === "activation" && t.scheme.startsWith("uint4")).length === 1'
printf '{"/f2/Gemm": {"weights": "int5"}}' > "$Q/lp_bad.json"
expect_error "quantize: bad --layer-precision format" 1 "int5" quantize "$MLP" -o "$Q/x.onnx" \
  --layer-precision "$Q/lp_bad.json"

# --- analyze and automatic mixed precision -------------------------------------
expect_ok "qtk analyze --help" analyze --help
grep -q "usage: qtk analyze" "$TMP/out" || fail "qtk analyze --help does not print its usage"
expect_error "analyze: unknown --weights" 2 "--weights" analyze "$MLP" --weights int5
expect_error "quantize: --target-drop without --val" 2 "--val" quantize "$MLP" -o "$Q/x.onnx" --target-drop 1
expect_error "quantize: --target-drop with unlabelled --val" 2 "labelled" quantize "$MLP" -o "$Q/x.onnx" \
  --target-drop 1 --val "$TMP/x.npy"
expect_error "quantize: --val without a target" 2 "--target" quantize "$MLP" -o "$Q/x.onnx" --val fashion-mnist:test
if [ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "${QTK_FASHION_MNIST_DIR:-}" ]; then
  expect_ok "analyze --json" analyze "$MLP" --limit 200 --calib-samples 64 --json
  json_check "analyze ranks every layer, most sensitive first" "$TMP/out" 'j.layers.length === 3 &&
     j.samples === 200 && j.float_accuracy > 0.5 &&
     j.layers.every((l, i) => l.rank === i + 1 && l.weights.sqnr_db > 0 && l.activations.sqnr_db > 0 &&
                              (i === 0 || j.layers[i - 1].score_db <= l.score_db))'
  expect_ok "quantize --target-bits" quantize "$MLP" -o "$Q/mp.onnx" --target-bits 3 --val fashion-mnist:train \
    --limit 300 --calib-samples 128 --method rtn --json
  json_check "mixed precision within 3 bits, per-layer widths in the model" "$TMP/out" 'j.mixed_precision.met &&
     j.mixed_precision.average_bits <= 3 && j.mixed_precision.layers.length === 3 &&
     j.mixed_precision.layers.every(l => l.weights === "float" ||
       j.tensors.some(t => t.kind === "weight" && t.node === l.node && t.scheme.startsWith(l.weights + " ")))'
  [ -s "$Q/mp.onnx" ] || fail "quantize --target-bits wrote no model"
fi

# Knowledge distillation.
D="$TMP/distill"
mkdir -p "$D"
expect_ok "distill --help" distill --help
grep -q -- "--temperature" "$TMP/out" || fail "distill --help does not list --temperature"
expect_error "distill: --teacher required" 2 "--teacher" distill --arch mlp:784,16,10 --data fashion-mnist:train \
  -o "$D/s.onnx"
expect_error "distill: output is the teacher" 2 "teacher model" distill --teacher "$MLP" --arch mlp:784,16,10 \
  --data fashion-mnist:train -o "$MLP"
expect_error "distill: alpha out of range" 2 "--alpha" distill --teacher "$MLP" --arch mlp:784,16,10 \
  --data fashion-mnist:train -o "$D/s.onnx" --alpha 2
if [ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "${QTK_FASHION_MNIST_DIR:-}" ]; then
  # (epoch lines go to stderr, so only the exit status is checked here)
  checks=$((checks + 1))
  run_qtk distill --teacher "$MODELS/cnn.onnx" --arch mlp:784,32,10 --data fashion-mnist:train \
    --limit 2000 --val fashion-mnist:test --epochs 2 --batch 100 -o "$D/s.onnx" --json
  [ "$rc" -eq 0 ] || fail "distill an MLP from the CNN: exit $rc, stderr: $(cat "$TMP/err")"
  json_check "distill reports teacher and epochs" "$TMP/out" 'j.teacher.endsWith("cnn.onnx") && j.alpha === 0.5 && j.teacher_accuracy > 0.9 &&
     j.epochs.length === 2 && j.epochs[1].val_accuracy > 0.4'
  [ -s "$D/s.onnx" ] || fail "distill wrote no model"
fi

# Checkpoints: a run stopped after epoch 1 and resumed ends in the same bytes
# as the straight run (optimizer, schedule and shuffling state restored).
TR="$TMP/train"
mkdir -p "$TR"
expect_error "train: --stop-after beyond --epochs" 2 "--stop-after" train --arch mlp:784,16,10 \
  --data fashion-mnist:train -o "$TR/r.onnx" --epochs 2 --stop-after 3
if [ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "${QTK_FASHION_MNIST_DIR:-}" ]; then
  expect_error "train: --resume without a checkpoint" 1 "no checkpoint" train --arch mlp:784,16,10 \
    --data fashion-mnist:train --limit 100 -o "$TR/r.onnx" --resume
  cp "$MLP" "$TR/r.onnx.checkpoint"
  expect_error "train: --resume from a plain model" 1 "holds no training state" train --arch mlp:784,16,10 \
    --data fashion-mnist:train --limit 100 -o "$TR/r.onnx" --resume
  TRAIN_ARGS=(--arch mlp:784,32,10 --data fashion-mnist:train --limit 1000 --epochs 3 --batch 100 --threads 1 --augment)
  checks=$((checks + 1))
  run_qtk train "${TRAIN_ARGS[@]}" -o "$TR/straight.onnx"
  [ "$rc" -eq 0 ] || fail "train 3 epochs: exit $rc, stderr: $(cat "$TMP/err")"
  checks=$((checks + 1))
  run_qtk train "${TRAIN_ARGS[@]}" -o "$TR/resumed.onnx" --stop-after 1 --json
  [ "$rc" -eq 0 ] || fail "train --stop-after 1: exit $rc, stderr: $(cat "$TMP/err")"
  json_check "train --stop-after reports the checkpoint" "$TMP/out" 'j.stopped_after === 1 && j.epochs.length === 1 &&
     j.checkpoint.endsWith("resumed.onnx.checkpoint") && !("output" in j)'
  [ -e "$TR/resumed.onnx" ] && fail "train --stop-after wrote the output model"
  checks=$((checks + 1))
  run_qtk train "${TRAIN_ARGS[@]}" -o "$TR/resumed.onnx" --resume --json
  [ "$rc" -eq 0 ] || fail "train --resume: exit $rc, stderr: $(cat "$TMP/err")"
  grep -q "resuming from .*after epoch 1" "$TMP/err" || fail "train --resume does not say where it resumes: $(cat "$TMP/err")"
  json_check "train --resume runs epochs 2 and 3" "$TMP/out" 'j.epochs.length === 2 && j.epochs[0].epoch === 2'
  cmp -s "$TR/straight.onnx" "$TR/resumed.onnx" || fail "stopped and resumed training differs from the straight run"
  [ -e "$TR/resumed.onnx.checkpoint" ] && fail "train left its checkpoint after finishing"
fi

# Quantization-aware training.
QA="$TMP/qat"
mkdir -p "$QA"
expect_ok "qat --help" qat --help
grep -q -- "--weights" "$TMP/out" && grep -q -- "--epochs" "$TMP/out" || fail "qat --help lacks the scheme or training options"
expect_error "qat: --data required" 2 "--data" qat "$MLP" -o "$QA/q.onnx"
expect_error "qat: output is the input" 2 "over its input" qat "$MLP" -o "$MLP" --data fashion-mnist:train
expect_error "qat: dynamic activations" 2 "dynamic" qat "$MLP" -o "$QA/q.onnx" --data fashion-mnist:train \
  --activations dynamic
expect_error "qat: unknown weight format" 2 "--weights" qat "$MLP" -o "$QA/q.onnx" --data fashion-mnist:train \
  --weights int5
expect_error "qat: unknown --calib" 2 "--calib 'imagenet'" qat "$MLP" -o "$QA/q.onnx" --data fashion-mnist:train \
  --calib imagenet
[ -e "$QA/q.onnx" ] && fail "qat wrote a model after a usage error"
if [ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "${QTK_FASHION_MNIST_DIR:-}" ]; then
  checks=$((checks + 1))
  run_qtk qat "$MLP" -o "$QA/q.onnx" --data fashion-mnist:train --limit 1000 --val fashion-mnist:test --epochs 1 \
    --weights int4 --activations uint4 --method rtn --calib-samples 128 --json
  [ "$rc" -eq 0 ] || fail "qat W4A4 on the MLP: exit $rc, stderr: $(cat "$TMP/err")"
  # Defaults: the labels, lr 1e-3, PTQ's scales kept at 4 bits, the last epoch written.
  json_check "qat reports PTQ and QAT accuracy" "$TMP/out" 'j.ptq_accuracy > 0.7 && j.qat_accuracy > 0.7 &&
     j.history.length === 1 && j.format === "qdq" && j.weights === "int4" && Math.abs(j.lr - 1e-3) < 1e-7 &&
     !("teacher" in j) && j.warmup_steps === 0 && j.scale_lr === 0 && j.holdout === 0 && j.samples === 1000 &&
     !("selected_epoch" in j)'
  run_qtk qat "$MLP" -o "$QA/held.onnx" --data fashion-mnist:train --limit 1000 --val fashion-mnist:test --epochs 1 \
    --weights int4 --activations uint4 --method rtn --calib-samples 128 --holdout 100 --json
  [ "$rc" -eq 0 ] || fail "qat --holdout 100: exit $rc, stderr: $(cat "$TMP/err")"
  # The written weights do at least as well on the held-out samples as PTQ's.
  json_check "qat picks the weights on held-out samples" "$TMP/out" 'j.holdout === 100 && j.samples === 900 &&
     j.selected_epoch >= 0 && j.selected_epoch <= 1 && j.holdout_accuracy >= j.holdout_ptq_accuracy &&
     j.holdout_float_accuracy > 0.7 &&
     j.history[0].holdout_accuracy >= 0 && !("val_accuracy" in j.history[0]) &&
     (j.selected_epoch === 0 || j.holdout_z >= 1.645) && j.holdout_best_epoch === 1 &&
     j.holdout_wins + j.holdout_losses <= 100'
  expect_ok "qat model runs in the integer session" eval "$QA/q.onnx" --data fashion-mnist:test --limit 200 --integer
  checks=$((checks + 1))
  run_qtk qat "$MLP" -o "$QA/calib.onnx" --data fashion-mnist:train --limit 300 --epochs 1 --batch 100 \
    --calib fashion-mnist:test --calib-samples 100 --holdout 0 --weights int2 --teacher none --warmup 0.5 --json
  [ "$rc" -eq 0 ] || fail "qat --calib fashion-mnist:test: exit $rc, stderr: $(cat "$TMP/err")"
  json_check "qat calibrates on --calib" "$TMP/out" 'j.calib === "fashion-mnist:test" && j.calib_samples === 100 &&
     j.samples === 300 && j.holdout === 0 && !("selected_epoch" in j) && Math.abs(j.lr - 1e-3) < 1e-7 &&
     !("teacher" in j) && j.warmup_steps === 2 && j.scale_lr === 1'
  expect_error "qat: --holdout takes every sample" 2 "leaves nothing to train on" qat "$MLP" -o "$QA/h.onnx" \
    --data fashion-mnist:train --limit 100 --holdout 100
  expect_error "qat: --calib array of the wrong shape" 1 "x_shape.npy" qat "$MLP" -o "$QA/calib2.onnx" \
    --data fashion-mnist:train --limit 100 --calib "$TMP/x_shape.npy"
  expect_error "qat: output exists" 1 "already exists" qat "$MLP" -o "$QA/q.onnx" --data fashion-mnist:train
  # Stopped after epoch 1 and resumed: the same bytes as the straight run.
  QAT_ARGS=(--data fashion-mnist:train --limit 400 --epochs 2 --batch 100 --method rtn --calib-samples 64 --threads 1)
  cp "$MLP" "$QA/m.onnx"
  checks=$((checks + 1))
  run_qtk qat "$QA/m.onnx" -o "$QA/straight.onnx" "${QAT_ARGS[@]}" --weights int2
  [ "$rc" -eq 0 ] || fail "qat 2 epochs: exit $rc, stderr: $(cat "$TMP/err")"
  [ -e "$QA/straight.onnx.checkpoint" ] && fail "qat left its checkpoint after finishing"
  checks=$((checks + 1))
  run_qtk qat "$QA/m.onnx" -o "$QA/resumed.onnx" "${QAT_ARGS[@]}" --weights int2 --stop-after 1 --json
  [ "$rc" -eq 0 ] || fail "qat --stop-after 1: exit $rc, stderr: $(cat "$TMP/err")"
  json_check "qat --stop-after reports the checkpoint" "$TMP/out" 'j.stopped_after === 1 &&
     j.checkpoint.endsWith("resumed.onnx.checkpoint") && !("output" in j) && j.history.length === 1'
  [ -e "$QA/resumed.onnx" ] && fail "qat --stop-after wrote the output model"
  expect_error "qat: --resume with another scheme" 1 "another run" qat "$QA/m.onnx" -o "$QA/resumed.onnx" \
    "${QAT_ARGS[@]}" --weights int4 --resume
  expect_error "qat: --resume with --holdout" 2 "--holdout 0" qat "$QA/m.onnx" -o "$QA/resumed.onnx" \
    "${QAT_ARGS[@]}" --weights int2 --holdout 50 --resume
  expect_error "qat: --stop-after at --epochs" 2 "must be below --epochs" qat "$QA/m.onnx" -o "$QA/x.onnx" \
    "${QAT_ARGS[@]}" --weights int2 --stop-after 2
  # The same path with other contents (here: other weights) is another run.
  run_qtk train --model "$QA/m.onnx" -o "$QA/m2.onnx" --data fashion-mnist:train --limit 200 --epochs 1
  [ "$rc" -eq 0 ] || fail "train another mlp: exit $rc, stderr: $(cat "$TMP/err")"
  cp "$QA/m.onnx" "$QA/m.orig.onnx" && cp "$QA/m2.onnx" "$QA/m.onnx"
  expect_error "qat: --resume after the model changed" 1 "another run" qat "$QA/m.onnx" -o "$QA/resumed.onnx" \
    "${QAT_ARGS[@]}" --weights int2 --resume
  cp "$QA/m.orig.onnx" "$QA/m.onnx"
  checks=$((checks + 1))
  # --lr 0.001 is the default given explicitly: the same run.
  run_qtk qat "$QA/m.onnx" -o "$QA/resumed.onnx" "${QAT_ARGS[@]}" --weights int2 --lr 0.001 --resume --json
  [ "$rc" -eq 0 ] || fail "qat --resume: exit $rc, stderr: $(cat "$TMP/err")"
  grep -q "resuming from .*after epoch 1" "$TMP/err" || fail "qat --resume does not say where it resumes: $(cat "$TMP/err")"
  json_check "qat --resume runs epoch 2" "$TMP/out" 'j.history.length === 1 && j.history[0].epoch === 2'
  cmp -s "$QA/straight.onnx" "$QA/resumed.onnx" || fail "stopped and resumed QAT differs from the straight run"
  [ -e "$QA/resumed.onnx.checkpoint" ] && fail "qat left its checkpoint after resuming"
  expect_error "qat: --resume without a checkpoint" 1 "no checkpoint" qat "$QA/m.onnx" -o "$QA/resumed.onnx" \
    "${QAT_ARGS[@]}" --weights int2 --resume --force
  checks=$((checks + 1))
  run_qtk qat "$MLP" -o "$QA/kd.onnx" --data fashion-mnist:train --limit 500 --epochs 1 --weights int4 \
    --method rtn --calib-samples 64 --teacher self --alpha 0.7 --scale-lr 0.5 --json
  [ "$rc" -eq 0 ] || fail "qat --teacher self: exit $rc, stderr: $(cat "$TMP/err")"
  json_check "qat reports its teacher" "$TMP/out" 'j.teacher === "self" && Math.abs(j.alpha - 0.7) < 1e-6 && j.scale_lr === 0.5'
fi
expect_error "qat: --alpha with --teacher none" 2 "--teacher none" qat "$MLP" -o "$QA/x.onnx" \
  --data fashion-mnist:train --teacher none --alpha 0.5
expect_error "qat: --warmup above 1" 2 "--warmup" qat "$MLP" -o "$QA/x.onnx" --data fashion-mnist:train --warmup 2
expect_error "qat: negative --scale-lr" 2 "--scale-lr" qat "$MLP" -o "$QA/x.onnx" --data fashion-mnist:train \
  --scale-lr -1

# Pruning and weight clustering.
P="$TMP/prune"
mkdir -p "$P"
expect_ok "prune --help" prune --help
grep -q -- "--sparsity" "$TMP/out" || fail "prune --help does not list --sparsity"
expect_error "prune: --sparsity required" 2 "--sparsity" prune "$MLP" -o "$P/a.onnx"
expect_error "prune: sparsity 1 refused" 2 '\[0, 1\)' prune "$MLP" -o "$P/a.onnx" --sparsity 1
expect_error "prune: negative sparsity refused" 2 '\[0, 1\)' prune "$MLP" -o "$P/a.onnx" --sparsity -0.2
expect_error "prune: unknown method" 2 "unknown pruning method 'lottery'" prune "$MLP" -o "$P/a.onnx" \
  --sparsity 0.5 --method lottery
expect_error "prune: output is the input" 2 "input model" prune "$MLP" -o "$MLP" --sparsity 0.5
expect_error "prune: --cluster-epochs without --cluster" 2 "--cluster BITS" prune "$MLP" -o "$P/a.onnx" \
  --sparsity 0.5 --cluster-epochs 2
expect_error "prune: channels on a model without Conv" 1 "no Conv layer" prune "$MLP" -o "$P/a.onnx" \
  --sparsity 0.5 --method channels
before=$(cksum <"$MLP")
expect_ok "prune mlp 60% + 3-bit clusters" prune "$MLP" -o "$P/mlp.onnx" --sparsity 0.6 --edge-sparsity 0.6 \
  --cluster 3 --json
json_check "prune reports every step" "$TMP/out" 'j.steps.length === 3 && j.steps[0].step === "original" &&
   j.steps[1].step === "pruned" && j.steps[2].step === "clustered" &&
   j.steps[0].nonzero === j.steps[0].parameters &&
   Math.abs((j.steps[0].parameters - j.steps[1].nonzero) - 0.6 * 234752) < 3 &&
   j.steps[1].deflated_bytes < 0.75 * j.steps[0].deflated_bytes &&
   j.steps[2].deflated_bytes < 0.5 * j.steps[1].deflated_bytes'
[ "$(cksum <"$MLP")" = "$before" ] || fail "prune changed its input model"
expect_error "prune: --cluster alone with --epochs" 2 "applies to pruning" prune "$MLP" -o "$P/c.onnx" --cluster 3 --epochs 2
expect_ok "prune --cluster alone" prune "$MLP" -o "$P/c3.onnx" --cluster 3 --json
json_check "--cluster without --sparsity only clusters" "$TMP/out" 'j.sparsity === 0 && j.steps.length === 2 &&
   j.steps[1].step === "clustered" && j.steps[1].nonzero === j.steps[0].nonzero'
expect_error "prune: existing output" 1 "already exists" prune "$MLP" -o "$P/mlp.onnx" --sparsity 0.5
expect_ok "prune resnet20 channels" prune "$MODELS/resnet20.onnx" -o "$P/r20.onnx" --sparsity 0.5 \
  --method channels --json
json_check "channel pruning shrinks resnet20" "$TMP/out" 'j.steps[1].parameters < 0.6 * j.steps[0].parameters &&
   j.steps[1].file_bytes < 0.6 * j.steps[0].file_bytes && j.notes.some(n => n.includes("Add"))'
expect_ok "channel-pruned resnet20 runs" bench "$P/r20.onnx" --runs 2 --warmup 1 --threads 1
if [ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "${QTK_FASHION_MNIST_DIR:-}" ]; then
  expect_ok "prune mlp 2:4 with fine-tuning" prune "$MLP" -o "$P/mlp24.onnx" --method 2:4 \
    --data fashion-mnist:train --limit 1000 --batch 100 --val fashion-mnist:test --json
  json_check "2:4 fine-tuning keeps half the weights and accuracy" "$TMP/out" 'j.steps.length === 3 &&
     j.steps[2].step === "fine-tuned" && j.steps[2].parameters - j.steps[2].nonzero === 234752 / 2 &&
     j.steps[2].accuracy > 0.8'
  # (1 bit: 0.556 clustered, 0.610 after one epoch when written)
  expect_ok "prune --cluster 1 with centroid fine-tuning" prune "$MLP" -o "$P/c1ft.onnx" --cluster 1 \
    --data fashion-mnist:train --limit 2000 --batch 50 --lr 0.001 --val fashion-mnist:test --json
  json_check "centroid fine-tuning recovers accuracy" "$TMP/out" 'j.steps.length === 3 &&
     j.steps[1].step === "clustered" && j.steps[2].step === "cluster-ft" &&
     j.steps[2].accuracy > j.steps[1].accuracy + 0.02'
  # The pruning fine-tune stopped mid-ramp and resumed: the same bytes as the straight run.
  PRUNE_ARGS=(--data fashion-mnist:train --limit 600 --epochs 3 --batch 100 --sparsity 0.5 --threads 1)
  expect_ok "prune 3 epochs" prune "$MLP" -o "$P/straight.onnx" "${PRUNE_ARGS[@]}" --json
  [ -e "$P/straight.onnx.checkpoint" ] && fail "prune left its checkpoint after finishing"
  expect_ok "prune --stop-after 1" prune "$MLP" -o "$P/resumed.onnx" "${PRUNE_ARGS[@]}" --stop-after 1 --json
  json_check "prune --stop-after reports the checkpoint" "$TMP/out" 'j.stopped_after === 1 &&
     j.checkpoint.endsWith("resumed.onnx.checkpoint") && !("output" in j)'
  [ -e "$P/resumed.onnx" ] && fail "prune --stop-after wrote the output model"
  expect_error "prune: --resume with another sparsity" 1 "another run" prune "$MLP" -o "$P/resumed.onnx" \
    --data fashion-mnist:train --limit 600 --epochs 3 --batch 100 --sparsity 0.6 --threads 1 --resume
  expect_error "prune: --stop-after at --epochs" 2 "must be below --epochs" prune "$MLP" -o "$P/x.onnx" \
    "${PRUNE_ARGS[@]}" --stop-after 3
  checks=$((checks + 1))
  run_qtk prune "$MLP" -o "$P/resumed.onnx" "${PRUNE_ARGS[@]}" --resume --json
  [ "$rc" -eq 0 ] || fail "prune --resume: exit $rc, stderr: $(cat "$TMP/err")"
  grep -q "resuming from .*after epoch 1" "$TMP/err" || fail "prune --resume does not say where it resumes: $(cat "$TMP/err")"
  cmp -s "$P/straight.onnx" "$P/resumed.onnx" || fail "stopped and resumed pruning differs from the straight run"
  [ -e "$P/resumed.onnx.checkpoint" ] && fail "prune left its checkpoint after resuming"
fi
expect_error "prune: --stop-after without fine-tuning" 2 "pruning fine-tune" prune "$MLP" -o "$P/y.onnx" \
  --sparsity 0.5 --stop-after 1

echo "cli_test: $checks checks, $failures failed"
[ "$failures" -eq 0 ]
