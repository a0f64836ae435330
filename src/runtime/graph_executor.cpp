#include "runtime/graph_executor.h"

#include <algorithm>
#include <chrono>
#include <new>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>
#include <unordered_map>

#include <sys/mman.h>

#include "core/alloc_hook.h"
#include "runtime/memory_plan.h"
#include "runtime/op_registry.h"

#if defined(__SANITIZE_ADDRESS__)
#define QTK_EXECUTOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QTK_EXECUTOR_ASAN 1
#endif
#endif
#if defined(QTK_EXECUTOR_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace qtk::rt {

namespace {

// Smaller values stay with malloc, which serves them without page faults.
constexpr size_t kMinPlannedBytes = 4096;
// Plans kept per executor (input shapes seen), and plans made at most before
// planning gives up on a graph whose sizes never settle.
constexpr size_t kMaxPlans = 4;
constexpr int kMaxPlansMade = 16;

size_t padded_bytes(size_t n) { return std::max<size_t>((n + 63) / 64 * 64, 64); }

// Sanitizer builds poison the arena bytes no value owns, so a kernel that
// reads or writes past its planned buffer, or a value used after its
// release, is reported as it would be on the heap.
void poison(const void* p, size_t n) {
#if defined(QTK_EXECUTOR_ASAN)
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}
void unpoison(const void* p, size_t n) {
#if defined(QTK_EXECUTOR_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  (void)p, (void)n;
#endif
}

class SlotScope final : public Scope {
 public:
  SlotScope(const std::unordered_map<std::string, int>& slots, const std::vector<Tensor>& values, const Scope* parent)
      : slots_(slots), values_(values), parent_(parent) {}
  const Tensor* lookup(const std::string& name) const override {
    auto it = slots_.find(name);
    if (it != slots_.end() && values_[it->second].defined()) return &values_[it->second];
    return parent_ ? parent_->lookup(name) : nullptr;
  }

