#!/usr/bin/env sh
# Makes ONNX Runtime for Node.js usable from tests/ort: installs
# onnxruntime-node (pinned in package.json / package-lock.json) when
# node_modules is missing, then checks the native binding loads.
# ONNXRUNTIME_NODE_INSTALL=skip stops its postinstall script from fetching
# GPU provider binaries; the CPU binding ships inside the npm package.
# usage: setup_ort.sh [NODE] [NPM]
set -eu
cd "$(dirname "$0")"
NODE="${1:-node}"
NPM="${2:-npm}"
if [ ! -d node_modules/onnxruntime-node ]; then
  echo "installing onnxruntime-node into $(pwd)/node_modules" >&2
  if [ -f package-lock.json ]; then
    ONNXRUNTIME_NODE_INSTALL=skip "$NPM" ci --no-audit --no-fund >&2
  else
    ONNXRUNTIME_NODE_INSTALL=skip "$NPM" install --no-audit --no-fund >&2
  fi
fi
"$NODE" -e "const ort = require('onnxruntime-node'); console.log('onnxruntime-node ' + ort.env.versions.node + ' loads')"
