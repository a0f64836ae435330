// Checkpoints and --resume: the optimizer's buffers round-trip, a
// checkpoint file carries the whole training state and strips back to the
// plain model, and a run interrupted after epoch k and resumed from its
// checkpoint ends bit for bit where the uninterrupted run ends (single
// thread, same seed) — with BatchNorm statistics, augmentation and either
// optimizer; dropping any part of the state breaks that.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include <unistd.h>

#include "qtk/model.h"
#include "train/arch.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/train_graph.h"
#include "train/trainer.h"
#include "test_models.h"

namespace qtk::train {
namespace {

namespace fs = std::filesystem;

// n images 1x28x28 of 4 classes: class c brightens one quadrant, plus noise.
data::Dataset quadrant_images(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(0.f, 0.5f);
  data::Dataset ds;
  ds.num_classes = 4;
  ds.class_names = {"a", "b", "c", "d"};
  ds.images = Tensor(DType::kFloat32, {n, 1, 28, 28});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i % 4;
    ds.labels.push_back(c);
    for (int64_t y = 0; y < 28; ++y)
      for (int64_t x = 0; x < 28; ++x)
        ds.images.data<float>()[(i * 28 + y) * 28 + x] = u(g) + ((y < 14) == (c < 2) && (x < 14) == (c % 2 == 0));
  }
  return ds;
}

// Every parameter and running statistic equal bit for bit.
void expect_same_state(const TrainGraph& a, const TrainGraph& b) {
  const auto sa = a.snapshot(), sb = b.snapshot();
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, t] : sa) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(sb.count(name));
    ASSERT_EQ(t.nbytes(), sb.at(name).nbytes());
    EXPECT_EQ(std::memcmp(t.raw(), sb.at(name).raw(), t.nbytes()), 0);
  }
}

bool same_state(const TrainGraph& a, const TrainGraph& b) {
  for (const auto& [name, t] : a.snapshot()) {
    const auto sb = b.snapshot();
    if (std::memcmp(t.raw(), sb.at(name).raw(), t.nbytes()) != 0) return false;
  }
  return true;
}

struct ResumeCase {
  std::string arch;
  OptimizerKind optimizer;
  bool augment;
  int64_t epochs, interrupt_after;
};

void PrintTo(const ResumeCase& c, std::ostream* os) {
  *os << c.arch << (c.optimizer == OptimizerKind::kSgd ? " sgd" : " adamw") << (c.augment ? " augment" : "") << ", "
      << c.epochs << " epochs, interrupted after " << c.interrupt_after;
}

class Resume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(Resume, InterruptedAndResumedRunEqualsStraightRun) {
  const ResumeCase& c = GetParam();
  const bool images = c.arch != "mlp:6,16,3";
  const data::Dataset ds = images ? quadrant_images(40, 3) : testing::blobs(60, 6, 1);
  auto m = build_architecture(c.arch, 7, ds.num_classes);
  ASSERT_TRUE(m.ok()) << m.status().message();
  TrainOptions o;
  o.epochs = c.epochs;
  o.batch = 16;  // a short last batch too
  o.lr = c.optimizer == OptimizerKind::kSgd ? 0.02f : 2e-3f;
  o.optimizer.kind = c.optimizer;
  o.optimizer.weight_decay = 0.01f;
  o.schedule = ScheduleKind::kOneCycle;
  o.augment = c.augment;
  o.seed = 11;

  // The straight run; its checkpoint after epoch k is what an interrupted
  // run leaves behind.
  const fs::path file = fs::temp_directory_path() /
                        ("qtk_resume_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
                         std::to_string(reinterpret_cast<uintptr_t>(&c)) + ".onnx");
  auto straight = TrainGraph::create(*m);
  ASSERT_TRUE(straight.ok()) << straight.status().message();
  TrainOptions so = o;
  int checkpoints = 0;
  so.on_checkpoint = [&](const TrainState& s) {
    ++checkpoints;
    EXPECT_EQ(s.epoch, checkpoints);
    if (s.epoch == c.interrupt_after) ASSERT_TRUE(save_checkpoint(*straight, s, file.string()).ok());
  };
  auto r1 = train_classifier(*straight, ds, nullptr, so);
  ASSERT_TRUE(r1.ok()) << r1.status().message();
  ASSERT_FALSE(r1->diverged);
  EXPECT_EQ(checkpoints, c.epochs);

