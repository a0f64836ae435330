#!/usr/bin/env bash
# Installs what qtk needs on a fresh Debian 12 machine and builds it into build/.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
PKGS="cmake g++ libonnx-dev libprotobuf-dev protobuf-compiler zlib1g-dev libgtest-dev libgmock-dev \
libbenchmark-dev dataset-fashion-mnist libonnx-testdata ccache"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing:$missing" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
fi

command -v node >/dev/null 2>&1 || echo "warning: node not found; the ONNX Runtime agreement tests need Node.js and npm" >&2

BUILD_TYPE="${QTK_BUILD_TYPE:-Release}"
cmake -S . -B build -DCMAKE_BUILD_TYPE="$BUILD_TYPE" ${QTK_CMAKE_ARGS:-} >&2
cmake --build build -j"$(nproc)" >&2
