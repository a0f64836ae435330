#include "train/checkpoint.h"

#include <cerrno>
#include <cstdlib>
#include <filesystem>

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

Status save_checkpoint(const TrainGraph& graph, const TrainState& state, const std::string& path,
                       const std::pair<std::string, std::string>& run_key) {
  ir::Model m = checkpoint_model(graph, state);
  if (!run_key.first.empty()) m.metadata.push_back(run_key);
  return save_model(m, path);
}

Expected<ResumeCheckpoint> load_resume_checkpoint(const std::string& path, const std::string& command,
                                                  const std::pair<std::string, std::string>& run_key, int64_t epochs,
                                                  int64_t stop_after) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return not_found("--resume: no checkpoint " + path + " (it is written after each epoch)");
  QTK_ASSIGN_OR_RETURN(ir::Model m, load_model(path));
  std::string key;
  for (const auto& [k, v] : m.metadata)
    if (k == run_key.first) key = v;
  if (key.empty()) return invalid_argument(path + " is not a " + command + " checkpoint");
  if (key != run_key.second)
    return invalid_argument(path + " was written by another run ('" + key +
                            "'); resume with the same options and files");
  auto state = take_train_state(m);
  if (!state.ok()) return state.status().with_context(path);
  if (!*state) return invalid_argument(path + " holds no training state");
  const int64_t done = (*state)->epoch;
  if (done >= epochs)
    return invalid_argument(path + " already holds " + std::to_string(done) + " epochs of the " +
                            std::to_string(epochs) + " asked for");
  if (stop_after > 0 && stop_after <= done)
    return invalid_argument("--stop-after " + std::to_string(stop_after) + " is not after epoch " +
                            std::to_string(done) + ", where " + path + " ends");
  return ResumeCheckpoint{std::move(m), std::move(**state)};
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