 private:
  const std::unordered_map<std::string, int>& slots_;
  const std::vector<Tensor>& values_;
  const Scope* parent_;
};

// Constants smaller than this stay: a page or less is not worth a mapping.
constexpr size_t kMinReleasedBytes = 4096;

// A tensor of t's dtype and shape whose bytes are an inaccessible mapping:
// no memory behind it, and a read of its data faults at once (a kernel that
// let its constant go and reads it anyway is a bug to see, not to survive).
// Undefined when no mapping could be made.
Tensor inaccessible_like(const Tensor& t) {
  class MappingHook final : public core::AllocationHook {
   public:
    explicit MappingHook(std::shared_ptr<std::byte[]> block) : block_(std::move(block)) {}
    std::shared_ptr<std::byte[]> allocate(size_t) override { return std::exchange(block_, nullptr); }

   private:
    std::shared_ptr<std::byte[]> block_;
  };
  const size_t bytes = t.nbytes();
  void* p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Tensor();
  MappingHook hook(std::shared_ptr<std::byte[]>(static_cast<std::byte*>(p), [bytes](std::byte* q) { munmap(q, bytes); }));
  core::ScopedAllocationHook scoped(&hook);
  // An empty tensor takes the mapping as its storage (nothing is written to
  // it), then gets t's shape.
  return Tensor::uninitialized(t.dtype(), {0}).reshaped(t.shape());
}

// Which initializers the graph may free during its build: those whose every
// read is by a kernel that packed it and let it go (KernelInit::release_constant),
// that no graph output, graph input of the same name or subgraph reads.
class ConstantReleases {
 public:
  ConstantReleases(const ir::Graph& g, const std::vector<std::string>& outer_names) {
    for (const auto& [name, t] : g.initializers) uses_[std::string_view(name)];
    for (const auto& v : g.inputs)  // a feed may replace it: not a constant of the session's life
      if (auto it = uses_.find(v.name); it != uses_.end()) it->second.fixed = false;
    for (const auto& o : g.outputs) pin(o.name);
    for (const auto& n : outer_names) pin(n);  // never an initializer here, but be safe
    for (const auto& n : g.nodes) {
      for (const auto& in : n.inputs)
        if (auto it = uses_.find(in); it != uses_.end()) ++it->second.reads_left;
      for (const auto& a : n.attrs) {
        std::vector<std::shared_ptr<ir::Graph>> subs = a.graphs;
        if (a.g) subs.push_back(a.g);
        for (const auto& sg : subs)
          for (const auto& fv : ir::free_variables(*sg)) pin(fv);
      }
    }
  }
  // The value named so is the same initializer on every run.
  bool fixed(const std::string& name) const {
    auto it = uses_.find(name);
    return it != uses_.end() && it->second.fixed;
  }
  // Whether `node`, reading it as input i, is the constant's last reader
  // and nothing else keeps it: node_built then frees it once the kernel lets
  // it go (KernelInit::consumable_constant).
  bool consumable(const ir::Node& node, size_t i, const ir::Graph& g) const {
    auto it = uses_.find(node.inputs[i]);
    if (it == uses_.end()) return false;
    const Use& u = it->second;
    const auto reads_here = std::count(node.inputs.begin(), node.inputs.end(), node.inputs[i]);
    if (!u.fixed || u.kept || reads_here != 1 || u.reads_left != 1) return false;
    const Tensor& t = g.initializers.at(node.inputs[i]);
    return t.sole_owner() && t.nbytes() >= kMinReleasedBytes;
  }
  // After `node`'s kernel is built, with the inputs it let go: frees each
  // constant whose last reader this was, if every reader let it go.
  void node_built(const ir::Node& node, const std::vector<std::pair<size_t, uint64_t>>& declared, ir::Graph& g,
                  uint64_t& released_bytes) {
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      auto it = uses_.find(node.inputs[i]);
      if (it == uses_.end()) continue;
      Use& u = it->second;
      --u.reads_left;
      const bool let_go = std::any_of(declared.begin(), declared.end(), [&](const auto& d) { return d.first == i; });
      if (!let_go) u.kept = true;
      if (u.reads_left > 0 || u.kept || !u.fixed) continue;
      Tensor& t = g.initializers.at(node.inputs[i]);
      if (t.nbytes() < kMinReleasedBytes) continue;
      Tensor stand_in = inaccessible_like(t);
      if (!stand_in.defined()) continue;
      const uint64_t freed = t.nbytes();
      released_bytes += freed;
      void* storage = t.sole_owner() ? const_cast<void*>(t.raw()) : nullptr;  // else the caller's graph holds it too
      // Its pages go now, not at the next trim: packed copies built later
      // would seldom fit in its place, so the build would hold both.
      if (storage) core::discard_pages(storage, freed);
      t = std::move(stand_in);
      // Freed for good: to the OS, not idle in the tensor block pool nor in
      // malloc's free lists (packed copies, a little larger than the
      // weights, would seldom fit there): the build's peak then holds the
      // weights about once, not the originals and the packed copies at once.
      if (storage) {
        core::free_idle_block(storage);
        // malloc_trim walks the heap: once per MiB let go, not per weight.
        untrimmed_ += freed;
        if (untrimmed_ >= (uint64_t{1} << 20)) {
          core::release_free_heap_pages();
          untrimmed_ = 0;
        }
      }
      u.kept = true;            // once
      released_.emplace_back(it->first);
    }
  }
  const std::vector<std::string>& released() const { return released_; }

 private:
  struct Use {
    int reads_left = 0;
    bool fixed = true;  // no feed replaces it
    bool kept = false;  // a reader needs its data, or something else does
  };
  void pin(const std::string& name) {
    if (auto it = uses_.find(name); it != uses_.end()) it->second.kept = true;
  }
  // Keyed by views of the graph's initializer names (the graph outlives
  // this), not copies.
  std::unordered_map<std::string_view, Use> uses_;
  std::vector<std::string> released_;
  uint64_t untrimmed_ = 0;  // bytes freed since the last malloc_trim
};
}  // namespace

// Where a run with given input shapes puts each step's large outputs.
struct GraphExecutor::MemoryPlan {
  std::vector<std::pair<DType, Shape>> feeds;  // the shapes it was recorded for
  size_t arena_bytes = 0;
  // Per step, per output: the offset of the buffer the output allocates
  // (own) and its size, or of the planned buffer it is a view of (view); -1
  // where none.
  struct StepPlan {
    std::vector<int64_t> own, view;
    std::vector<size_t> bytes;
  };
  std::vector<StepPlan> steps;
};

// The recording run: large blocks bypass the block pool (which would keep
// one block per size afterwards) and each step notes which it handed out, to
// tell fresh outputs from views. Blocks freed during the run are reused by
// later requests of any smaller size (glibc would mostly take new pages for
// them), and all go back to malloc when the run ends.
class GraphExecutor::RecordingHook final : public core::AllocationHook {
 public:
  std::vector<std::pair<const std::byte*, size_t>> fresh;  // this step's blocks

