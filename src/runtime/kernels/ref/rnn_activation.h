// The activation functions of the ONNX recurrent ops (LSTM, GRU, RNN), named
// by the `activations` attribute and parameterised by `activation_alpha` /
// `activation_beta`.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::rt::ref {

struct RnnActivation {
  enum class Kind { kSigmoid, kTanh, kRelu, kHardSigmoid, kLeakyRelu, kThresholdedRelu, kAffine, kScaledTanh, kElu,
                    kSoftsign, kSoftplus };
  Kind kind = Kind::kTanh;
  double alpha = 0;
  double beta = 0;

  double operator()(double x) const;
};

// Parses the activations of `node`: `per_direction` functions for each of
// `num_directions` directions, `defaults` when the attribute is absent. A list
// with one direction's worth of names is used for both directions. Alphas and
// betas are consumed in order by the functions that take them; a function
// left without one uses the default of the ONNX op of the same name.
Expected<std::vector<RnnActivation>> parse_rnn_activations(const ir::Node& node, int per_direction,
                                                           int num_directions,
                                                           const std::vector<std::string>& defaults);

}  // namespace qtk::rt::ref
