#!/usr/bin/env bash
# qtk's main job on a built-in default: evaluate the bundled Fashion-MNIST CNN
# and print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build/qtk inspect models/cnn.onnx
build/qtk eval models/cnn.onnx --data fashion-mnist:test