  RecordingHook() : idle_(std::make_shared<Idle>()) {}
  ~RecordingHook() {
    std::lock_guard<std::mutex> lk(idle_->mu);
    idle_->closed = true;  // blocks still held (outputs) are freed by their owners
    for (const auto& [capacity, p] : idle_->blocks) free_block(p);
    idle_->blocks.clear();
  }
  std::shared_ptr<std::byte[]> allocate(size_t bytes) override {
    if (bytes < kMinPlannedBytes) return nullptr;
    std::byte* p = nullptr;
    size_t capacity = bytes;
    {
      std::lock_guard<std::mutex> lk(idle_->mu);
      auto& idle = idle_->blocks;
      size_t best = idle.size();
      for (size_t i = 0; i < idle.size(); ++i)
        if (idle[i].first >= bytes && (best == idle.size() || idle[i].first < idle[best].first)) best = i;
      if (best != idle.size()) {
        std::tie(capacity, p) = idle[best];
        idle[best] = idle.back();
        idle.pop_back();
      }
    }
    if (p == nullptr) p = static_cast<std::byte*>(::operator new[](bytes, std::align_val_t(64)));
    fresh.emplace_back(p, bytes);
    return std::shared_ptr<std::byte[]>(p, [idle = idle_, capacity](std::byte* q) {
      std::lock_guard<std::mutex> lk(idle->mu);
      if (idle->closed) {
        free_block(q);
      } else {
        // Idle pages cost nothing until reused: the recording's peak is then
        // the blocks alive, as the plan's, not every block it ever made (a
        // block reused for a smaller value held its whole size).
        core::discard_pages(q, capacity);
        idle->blocks.emplace_back(capacity, q);
      }
    });
  }

 private:
  struct Idle {
    std::mutex mu;
    bool closed = false;
    std::vector<std::pair<size_t, std::byte*>> blocks;  // (capacity, block)
  };
  static void free_block(std::byte* p) { ::operator delete[](p, std::align_val_t(64)); }
  std::shared_ptr<Idle> idle_;
};

// A planned run: the step's outputs get their arena bytes, matched by size
// in output order. Each handed-out buffer keeps the arena alive, so a value
// still held after the run (a graph output that is a view, say) never sees
// its bytes reused.
class GraphExecutor::ArenaHook final : public core::AllocationHook {
 public:
  explicit ArenaHook(size_t bytes) : bytes_(bytes) {
    Tensor block = Tensor::uninitialized(DType::kUInt8, {static_cast<int64_t>(bytes)});
    base_ = static_cast<std::byte*>(block.raw());
    poison(base_, bytes_);
    // Unpoisoned before the block goes back to its allocator.
    arena_ = std::shared_ptr<std::byte[]>(base_, [block, n = bytes_](std::byte* p) { unpoison(p, n); });
  }
  void begin_step(const MemoryPlan::StepPlan* plan) {
    step_ = plan;
    claimed_.assign(plan ? plan->own.size() : 0, 0);
  }
  std::shared_ptr<std::byte[]> allocate(size_t bytes) override {
    if (stopped_ || step_ == nullptr) return nullptr;
    for (size_t o = 0; o < step_->own.size(); ++o) {
      if (claimed_[o] || step_->own[o] < 0 || step_->bytes[o] != bytes) continue;
      claimed_[o] = 1;
      std::byte* p = base_ + step_->own[o];
      unpoison(p, bytes);
      return std::shared_ptr<std::byte[]>(p, [keep = arena_, bytes](std::byte* q) { poison(q, bytes); });
    }
    return nullptr;
  }
  bool claimed(size_t o) const { return o < claimed_.size() && claimed_[o]; }
  bool contains(const void* p) const {
    auto* b = static_cast<const std::byte*>(p);
    return b >= base_ && b < base_ + bytes_;
  }
  const std::byte* base() const { return base_; }
  // After a step broke the plan: no more arena bytes this run, so nothing
  // already placed can be overwritten.
  void stop() { stopped_ = true; }
  bool stopped() const { return stopped_; }

 private:
  size_t bytes_;
  std::byte* base_ = nullptr;
  std::shared_ptr<std::byte[]> arena_;
  const MemoryPlan::StepPlan* step_ = nullptr;
  std::vector<char> claimed_;
  bool stopped_ = false;
};

