#include "train/checkpoint.h"

#include <cerrno>
#include <cstdlib>

#include "qtk/model.h"

namespace qtk::train {
namespace {

constexpr const char* kPrefix = "qtk.train.";
constexpr const char* kEpoch = "qtk.train.epoch";
constexpr const char* kStep = "qtk.train.step";
constexpr const char* kRng = "qtk.train.rng";
constexpr const char* kOptimizer = "qtk.train.optimizer";
const std::string kMoment1 = "qtk.train.m/";
const std::string kMoment2 = "qtk.train.v/";

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

Expected<uint64_t> parse_u64(const std::string& key, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
    return invalid_argument("checkpoint metadata " + key + " = '" + v + "' is not a non-negative integer");
  return static_cast<uint64_t>(x);
}

}  // namespace

ir::Model checkpoint_model(const TrainGraph& graph, const TrainState& state) {
  ir::Model m = graph.to_model();
  std::erase_if(m.metadata, [](const auto& kv) { return starts_with(kv.first, kPrefix); });
  m.metadata.push_back({kEpoch, std::to_string(state.epoch)});
  m.metadata.push_back({kStep, std::to_string(state.step)});
  m.metadata.push_back({kRng, std::to_string(state.rng)});
  m.metadata.push_back({kOptimizer, state.optimizer.kind == OptimizerKind::kSgd ? "sgd" : "adamw"});
  auto add = [&](const std::string& prefix, const std::map<std::string, std::vector<float>>& buffers) {
    for (const auto& [name, b] : buffers)
      m.graph.set_initializer(prefix + name, Tensor::from_vector<float>({static_cast<int64_t>(b.size())}, b));
  };
  add(kMoment1, state.optimizer.m);
  add(kMoment2, state.optimizer.v);
  return m;
}

Status save_checkpoint(const TrainGraph& graph, const TrainState& state, const std::string& path) {
  return save_model(checkpoint_model(graph, state), path);
}

Expected<std::optional<TrainState>> take_train_state(ir::Model& model) {
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : model.metadata)
    if (starts_with(k, kPrefix)) meta[k] = v;
  std::vector<std::string> buffers;
  for (const auto& name : model.graph.initializer_order)
    if (starts_with(name, kMoment1) || starts_with(name, kMoment2)) buffers.push_back(name);
  if (meta.empty() && buffers.empty()) return std::optional<TrainState>{};

  TrainState s;
  for (const char* key : {kEpoch, kStep, kRng, kOptimizer})
    if (!meta.count(key)) return invalid_argument(std::string("checkpoint metadata lacks ") + key);
  QTK_ASSIGN_OR_RETURN(uint64_t epoch, parse_u64(kEpoch, meta[kEpoch]));
  QTK_ASSIGN_OR_RETURN(uint64_t step, parse_u64(kStep, meta[kStep]));
  QTK_ASSIGN_OR_RETURN(s.rng, parse_u64(kRng, meta[kRng]));
  if (epoch > INT64_MAX || step > INT64_MAX) return invalid_argument("checkpoint epoch or step count out of range");
  s.epoch = static_cast<int64_t>(epoch);
  s.step = static_cast<int64_t>(step);
  QTK_ASSIGN_OR_RETURN(s.optimizer.kind, parse_optimizer(meta[kOptimizer]));
  for (const auto& name : buffers) {
    const Tensor* t = model.graph.find_initializer(name);
    if (t->dtype() != DType::kFloat32)
      return invalid_argument("checkpoint optimizer buffer '" + name + "' is not float32");
    const bool first = starts_with(name, kMoment1);
    std::vector<float> b(t->data<float>(), t->data<float>() + t->numel());
    (first ? s.optimizer.m : s.optimizer.v)[name.substr((first ? kMoment1 : kMoment2).size())] = std::move(b);
    model.graph.remove_initializer(name);
  }
  std::erase_if(model.metadata, [](const auto& kv) { return starts_with(kv.first, kPrefix); });
  return std::optional<TrainState>(std::move(s));
}

Status restore_weights(TrainGraph& graph, const ir::Model& checkpoint) {
  std::map<std::string, Tensor> snap = graph.snapshot();
  for (auto& [name, t] : snap) {
    const Tensor* c = checkpoint.graph.find_initializer(name);
    if (c == nullptr) return invalid_argument("checkpoint lacks the parameter '" + name + "' (another model or scheme?)");
    if (c->dtype() != t.dtype() || c->shape() != t.shape())
      return invalid_argument("checkpoint parameter '" + name + "' is " + dtype_name(c->dtype()) + " " +
                              shape_to_string(c->shape()) + ", the model's " + dtype_name(t.dtype()) + " " +
                              shape_to_string(t.shape()) + " (another model or scheme?)");
    t = *c;
  }
  graph.restore(snap);
  return Status::Ok();
}

}  // namespace qtk::train
