#!/usr/bin/env bash
# Sets up, builds and runs every test (unit, CLI, ONNX conformance, ONNX Runtime agreement).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build && ctest --output-on-failure -j"$(nproc)" "$@"
