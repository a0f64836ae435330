#!/usr/bin/env bash
# qtk's main job on a built-in default: quantize the bundled Fashion-MNIST CNN
# (models/fmnist_small.onnx, trained by models/train_default.py) to int8 (calibrated on 512 training images) and print the before/after
# report: size on disk, per-tensor schemes and SQNR, accuracy and speed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build/qtk quantize models/fmnist_small.onnx -o build/fmnist_small.int8.onnx --force --threads 2 --eval fashion-mnist:test