  auto loaded = load_model(file.string());
  fs::remove(file);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  auto state = take_train_state(*loaded);
  ASSERT_TRUE(state.ok()) << state.status().message();
  ASSERT_TRUE(state->has_value());
  const TrainState s = **state;
  EXPECT_EQ(s.epoch, c.interrupt_after);
  EXPECT_EQ(s.step, c.interrupt_after * ((static_cast<int64_t>(ds.labels.size()) + 15) / 16));
  EXPECT_FALSE(s.optimizer.m.empty());
  EXPECT_EQ(s.optimizer.v.empty(), c.optimizer == OptimizerKind::kSgd);

  double last_loss = 0;
  auto resume_from = [&](const TrainState& st) {
    auto g = TrainGraph::create(*loaded);
    EXPECT_TRUE(g.ok()) << g.status().message();
    TrainOptions ro = o;
    ro.resume = &st;
    auto r2 = train_classifier(*g, ds, nullptr, ro);
    EXPECT_TRUE(r2.ok()) << r2.status().message();
    if (r2.ok()) {
      EXPECT_EQ(r2->epochs.size(), static_cast<size_t>(c.epochs - c.interrupt_after));
      EXPECT_EQ(r2->epochs.front().epoch, c.interrupt_after + 1);
      last_loss = r2->epochs.back().loss;
    }
    return std::move(*g);
  };
  TrainGraph resumed = resume_from(s);
  expect_same_state(*straight, resumed);
  EXPECT_EQ(last_loss, r1->epochs.back().loss);  // the epoch statistics continue too

  // Each part of the state matters: without it the runs part ways.
  TrainState fresh_rng = s;
  fresh_rng.rng = 12345;
  EXPECT_FALSE(same_state(*straight, resume_from(fresh_rng))) << "the shuffling state made no difference";
  TrainState fresh_moments = s;
  for (auto& [name, b] : fresh_moments.optimizer.m) std::fill(b.begin(), b.end(), 0.f);
  EXPECT_FALSE(same_state(*straight, resume_from(fresh_moments))) << "the optimizer buffers made no difference";
}

INSTANTIATE_TEST_SUITE_P(
    TrainCheckpoint, Resume,
    ::testing::Values(ResumeCase{"mlp:6,16,3", OptimizerKind::kAdamW, false, 4, 1},
                      ResumeCase{"mlp:6,16,3", OptimizerKind::kSgd, false, 4, 3},
                      ResumeCase{"cnn-small", OptimizerKind::kAdamW, true, 3, 2},
                      ResumeCase{"cnn-small", OptimizerKind::kSgd, true, 3, 1}),
    [](const auto& info) {
      std::string n = info.param.arch.substr(0, 3) + (info.param.optimizer == OptimizerKind::kSgd ? "Sgd" : "AdamW") +
                      (info.param.augment ? "Augment" : "");
      return n;
    });