int GraphExecutor::slot(const std::string& name) {
  auto [it, inserted] = slots_.emplace(name, static_cast<int>(slot_names_.size()));
  if (inserted) slot_names_.push_back(name);
  return it->second;
}

Expected<std::unique_ptr<GraphExecutor>> GraphExecutor::create(const ir::Graph& graph, const OpsetMap& opsets,
                                                               const std::vector<std::string>& outer_names,
                                                               const OpRegistry* registry_or_null, bool plan_memory,
                                                               bool release_constants) {
  // A shallow copy: the caller's graph keeps its initializers' storage alive.
  return create(ir::Graph(graph), opsets, outer_names, registry_or_null, plan_memory, release_constants);
}

Expected<std::unique_ptr<GraphExecutor>> GraphExecutor::create(ir::Graph&& graph, const OpsetMap& opsets,
                                                               const std::vector<std::string>& outer_names,
                                                               const OpRegistry* registry_or_null, bool plan_memory,
                                                               bool release_constants) {
  auto ex = std::unique_ptr<GraphExecutor>(new GraphExecutor());
  ex->planning_enabled_ = plan_memory;
  ir::Graph owned = std::move(graph);  // let go once the kernels are built (see the end)
  const ir::Graph& g = owned;

  // Per slot: the value is defined by this point of the build (a feed, an
  // initializer, an outer value or an earlier node's output). Flags, not a
  // second set of the names: the build's short-lived copies would fill the
  // holes the kernels' long-lived state could use.
  std::vector<char> defined;
  auto define = [&](int s) {
    if (static_cast<size_t>(s) >= defined.size()) defined.resize(static_cast<size_t>(s) + 1, 0);
    defined[static_cast<size_t>(s)] = 1;
  };
  auto is_defined = [&](const std::string& name) {
    auto it = ex->slots_.find(name);
    return it != ex->slots_.end() && static_cast<size_t>(it->second) < defined.size() && defined[it->second];
  };
  for (const auto& v : g.inputs) {
    ex->input_slots_.push_back(ex->slot(v.name));
    define(ex->input_slots_.back());
  }
  for (const auto& [name, t] : g.initializers) define(ex->slot(name));
  for (const auto& n : outer_names)
    if (!is_defined(n)) {
      ex->outer_slots_.push_back(ex->slot(n));
      define(ex->outer_slots_.back());
    }

  const OpRegistry& registry = registry_or_null ? *registry_or_null : OpRegistry::global();
  // Names visible inside subgraphs of this graph: the inputs, initializers
  // and outer values (sorted, once each), then every node output. Made on
  // the first subgraph only: most graphs have none.
  std::vector<std::string> visible;
  auto visible_names = [&]() -> const std::vector<std::string>& {
    if (!visible.empty()) return visible;
    std::set<std::string> start(outer_names.begin(), outer_names.end());
    for (const auto& v : g.inputs) start.insert(v.name);
    for (const auto& [name, t] : g.initializers) start.insert(name);
    visible.assign(start.begin(), start.end());
    for (const auto& n : g.nodes)
      for (const auto& o : n.outputs)
        if (!o.empty()) visible.push_back(o);
    return visible;
  };

  ConstantReleases releases(g, outer_names);

  for (const auto& node : g.nodes) {
    const int64_t opset = opsets.get(node.domain);
    const KernelFactory* factory = registry.find(node.domain, node.op_type, opset);
    if (!factory) {
      return unsupported(node.describe() + ": op '" + node.op_type + "' (domain '" +
                         (node.domain.empty() ? "ai.onnx" : node.domain) + "', opset " + std::to_string(opset) +
                         ") is not supported by qtk");
    }
    KernelInit init{node, opset,
                    [&opsets, &visible_names, &registry, plan_memory](const ir::Graph& sub) {
                      // A body's weights are shared with the parent's attribute: never freed.
                      return GraphExecutor::create(sub, opsets, visible_names(), &registry, plan_memory,
                                                   /*release_constants=*/false);
                    },
                    [&g, &node](size_t i) -> const Tensor* {
                      if (i >= node.inputs.size() || node.inputs[i].empty()) return nullptr;
                      auto it = g.initializers.find(node.inputs[i]);
                      return it == g.initializers.end() ? nullptr : &it->second;
                    },
                    nullptr};
    std::vector<std::pair<size_t, uint64_t>> declared;  // (input, packed bytes) the kernel let go
    if (release_constants) {
      init.release_constant = [&releases, &node, &declared](size_t i, uint64_t packed_bytes) {
        if (i >= node.inputs.size() || !releases.fixed(node.inputs[i])) return false;
        declared.emplace_back(i, packed_bytes);
        return true;
      };
      init.consumable_constant = [&releases, &node, &g](size_t i) -> void* {
        if (i >= node.inputs.size() || node.inputs[i].empty() || !releases.consumable(node, i, g)) return nullptr;
        return const_cast<void*>(g.initializers.at(node.inputs[i]).raw());
      };
    }
    auto kernel = (*factory)(init);
    if (!kernel.ok()) return kernel.status().with_context(node.describe());
    for (const auto& [i, packed_bytes] : declared) ex->packed_bytes_ += packed_bytes;
    // Constants this node was the last reader of go now, before the next
    // kernel packs its own: the build holds all weights once, not twice.
    releases.node_built(node, declared, owned, ex->released_bytes_);
    Step step{&node, std::move(kernel).value(), {}, {}, {}};
    for (const auto& in : node.inputs) {
      if (in.empty()) {
        step.inputs.push_back(-1);
        continue;
      }
      if (!is_defined(in))
        return invalid_argument(node.describe() + " reads tensor '" + in + "', which is not defined before it");
      step.inputs.push_back(ex->slot(in));
    }
    for (const auto& out : node.outputs) {
      step.outputs.push_back(out.empty() ? -1 : ex->slot(out));
      if (!out.empty()) define(step.outputs.back());
    }
    ex->steps_.push_back(std::move(step));
  }
  for (const auto& o : g.outputs) {
    if (!is_defined(o.name)) return invalid_argument("graph output '" + o.name + "' is never produced");
    ex->output_slots_.push_back(ex->slot(o.name));
  }

  ex->constants_.resize(ex->slot_names_.size());
  ex->released_.assign(ex->slot_names_.size(), 0);
  for (const auto& [name, t] : g.initializers) ex->constants_[ex->slots_.at(name)] = t;
  for (const auto& name : releases.released()) ex->released_[ex->slots_.at(name)] = 1;

  // Free each intermediate after its last reader (never inputs, constants or outputs).
  std::vector<int> last_reader(ex->slot_names_.size(), -1);
  bool has_subgraphs = false;
  for (size_t s = 0; s < ex->steps_.size(); ++s) {
    for (int i : ex->steps_[s].inputs)
      if (i >= 0) last_reader[i] = static_cast<int>(s);
    // Values read inside subgraphs stay alive until this step ends.
    for (const auto& a : ex->steps_[s].node->attrs) {
      std::vector<std::shared_ptr<ir::Graph>> subs = a.graphs;
      if (a.g) subs.push_back(a.g);
      has_subgraphs |= !subs.empty();
      for (const auto& sg : subs)
        for (const auto& fv : ir::free_variables(*sg)) {
          auto it = ex->slots_.find(fv);
          if (it != ex->slots_.end()) last_reader[it->second] = static_cast<int>(s);
        }
    }
  }
  std::set<int> keep(ex->output_slots_.begin(), ex->output_slots_.end());
  ex->last_use_.assign(last_reader.size(), static_cast<int>(ex->steps_.size()));
  for (int s = 0; s < static_cast<int>(last_reader.size()); ++s)
    if (last_reader[s] >= 0 && !keep.count(s) && !ex->constants_[s].defined()) {
      ex->steps_[last_reader[s]].release.push_back(s);
      ex->last_use_[s] = last_reader[s];
    }
  for (Step& step : ex->steps_) {
    step.reusable.assign(step.inputs.size(), 0);
    for (size_t i = 0; i < step.inputs.size(); ++i) {
      const int s = step.inputs[i];
      step.reusable[i] = s >= 0 && std::count(step.release.begin(), step.release.end(), s) == 1 &&
                         std::count(step.inputs.begin(), step.inputs.end(), s) == 1;
    }
  }

  // The kernels are built and keep what they parsed: of the graph, run()
  // reads only each step's name, op_type and domain (errors, profiles). The
  // rest (attributes, value names, initializer map, value infos; a few
  // hundred bytes a node) goes now, and the name map with it where no
  // subgraph looks values up (SlotScope).
  ex->nodes_.resize(ex->steps_.size());
  for (size_t s = 0; s < ex->steps_.size(); ++s) {
    ir::Node& from = owned.nodes[static_cast<size_t>(ex->steps_[s].node - owned.nodes.data())];
    ex->nodes_[s].name = std::move(from.name);
    ex->nodes_[s].op_type = std::move(from.op_type);
    ex->nodes_[s].domain = std::move(from.domain);
    ex->steps_[s].node = &ex->nodes_[s];
  }
  if (!has_subgraphs) std::unordered_map<std::string, int>().swap(ex->slots_);
  owned = ir::Graph();
  // The slot names in one block, not a few hundred small strings spread
  // among the graph's freed nodes, whose pages could then not go back to
  // the OS.
  for (int s : ex->outer_slots_) ex->outer_names_.push_back(ex->slot_names_[s]);
  size_t chars = 0;
  for (const auto& n : ex->slot_names_) chars += n.size();
  ex->slot_name_chars_.reserve(chars);
  ex->slot_name_ends_.reserve(ex->slot_names_.size());
  for (const auto& n : ex->slot_names_) {
    ex->slot_name_chars_ += n;
    ex->slot_name_ends_.push_back(static_cast<uint32_t>(ex->slot_name_chars_.size()));
  }
  std::vector<std::string>().swap(ex->slot_names_);
  ex->steps_.shrink_to_fit();
  return ex;
}

