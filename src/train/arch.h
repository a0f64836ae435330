// Built-in architectures as qtk IR models, freshly initialised, for
// `qtk train --arch`: "mlp:784,128,10" (Gemm + Relu layers), "cnn-small"
// (two Conv-BN-Relu-MaxPool stages and two Gemm layers), "resnet20"
// (CIFAR-style ResNet-20, 3 stages of 3 basic blocks, 16/32/64 channels).
// Input "input" is float32 [batch, 784] for mlp (the first size) and
// [batch, 1, 28, 28] otherwise; output "logits" [batch, classes].
#pragma once

#include <cstdint>
#include <string>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::train {

// classes applies to cnn-small and resnet20 (mlp's last size is its output).
Expected<ir::Model> build_architecture(const std::string& spec, uint64_t seed, int64_t classes = 10);

// The specs build_architecture understands, for help texts.
const char* architecture_help();

}  // namespace qtk::train