TEST(TrainCheckpoint, OptimizerStateRoundTripsAndContinuesIdentically) {
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdamW}) {
    OptimizerConfig cfg;
    cfg.kind = kind;
    cfg.weight_decay = 0.05f;
    std::vector<Param> a(2);
    a[0].name = "w";
    a[0].value = testing::uniform_tensor({3, 4}, 1, -1.f, 1.f);
    a[1].name = "b";
    a[1].value = testing::uniform_tensor({4}, 2, -1.f, 1.f);
    a[1].decay = false;
    for (auto& p : a) p.grad = Tensor(DType::kFloat32, p.value.shape());
    auto set_grads = [](std::vector<Param>& ps, uint32_t seed) {
      for (auto& p : ps) p.grad = testing::uniform_tensor(p.value.shape(), seed++, -1.f, 1.f);
    };
    Optimizer opt(cfg);
    EXPECT_TRUE(opt.state(a).m.empty());  // nothing before the first step
    for (uint32_t s = 0; s < 3; ++s) {
      set_grads(a, 10 * s);
      opt.step(a, 0.1f);
    }
    const OptimizerState st = opt.state(a);
    EXPECT_EQ(opt.steps(), 3);
    EXPECT_EQ(st.m.size(), 2u);
    EXPECT_EQ(st.v.size(), kind == OptimizerKind::kAdamW ? 2u : 0u);
    std::vector<Param> b = a;
    for (auto& p : b) p.value = p.value.clone();
    Optimizer restored(cfg);
    ASSERT_TRUE(restored.restore(st, b, 3).ok());
    EXPECT_EQ(restored.steps(), 3);
    for (uint32_t s = 3; s < 5; ++s) {
      set_grads(a, 10 * s);
      set_grads(b, 10 * s);
      opt.step(a, 0.1f);
      restored.step(b, 0.1f);
    }
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_EQ(std::memcmp(a[i].value.raw(), b[i].value.raw(), a[i].value.nbytes()), 0) << a[i].name;

    // Mismatches are errors naming what is wrong.
    OptimizerConfig other = cfg;
    other.kind = kind == OptimizerKind::kSgd ? OptimizerKind::kAdamW : OptimizerKind::kSgd;
    Optimizer wrong_kind(other);
    Status s = wrong_kind.restore(st, b, 3);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("optimizer state is for"), std::string::npos) << s.message();
    std::vector<Param> renamed = b;
    renamed[1].name = "bias";
    s = Optimizer(cfg).restore(st, renamed, 3);
    EXPECT_NE(s.message().find("'bias'"), std::string::npos) << s.message();
    std::vector<Param> resized = b;
    resized[1].value = Tensor(DType::kFloat32, {5});
    s = Optimizer(cfg).restore(st, resized, 3);
    EXPECT_NE(s.message().find("parameter 'b' has 4 values"), std::string::npos) << s.message();
  }
}

TEST(TrainCheckpoint, CheckpointModelStripsBackToThePlainModel) {
  auto m = build_architecture("mlp:6,16,3", 1);
  auto tg = TrainGraph::create(*m);
  ASSERT_TRUE(tg.ok());
  TrainState s;
  s.epoch = 2;
  s.step = 14;
  s.rng = 0xFEDCBA9876543210ull;  // above INT64_MAX: stored unsigned
  s.optimizer.kind = OptimizerKind::kAdamW;
  for (const auto& p : tg->params()) {
    s.optimizer.m[p.name] = std::vector<float>(static_cast<size_t>(p.value.numel()), 0.25f);
    s.optimizer.v[p.name] = std::vector<float>(static_cast<size_t>(p.value.numel()), 1e-40f);  // denormal
  }
  ir::Model ck = checkpoint_model(*tg, s);
  EXPECT_EQ(ck.graph.initializers.size(), m->graph.initializers.size() + 2 * tg->params().size());
  auto back = take_train_state(ck);
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ((*back)->epoch, 2);
  EXPECT_EQ((*back)->step, 14);
  EXPECT_EQ((*back)->rng, s.rng);
  EXPECT_EQ((*back)->optimizer.m, s.optimizer.m);
  EXPECT_EQ((*back)->optimizer.v, s.optimizer.v);
  EXPECT_EQ(ck.graph.initializer_order, tg->to_model().graph.initializer_order);
  for (const auto& [k, v] : ck.metadata) EXPECT_NE(k.rfind("qtk.train.", 0), 0u) << k;
  // A plain model holds no state; a partial one is an error.
  auto none = take_train_state(*m);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ir::Model partial = checkpoint_model(*tg, s);
  std::erase_if(partial.metadata, [](const auto& kv) { return kv.first == "qtk.train.rng"; });
  auto bad = take_train_state(partial);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("qtk.train.rng"), std::string::npos) << bad.status().message();
}