std::string GraphExecutor::slot_name(int s) const {
  const size_t begin = s == 0 ? 0 : slot_name_ends_[static_cast<size_t>(s) - 1];
  return slot_name_chars_.substr(begin, slot_name_ends_[static_cast<size_t>(s)] - begin);
}

uint64_t GraphExecutor::constant_bytes() const {
  std::set<const void*> seen;
  uint64_t total = packed_bytes_;
  for (size_t s = 0; s < constants_.size(); ++s)
    if (constants_[s].defined() && !released_[s] && seen.insert(constants_[s].raw()).second)
      total += constants_[s].nbytes();
  return total;
}

std::shared_ptr<const GraphExecutor::MemoryPlan> GraphExecutor::find_plan(const std::vector<Tensor>& feeds,
                                                                           bool& record) const {
  record = false;
  if (!planning_enabled_ || planning_failed_.load()) return nullptr;
  auto matches = [&](const MemoryPlan& p) {
    if (p.feeds.size() != feeds.size()) return false;
    for (size_t i = 0; i < feeds.size(); ++i)
      if (p.feeds[i].first != feeds[i].dtype() || p.feeds[i].second != feeds[i].shape()) return false;
    return true;
  };
  std::lock_guard<std::mutex> lk(plan_mu_);
  for (const auto& p : plans_)
    if (matches(*p)) return p;
  if (!recording_ && plans_made_.load() < kMaxPlansMade) record = recording_ = true;
  return nullptr;
}

