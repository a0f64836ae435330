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

# write_npy FILE DESCR SHAPE_CSV: an .npy of that dtype ('<f4', '<f8') and
# shape, filled with a deterministic ramp in [0,1).
write_npy() {
  node -e '
    const [file, descr, shapeCsv] = process.argv.slice(1);
    const shape = shapeCsv.split(",").map(Number);
    const n = shape.reduce((a, b) => a * b, 1);
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
      const v = (i % 97) / 97;
      if (size === 8) data.writeDoubleLE(v, i * 8); else data.writeFloatLE(v, i * 4);
    }
    require("fs").writeFileSync(file, Buffer.concat([head, Buffer.from(dict, "latin1"), data]));
  ' "$1" "$2" "$3"
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
for cmd in inspect run eval; do
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
for cmd in inspect run eval; do
  extra=()
  [ "$cmd" = run ] && extra=(--input "$TMP/x.npy")
  [ "$cmd" = eval ] && extra=(--data fashion-mnist:test --limit 10)
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

echo "cli_test: $checks checks, $failures failed"
[ "$failures" -eq 0 ]