// restore_weights: a graph rebuilt from the same model takes a checkpoint's
// weights; one with other parameters is refused, naming the parameter.
TEST(TrainCheckpoint, RestoreWeightsIntoARebuiltGraph) {
  auto m = build_architecture("mlp:6,16,3", 1);
  auto trained = TrainGraph::create(*m);
  auto rebuilt = TrainGraph::create(*m);
  ASSERT_TRUE(trained.ok() && rebuilt.ok());
  for (const auto& [name, t] : trained->snapshot()) {  // move every weight away from the start
    Tensor moved = t.clone();
    for (int64_t i = 0; i < moved.numel(); ++i) moved.data<float>()[i] += 0.5f + static_cast<float>(i);
    trained->restore({{name, moved}});
  }
  ASSERT_FALSE(same_state(*trained, *rebuilt));
  TrainState s;
  const ir::Model ck = checkpoint_model(*trained, s);
  ASSERT_TRUE(restore_weights(*rebuilt, ck).ok());
  expect_same_state(*trained, *rebuilt);

  auto other = TrainGraph::create(*build_architecture("mlp:6,8,3", 1));  // same names, other shapes
  ASSERT_TRUE(other.ok());
  const Status st = restore_weights(*other, ck);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("is float32 [16], the model's float32 [8]"), std::string::npos) << st.message();
  ir::Model missing = ck;
  const std::string first = trained->params().front().name;
  missing.graph.remove_initializer(first);
  const Status lacks = restore_weights(*rebuilt, missing);
  ASSERT_FALSE(lacks.ok());
  EXPECT_NE(lacks.message().find("lacks the parameter '" + first + "'"), std::string::npos) << lacks.message();
}

// load_resume_checkpoint: the run key and the epochs left decide; each
// refusal says why.
TEST(TrainCheckpoint, ResumeCheckpointMustBeThisRunsWithAnEpochLeft) {
  auto m = build_architecture("mlp:6,16,3", 1);
  auto tg = TrainGraph::create(*m);
  ASSERT_TRUE(tg.ok());
  TrainState s;
  s.epoch = 2;
  s.step = 8;
  const fs::path file = fs::temp_directory_path() / ("qtk_resume_ck_" + std::to_string(::getpid()) + ".onnx");
  ASSERT_TRUE(save_checkpoint(*tg, s, file.string(), {"test.run", "a b"}).ok());
  auto ok = load_resume_checkpoint(file.string(), "test", {"test.run", "a b"}, 3, 0);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->state.epoch, 2);
  EXPECT_EQ(ok->state.step, 8);
  EXPECT_TRUE(restore_weights(*tg, ok->model).ok());
  auto why = [&](const std::string& key_name, const std::string& key, int64_t epochs, int64_t stop_after) {
    auto r = load_resume_checkpoint(file.string(), "test", {key_name, key}, epochs, stop_after);
    return r.ok() ? std::string("accepted") : r.status().message();
  };
  EXPECT_NE(why("test.run", "a c", 3, 0).find("another run ('a b')"), std::string::npos);
  EXPECT_NE(why("other.run", "a b", 3, 0).find("is not a test checkpoint"), std::string::npos);
  EXPECT_NE(why("test.run", "a b", 2, 0).find("already holds 2 epochs of the 2"), std::string::npos);
  EXPECT_NE(why("test.run", "a b", 5, 2).find("--stop-after 2 is not after epoch 2"), std::string::npos);
  EXPECT_EQ(why("test.run", "a b", 5, 3), "accepted");
  fs::remove(file);
  EXPECT_NE(why("test.run", "a b", 3, 0).find("no checkpoint"), std::string::npos);
}

TEST(TrainCheckpoint, ResumeWithAnotherBatchSizeOrOptimizerIsAnError) {
  auto m = build_architecture("mlp:6,16,3", 1);
  const data::Dataset ds = testing::blobs(60, 6, 1);
  auto tg = TrainGraph::create(*m);
  TrainOptions o;
  o.epochs = 3;
  o.batch = 10;
  std::optional<TrainState> after1;
  o.on_checkpoint = [&](const TrainState& s) {
    if (s.epoch == 1) after1 = s;
  };
  ASSERT_TRUE(train_classifier(*tg, ds, nullptr, o).ok());
  ASSERT_TRUE(after1);
  TrainOptions ro = o;
  ro.on_checkpoint = nullptr;
  ro.resume = &*after1;
  ro.batch = 20;
  auto g = TrainGraph::create(*m);
  auto r = train_classifier(*g, ds, nullptr, ro);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("6 steps in 1 epochs; this run takes 3 per epoch"), std::string::npos)
      << r.status().message();
  ro.batch = 10;
  ro.optimizer.kind = OptimizerKind::kSgd;
  r = train_classifier(*g, ds, nullptr, ro);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("optimizer state is for adamw, not sgd"), std::string::npos)
      << r.status().message();
  ro.optimizer.kind = OptimizerKind::kAdamW;
  ro.epochs = 1;
  r = train_classifier(*g, ds, nullptr, ro);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cannot resume after epoch 1"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace qtk::train