void GraphExecutor::store_plan(std::shared_ptr<const MemoryPlan> plan) const {
  std::lock_guard<std::mutex> lk(plan_mu_);
  recording_ = false;
  if (!plan) return;
  if (plans_.size() >= kMaxPlans) plans_.erase(plans_.begin());
  plans_.push_back(std::move(plan));
  ++plans_made_;
}

std::vector<const ir::Node*> GraphExecutor::step_nodes() const {
  std::vector<const ir::Node*> nodes;
  for (const Step& step : steps_) nodes.push_back(step.node);
  return nodes;
}

Expected<std::vector<Tensor>> GraphExecutor::run(const std::vector<Tensor>& feeds, ThreadPool& pool,
                                                 const Scope* outer, MemoryStats* stats,
                                                 std::vector<uint64_t>* step_ns) const {
  if (step_ns) step_ns->resize(steps_.size(), 0);
  if (feeds.size() > input_slots_.size())
    return invalid_argument("graph takes " + std::to_string(input_slots_.size()) + " inputs, got " +
                            std::to_string(feeds.size()));
  // No hook of an enclosing step (If/Loop) reaches this graph's allocations.
  core::ScopedAllocationHook no_outer_hook(nullptr);
  std::vector<Tensor> values = constants_;
  for (size_t i = 0; i < feeds.size(); ++i)
    if (feeds[i].defined()) values[input_slots_[i]] = feeds[i];
  for (size_t i = 0; i < outer_slots_.size(); ++i) {
    const Tensor* t = outer ? outer->lookup(outer_names_[i]) : nullptr;
    if (t) values[outer_slots_[i]] = *t;
  }

  // This run either follows a plan for its input shapes, records one (the
  // first run with new shapes), or allocates as before.
  bool record = false;
  std::shared_ptr<const MemoryPlan> plan = find_plan(feeds, record);
  struct RecordGuard {  // an early return leaves no recording pending
    const GraphExecutor* ex;
    bool active;
    ~RecordGuard() {
      if (active) ex->store_plan(nullptr);
    }
  } record_guard{this, record};
  std::optional<ArenaHook> arena;
  std::optional<RecordingHook> recorder;
  core::AllocationHook* hook = nullptr;
  if (plan && plan->arena_bytes > 0) hook = &arena.emplace(plan->arena_bytes);
  else if (record) hook = &recorder.emplace();
  // Buffers a step allocated while recording, and which buffer each value uses.
  struct Buffer {
    size_t bytes;
    int first, last;
    bool escapes;  // a graph output uses it: never planned
  };
  std::vector<Buffer> buffers;
  std::vector<int> slot_buffer;
  std::unordered_map<const void*, int> buffer_at;
  std::vector<std::vector<int>> out_buffer;  // per step, per output: buffer index or -1
  std::vector<std::vector<char>> out_fresh;
  if (record) {
    slot_buffer.assign(values.size(), -1);
    out_buffer.resize(steps_.size());
    out_fresh.resize(steps_.size());
  }
  bool plan_stale = false;

  // Views that share storage (Reshape, Identity) count twice in `live`: an
  // upper bound. The largest pair skips a view of the largest value.
  uint64_t live = 0, peak = 0, pair = 0;
  std::vector<int> live_slots;
  auto note_live = [&]() {
    peak = std::max(peak, live);
    size_t a = 0, b = 0;
    const void* a_ptr = nullptr;
    for (int s : live_slots) {
      const size_t n = values[s].nbytes();
      const void* p = values[s].raw();
      if (n > a) {
        if (p != a_ptr) b = a;
        a = n;
        a_ptr = p;
      } else if (n > b && p != a_ptr) {
        b = n;
      }
    }
    pair = std::max<uint64_t>(pair, a + b);
  };
  for (int s : input_slots_)
    if (values[s].defined()) {
      live += values[s].nbytes();
      live_slots.push_back(s);
    }
  note_live();

  SlotScope scope(slots_, values, outer);
  KernelContext ctx;
  ctx.pool = &pool;
  ctx.scope = &scope;
  for (size_t si = 0; si < steps_.size(); ++si) {
    const Step& step = steps_[si];
    ctx.inputs.assign(step.inputs.size(), nullptr);
    for (size_t i = 0; i < step.inputs.size(); ++i) {
      int s = step.inputs[i];
      if (s < 0) continue;
      if (!values[s].defined())
        return invalid_argument(step.node->describe() + ": input '" + slot_name(s) + "' has no value");
      ctx.inputs[i] = &values[s];
    }
    ctx.outputs.assign(step.outputs.size(), Tensor());
    ctx.reusable.assign(step.reusable.begin(), step.reusable.end());
    if (arena) arena->begin_step(&plan->steps[si]);
    if (recorder) recorder->fresh.clear();
    {
      core::ScopedAllocationHook step_hook(hook);
      const auto t0 = step_ns ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      Status st = step.kernel->run(ctx);
      if (!st.ok()) return st.with_context(step.node->describe());
      if (step_ns)
        (*step_ns)[si] += static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    }
    for (size_t o = 0; o < step.outputs.size(); ++o) {
      if (step.outputs[o] < 0) continue;
      if (!ctx.outputs[o].defined())
        return internal_error(step.node->describe() + ": kernel produced no value for output " + std::to_string(o));
      live += ctx.outputs[o].nbytes();
      values[step.outputs[o]] = std::move(ctx.outputs[o]);
      live_slots.push_back(step.outputs[o]);
    }
    if (recorder) {
      out_buffer[si].assign(step.outputs.size(), -1);
      out_fresh[si].assign(step.outputs.size(), 0);
      for (size_t o = 0; o < step.outputs.size(); ++o) {
        const int os = step.outputs[o];
        if (os < 0) continue;
        const void* p = values[os].raw();
        auto fresh = std::find_if(recorder->fresh.begin(), recorder->fresh.end(),
                                  [&](const auto& f) { return f.first == p; });
        int b = -1;
        if (fresh != recorder->fresh.end()) {
          b = static_cast<int>(buffers.size());
          buffers.push_back({fresh->second, static_cast<int>(si), last_use_[os], false});
          buffer_at[p] = b;
          out_fresh[si][o] = 1;
          recorder->fresh.erase(fresh);  // another output with this storage is a view of this one
        } else if (auto it = buffer_at.find(p); p != nullptr && it != buffer_at.end()) {
          b = it->second;  // a view of a planned buffer: it lives as long as the view too
          buffers[b].last = std::max(buffers[b].last, last_use_[os]);
        }
        slot_buffer[os] = b;
        out_buffer[si][o] = b;
      }
    } else if (arena) {
      // The step must have used the plan as recorded: each buffer it claimed
      // holds the output it was planned for, and any other output in the
      // arena is the view the plan knows. Else stop placing (what is placed
      // stays valid) and plan no more.
      const MemoryPlan::StepPlan& sp = plan->steps[si];
      bool ok = true;
      for (size_t o = 0; o < step.outputs.size(); ++o) {
        if (step.outputs[o] < 0) continue;
        const Tensor& v = values[step.outputs[o]];
        const std::byte* p = static_cast<const std::byte*>(v.raw());
        if (arena->claimed(o) && p != arena->base() + sp.own[o]) ok = false;
        if (sp.own[o] >= 0 && !arena->claimed(o) && padded_bytes(v.nbytes()) != sp.bytes[o]) plan_stale = true;
        if (p != nullptr && arena->contains(p) && !(arena->claimed(o) && p == arena->base() + sp.own[o]) &&
            !(sp.view[o] >= 0 && p == arena->base() + sp.view[o]))
          ok = false;
      }
      if (!ok) {
        arena->stop();
        planning_failed_ = true;
      }
    }
    note_live();
    for (int s : step.release) {
      live -= std::min<uint64_t>(live, values[s].defined() ? values[s].nbytes() : 0);
      values[s] = Tensor();
      auto it = std::find(live_slots.begin(), live_slots.end(), s);
      if (it != live_slots.end()) {
        *it = live_slots.back();
        live_slots.pop_back();
      }
    }
  }
  if (stats) {
    stats->peak_live_bytes = std::max(stats->peak_live_bytes, peak);
    stats->largest_pair_bytes = std::max(stats->largest_pair_bytes, pair);
    // Only a run that followed its plan to the end reports the arena.
    if (arena && !arena->stopped()) stats->arena_bytes = std::max<uint64_t>(stats->arena_bytes, plan->arena_bytes);
  }
  if (plan_stale) {  // sizes differ from the recording (data-dependent shapes): record again
    std::lock_guard<std::mutex> lk(plan_mu_);
    std::erase(plans_, plan);
  }
  std::vector<Tensor> out;
  out.reserve(output_slots_.size());
  for (int s : output_slots_) out.push_back(values[s]);

  if (record) {
    // Buffers the caller gets back (graph outputs and their views) are not planned.
    for (int s : output_slots_)
      if (slot_buffer[s] >= 0) buffers[slot_buffer[s]].escapes = true;
    std::vector<int> planned_index(buffers.size(), -1);
    std::vector<LiveBlock> blocks;
    for (size_t b = 0; b < buffers.size(); ++b)
      if (!buffers[b].escapes) {
        planned_index[b] = static_cast<int>(blocks.size());
        blocks.push_back({buffers[b].bytes, buffers[b].first, buffers[b].last});
      }
    auto p = std::make_shared<MemoryPlan>();
    for (const Tensor& f : feeds) p->feeds.emplace_back(f.dtype(), f.shape());
    std::vector<size_t> offsets;
    p->arena_bytes = plan_block_offsets(blocks, offsets);
    p->steps.resize(steps_.size());
    for (size_t si = 0; si < steps_.size(); ++si) {
      auto& sp = p->steps[si];
      const size_t n = steps_[si].outputs.size();
      sp.own.assign(n, -1);
      sp.view.assign(n, -1);
      sp.bytes.assign(n, 0);
      for (size_t o = 0; o < n; ++o) {
        const int b = out_buffer[si].empty() ? -1 : out_buffer[si][o];
        if (b < 0 || planned_index[b] < 0) continue;
        const auto offset = static_cast<int64_t>(offsets[planned_index[b]]);
        if (out_fresh[si][o]) {
          sp.own[o] = offset;
          sp.bytes[o] = buffers[b].bytes;
        } else {
          sp.view[o] = offset;
        }
      }
    }
    record_guard.active = false;
    store_plan(std::move(p));  // an empty plan too: this graph has nothing to place
    // The recording's blocks go back to malloc, not the pool: return their pages.
    values.clear();
    recorder.reset();
    core::release_free_heap_pages();
  }
  return out;
}

}  // namespace qtk::rt
