#include "runtime/kernels/ref/rnn_activation.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace qtk::rt::ref {

double RnnActivation::operator()(double x) const {
  switch (kind) {
    case Kind::kSigmoid: return 1.0 / (1.0 + std::exp(-x));
    case Kind::kTanh: return std::tanh(x);
    case Kind::kRelu: return x > 0 ? x : 0.0;
    case Kind::kHardSigmoid: return std::clamp(alpha * x + beta, 0.0, 1.0);
    case Kind::kLeakyRelu: return x >= 0 ? x : alpha * x;
    case Kind::kThresholdedRelu: return x > alpha ? x : 0.0;
    case Kind::kAffine: return alpha * x + beta;
    case Kind::kScaledTanh: return alpha * std::tanh(beta * x);
    case Kind::kElu: return x >= 0 ? x : alpha * (std::exp(x) - 1.0);
    case Kind::kSoftsign: return x / (1.0 + std::fabs(x));
    case Kind::kSoftplus: return x > 30 ? x : std::log1p(std::exp(x));  // log(1 + e^x) without overflow
  }
  return x;
}

namespace {

struct ActivationSpec {
  const char* name;
  RnnActivation::Kind kind;
  bool takes_alpha, takes_beta;
  double default_alpha, default_beta;
};

// Defaults follow the ONNX ops of the same name (HardSigmoid 0.2/0.5,
// LeakyRelu 0.01, ThresholdedRelu 1, Elu 1); Affine and ScaledTanh have no op
// of their own and default to the identity scale (1, 0) and (1, 1).
constexpr ActivationSpec kSpecs[] = {
    {"sigmoid", RnnActivation::Kind::kSigmoid, false, false, 0, 0},
    {"tanh", RnnActivation::Kind::kTanh, false, false, 0, 0},
    {"relu", RnnActivation::Kind::kRelu, false, false, 0, 0},
    {"hardsigmoid", RnnActivation::Kind::kHardSigmoid, true, true, 0.2, 0.5},
    {"leakyrelu", RnnActivation::Kind::kLeakyRelu, true, false, 0.01, 0},
    {"thresholdedrelu", RnnActivation::Kind::kThresholdedRelu, true, false, 1.0, 0},
    {"affine", RnnActivation::Kind::kAffine, true, true, 1.0, 0.0},
    {"scaledtanh", RnnActivation::Kind::kScaledTanh, true, true, 1.0, 1.0},
    {"elu", RnnActivation::Kind::kElu, true, false, 1.0, 0},
    {"softsign", RnnActivation::Kind::kSoftsign, false, false, 0, 0},
    {"softplus", RnnActivation::Kind::kSoftplus, false, false, 0, 0},
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Expected<std::vector<RnnActivation>> parse_rnn_activations(const ir::Node& node, int per_direction,
                                                           int num_directions,
                                                           const std::vector<std::string>& defaults) {
  std::vector<std::string> names = defaults;
  if (const ir::Attribute* a = node.attr("activations"); a && !a->strings.empty()) names = a->strings;
  const size_t want = static_cast<size_t>(per_direction * num_directions);
  // One direction's list serves both directions of a bidirectional op.
  if (num_directions == 2 && names.size() == static_cast<size_t>(per_direction)) {
    const std::vector<std::string> one = names;
    names.insert(names.end(), one.begin(), one.end());
  }
  if (names.size() != want)
    return invalid_argument("activations lists " + std::to_string(names.size()) + " functions, expected " +
                            std::to_string(want));

  const std::vector<float> alphas = node.attr_floats("activation_alpha");
  const std::vector<float> betas = node.attr_floats("activation_beta");
  size_t ai = 0, bi = 0;
  std::vector<RnnActivation> out;
  for (const auto& name : names) {
    const std::string key = lower(name);
    const ActivationSpec* spec = nullptr;
    for (const auto& s : kSpecs)
      if (key == s.name) spec = &s;
    if (!spec) return unsupported("recurrent activation '" + name + "' is not supported");
    RnnActivation act;
    act.kind = spec->kind;
    act.alpha = spec->default_alpha;
    act.beta = spec->default_beta;
    if (spec->takes_alpha && ai < alphas.size()) act.alpha = alphas[ai++];
    if (spec->takes_beta && bi < betas.size()) act.beta = betas[bi++];
    out.push_back(act);
  }
  return out;
}

}  // namespace qtk::rt::ref
