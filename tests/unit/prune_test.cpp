// Pruning and weight clustering (src/compress): exact per-layer sparsity,
// the N:M pattern, channel pruning that really shrinks the model and keeps
// its function when the removed channels were dead, masks that survive
// fine-tuning, clustering to at most 2^bits values, and errors on bad input.
// Channel pruning through Flatten into Gemm equals masking the removed
// channels' input columns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "compress/channel_pruning.h"
#include "compress/gradual_pruning.h"
#include "compress/model_size.h"
#include "compress/prunable_weights.h"
#include "compress/weight_clustering.h"
#include "compress/weight_masks.h"
#include "qtk/model.h"
#include "qtk/session.h"
#include "train/arch.h"
#include "train/rng.h"
#include "train/trainer.h"

namespace qtk {
namespace {

using compress::MaskOptions;
using compress::PruneMethod;

ir::Model arch(const std::string& spec) {
  auto m = train::build_architecture(spec, 7);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return *m;
}

std::function<const Tensor*(const std::string&)> lookup(const ir::Model& m) {
  return [&m](const std::string& n) { return m.graph.find_initializer(n); };
}

int64_t zeros(const Tensor& t) { return t.numel() - compress::count_nonzero(t); }

Tensor random_images(int64_t n, uint64_t seed) {
  Tensor x(DType::kFloat32, {n, 1, 28, 28});
  train::Rng rng(seed);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>(rng.uniform());
  return x;
}

Tensor run(const ir::Model& m, const Tensor& x) {
  auto s = Session::create(m);
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!s.ok()) return {};
  auto out = (*s)->run(std::vector<Tensor>{x});
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? (*out)[0] : Tensor();
}

TEST(Prune, MagnitudeReachesExactSparsityPerLayer) {
  ir::Model m = arch("cnn-small");
  const ir::Model original = m;
  const auto layers = compress::prunable_weights(m.graph);
  ASSERT_EQ(layers.size(), 4u);  // conv1, conv2, fc1, fc2
  MaskOptions o;
  o.sparsity = 0.7;
  o.edge_sparsity = 0.3;
  auto masks = compress::make_masks(layers, lookup(m), o);
  ASSERT_TRUE(masks.ok()) << masks.status().message();
  ASSERT_TRUE(compress::apply_masks(m.graph, *masks).ok());
  for (size_t i = 0; i < layers.size(); ++i) {
    const Tensor& w = *m.graph.find_initializer(layers[i].name);
    const Tensor& w0 = *original.graph.find_initializer(layers[i].name);
    const double s = i == 0 || i + 1 == layers.size() ? 0.3 : 0.7;
    EXPECT_EQ(zeros(w), std::llround(s * static_cast<double>(w.numel()))) << layers[i].name;
    // The survivors are the largest magnitudes, unchanged.
    float max_pruned = 0, min_kept = 1e30f;
    for (int64_t j = 0; j < w.numel(); ++j) {
      const float a = std::fabs(w0.data<float>()[j]);
      if (w.data<float>()[j] == 0.f) max_pruned = std::max(max_pruned, a);
      else {
        min_kept = std::min(min_kept, a);
        EXPECT_EQ(w.data<float>()[j], w0.data<float>()[j]);
      }
    }
    EXPECT_LE(max_pruned, min_kept) << layers[i].name;
  }
  // The original model's weights are untouched (storage is not shared).
  EXPECT_EQ(zeros(*original.graph.find_initializer("conv2.weight")), 0);
}

TEST(Prune, TwoFourPatternAlongInputChannels) {
  ir::Model m = arch("cnn-small");
  const ir::Model original = m;
  MaskOptions o;
  o.method = PruneMethod::kNofM;
  std::vector<std::string> notes;
  auto masks = compress::make_masks(compress::prunable_weights(m.graph), lookup(m), o, &notes);
  ASSERT_TRUE(masks.ok()) << masks.status().message();
  ASSERT_TRUE(compress::apply_masks(m.graph, *masks).ok());
  // conv1 has one input channel: no group of 4, left dense and said so.
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("conv1"), std::string::npos) << notes[0];
  EXPECT_EQ(zeros(*m.graph.find_initializer("conv1.weight")), 0);
  // conv2 [32,16,3,3]: groups of 4 consecutive input channels at each kernel position.
  const Tensor& w = *m.graph.find_initializer("conv2.weight");
  const Tensor& w0 = *original.graph.find_initializer("conv2.weight");
  for (int64_t oc = 0; oc < 32; ++oc)
    for (int64_t k = 0; k < 9; ++k)
      for (int64_t c0 = 0; c0 < 16; c0 += 4) {
        std::vector<float> kept, all;
        for (int64_t c = c0; c < c0 + 4; ++c) {
          const int64_t i = (oc * 16 + c) * 9 + k;
          all.push_back(std::fabs(w0.data<float>()[i]));
          if (w.data<float>()[i] != 0.f) kept.push_back(std::fabs(w.data<float>()[i]));
        }
        ASSERT_EQ(kept.size(), 2u);
        std::sort(all.rbegin(), all.rend());
        std::sort(kept.rbegin(), kept.rend());
        EXPECT_EQ(kept[0], all[0]);
        EXPECT_EQ(kept[1], all[1]);
      }
  // fc1 [128,1568] with transB: groups along each row.
  const Tensor& f = *m.graph.find_initializer("fc1.weight");
  for (int64_t r = 0; r < 128; ++r)
    for (int64_t c0 = 0; c0 < 1568; c0 += 4) {
      int nz = 0;
      for (int64_t c = c0; c < c0 + 4; ++c) nz += f.data<float>()[r * 1568 + c] != 0.f;
      ASSERT_EQ(nz, 2) << "row " << r << " group " << c0;
    }
}

// The original model with what channel pruning removes masked instead: the
// weights of every consumer that read a removed channel (Conv input
// channels; after Flatten, the Gemm's input columns channel x spatial) set
// to zero. Pruning must leave exactly this function.
ir::Model masked_like(const ir::Model& original, const compress::ChannelPruneReport& rep) {
  ir::Model m = original;
  for (const auto& p : rep.pruned) {
    std::vector<bool> gone(static_cast<size_t>(p.channels_before), true);
    for (int64_t c : p.kept_channels) gone[static_cast<size_t>(c)] = false;
    for (const std::string& consumer : p.consumers)
      for (const ir::Node& n : m.graph.nodes) {
        if (n.describe() != consumer) continue;
        Tensor w = m.graph.find_initializer(n.inputs[1])->clone();
        float* v = w.data<float>();
        if (n.op_type == "Conv") {  // [O, C, kh, kw]
          const int64_t per = w.numel() / (w.dim(0) * w.dim(1));
          for (int64_t o = 0; o < w.dim(0); ++o)
            for (int64_t c = 0; c < w.dim(1); ++c)
              if (gone[static_cast<size_t>(c)])
                for (int64_t i = 0; i < per; ++i) v[(o * w.dim(1) + c) * per + i] = 0.f;
        } else {  // Gemm B: [out, K] with transB, else [K, out]
          const bool trans = n.attr_int("transB", 0) != 0;
          const int64_t k = w.dim(trans ? 1 : 0), outs = w.dim(trans ? 0 : 1), spatial = k / p.channels_before;
          for (int64_t o = 0; o < outs; ++o)
            for (int64_t j = 0; j < k; ++j)
              if (gone[static_cast<size_t>(j / spatial)]) v[trans ? o * k + j : j * outs + o] = 0.f;
        }
        m.graph.set_initializer(n.inputs[1], std::move(w));
      }
  }
  return m;
}

TEST(Prune, ChannelPruningShrinksAndKeepsFunctionOfDeadChannels) {
  ir::Model m = arch("cnn-small");
  // Kill 8 of conv1's 16 channels: zero kernels, and BatchNorm that maps
  // zero to zero, so they feed nothing into conv2.
  const std::vector<int64_t> dead = {0, 2, 3, 7, 8, 11, 13, 15};
  Tensor w = m.graph.find_initializer("conv1.weight")->clone();
  Tensor bias = m.graph.find_initializer("bn1.bias")->clone();
  Tensor scale = m.graph.find_initializer("bn1.weight")->clone();
  for (int64_t c = 0; c < 16; ++c) scale.data<float>()[c] = 0.5f + 0.1f * static_cast<float>(c);
  for (int64_t c = 0; c < 16; ++c) bias.data<float>()[c] = 0.05f * static_cast<float>(c);
  for (int64_t c : dead) {
    for (int64_t i = 0; i < 9; ++i) w.data<float>()[c * 9 + i] = 0.f;
    bias.data<float>()[c] = 0.f;
  }
  m.graph.set_initializer("conv1.weight", w);
  m.graph.set_initializer("bn1.bias", bias);
  m.graph.set_initializer("bn1.weight", scale);
  const ir::Model original = m;

  auto rep = compress::prune_channels(m, 0.5);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  ASSERT_EQ(rep->pruned.size(), 2u);  // conv2 too, through Flatten into fc1
  EXPECT_EQ(rep->pruned[0].channels_before, 16);
  EXPECT_EQ(rep->pruned[0].channels_after, 8);
  EXPECT_EQ(rep->pruned[1].channels_after, 16);
  EXPECT_EQ(m.graph.find_initializer("conv1.weight")->shape(), (Shape{8, 1, 3, 3}));
  for (const char* n : {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"})
    EXPECT_EQ(m.graph.find_initializer(n)->shape(), (Shape{8})) << n;
  EXPECT_EQ(m.graph.find_initializer("conv2.weight")->shape(), (Shape{16, 8, 3, 3}));
  EXPECT_EQ(m.graph.find_initializer("fc1.weight")->shape(), (Shape{128, 16 * 7 * 7}));
  // The surviving channels are exactly the live ones (scale kept in order).
  for (int64_t j = 0, c = 0; c < 16; ++c) {
    if (std::find(dead.begin(), dead.end(), c) != dead.end()) continue;
    EXPECT_EQ(m.graph.find_initializer("bn1.weight")->data<float>()[j++], scale.data<float>()[c]);
  }
  auto before = compress::measure_size(original), after = compress::measure_size(m);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_LT(after->parameters, before->parameters);
  EXPECT_LT(after->file_bytes, before->file_bytes);

  // conv1's removed channels were dead: only conv2's removal (masked in fc1) changes anything.
  const Tensor x = random_images(4, 3);
  const Tensor y0 = run(masked_like(original, *rep), x), y1 = run(m, x);
  ASSERT_EQ(y0.shape(), y1.shape());
  ASSERT_EQ(y0.shape(), (Shape{4, 10}));
  for (int64_t i = 0; i < y0.numel(); ++i) EXPECT_NEAR(y0.data<float>()[i], y1.data<float>()[i], 1e-4f) << i;
}

TEST(Prune, ChannelPruningThroughFlattenIntoGemmEqualsMaskedModel) {
  // The shared PyTorch CNN: conv1 -> relu -> pool -> conv2 -> relu -> pool
  // -> Flatten -> Gemm; both convs lose half their channels.
  auto loaded = load_model(std::string(QTK_MODELS_DIR) + "/cnn.onnx");
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  ir::Model m = *loaded;
  auto rep = compress::prune_channels(m, 0.5);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  ASSERT_EQ(rep->pruned.size(), 2u);
  const auto& last = rep->pruned[1];
  ASSERT_EQ(last.consumers.size(), 1u);
  EXPECT_NE(last.consumers[0].find("(Gemm)"), std::string::npos) << last.consumers[0];
  EXPECT_EQ(last.channels_after * 2, last.channels_before);
  auto before = compress::measure_size(*loaded), after = compress::measure_size(m);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_LT(after->parameters, before->parameters * 6 / 10);  // the classifier's input halves too

  const Tensor x = random_images(8, 9);
  const Tensor want = run(masked_like(*loaded, *rep), x), got = run(m, x), dense = run(*loaded, x);
  ASSERT_EQ(got.shape(), (Shape{8, 10}));
  ASSERT_EQ(want.shape(), got.shape());
  double diff_to_dense = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], 1e-4f * (1.f + std::fabs(want.data<float>()[i]))) << i;
    diff_to_dense =
        std::max(diff_to_dense, static_cast<double>(std::fabs(got.data<float>()[i] - dense.data<float>()[i])));
  }
  EXPECT_GT(diff_to_dense, 1e-3) << "pruning removed nothing that mattered: the test would not see a wrong column";

  // Flatten into something other than Gemm keeps the channels.
  ir::Model odd = *loaded;
  for (auto& n : odd.graph.nodes)
    if (n.op_type == "Flatten") n.set_attr(ir::attr_int("axis", 2));
  auto rep2 = compress::prune_channels(odd, 0.5);
  ASSERT_TRUE(rep2.ok());
  EXPECT_EQ(rep2->pruned.size(), 1u);
  EXPECT_TRUE(std::any_of(rep2->kept.begin(), rep2->kept.end(),
                          [](const std::string& k) { return k.find("axis other than 1") != std::string::npos; }));
}

TEST(Prune, ChannelPruningResNetPrunesFirstConvOfEachBlock) {
  ir::Model m = arch("resnet20");
  auto rep = compress::prune_channels(m, 0.5);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep->pruned.size(), 9u);  // one per basic block
  for (const auto& p : rep->pruned) {
    EXPECT_EQ(p.channels_after * 2, p.channels_before) << p.node;
    EXPECT_EQ(p.consumers.size(), 1u) << p.node;
  }
  // Stem, second convs and shortcut projections feed Add: kept.
  EXPECT_EQ(rep->kept.size(), 1u + 9u + 2u);
  for (const auto& k : rep->kept) EXPECT_NE(k.find("Add"), std::string::npos) << k;
  const Tensor y = run(m, random_images(2, 5));
  EXPECT_EQ(y.shape(), (Shape{2, 10}));
}

TEST(Prune, CubicScheduleRampsToTarget) {
  EXPECT_DOUBLE_EQ(compress::cubic_sparsity(0, 0.8, 0, 100), 0.0);
  EXPECT_DOUBLE_EQ(compress::cubic_sparsity(0, 0.8, 100, 100), 0.8);
  EXPECT_DOUBLE_EQ(compress::cubic_sparsity(0, 0.8, 250, 100), 0.8);
  EXPECT_NEAR(compress::cubic_sparsity(0, 0.8, 50, 100), 0.8 * (1 - 0.125), 1e-12);
  double prev = -1;
  for (int t = 0; t <= 100; ++t) {
    const double s = compress::cubic_sparsity(0, 0.8, t, 100);
    EXPECT_GE(s, prev);
    prev = s;
  }
}

TEST(Prune, MasksSurviveFineTuning) {
  ir::Model m = arch("cnn-small");
  auto graph = train::TrainGraph::create(m);
  ASSERT_TRUE(graph.ok()) << graph.status().message();
  const auto layers = compress::prunable_weights(m.graph);
  MaskOptions o;
  o.sparsity = 0.5;
  // Ramp over 4 of the 8 steps, then hold.
  compress::GradualPruner pruner(*graph, layers, o, 4, 1);
  ASSERT_TRUE(pruner.start().ok());
  data::Dataset ds;
  ds.images = random_images(64, 11);
  ds.num_classes = 10;
  for (int64_t i = 0; i < 64; ++i) ds.labels.push_back(i % 10);
  train::TrainOptions to;
  to.epochs = 1;
  to.batch = 8;
  to.lr = 1e-2f;
  std::vector<double> seen;
  to.after_step = [&] {
    Status s = pruner.after_step();
    seen.push_back(pruner.current_sparsity());
    return s;
  };
  auto r = train::train_classifier(*graph, ds, nullptr, to);
  ASSERT_TRUE(r.ok()) << r.status().message();
  // Checked before finish(): the re-application after each step alone keeps them zero.
  EXPECT_EQ(pruner.steps(), 8);
  ASSERT_EQ(seen.size(), 8u);
  EXPECT_LT(seen[0], 0.5);
  EXPECT_DOUBLE_EQ(seen.back(), 0.5);
  const ir::Model out = graph->to_model();
  for (const auto& l : layers) {
    const Tensor& w = *out.graph.find_initializer(l.name);
    const auto& mask = pruner.masks().at(l.name);
    int64_t masked = 0;
    for (int64_t i = 0; i < w.numel(); ++i)
      if (!mask[static_cast<size_t>(i)]) {
        ++masked;
        EXPECT_EQ(w.data<float>()[i], 0.f) << l.name << " element " << i;
      }
    EXPECT_EQ(masked, std::llround(0.5 * static_cast<double>(w.numel()))) << l.name;
    EXPECT_EQ(zeros(w), masked) << l.name;  // and training moved the survivors off zero
  }
  // Control: without re-applying the masks, the optimizer revives pruned weights.
  {
    auto g2 = train::TrainGraph::create(m);
    ASSERT_TRUE(g2.ok());
    compress::GradualPruner once(*g2, layers, o, 0, 1);
    ASSERT_TRUE(once.start().ok());
    train::TrainOptions plain = to;
    plain.after_step = nullptr;
    ASSERT_TRUE(train::train_classifier(*g2, ds, nullptr, plain).ok());
    const ir::Model revived = g2->to_model();
    EXPECT_LT(zeros(*revived.graph.find_initializer("conv2.weight")),
              std::llround(0.5 * static_cast<double>(revived.graph.find_initializer("conv2.weight")->numel())));
  }
  ASSERT_TRUE(pruner.finish().ok());
  // Training changed the surviving weights (the masks were not the only effect).
  const Tensor& a = *m.graph.find_initializer("fc2.weight");
  const Tensor& b = *out.graph.find_initializer("fc2.weight");
  int64_t moved = 0;
  for (int64_t i = 0; i < a.numel(); ++i) moved += b.data<float>()[i] != 0.f && b.data<float>()[i] != a.data<float>()[i];
  EXPECT_GT(moved, 0);
}

// resume_at(step): the masks of the last update before `step` (at its
// sparsity), recomputed from the weights as they stand, whose pruned
// entries are the zeros; for N:M the pattern of the start.
TEST(Prune, ResumeAtRecomputesTheMasksOfTheLastUpdate) {
  ir::Model m = arch("cnn-small");
  const auto layers = compress::prunable_weights(m.graph);
  for (const bool n_of_m : {false, true}) {
    SCOPED_TRACE(n_of_m ? "2:4" : "magnitude");
    auto graph = train::TrainGraph::create(m);
    ASSERT_TRUE(graph.ok()) << graph.status().message();
    MaskOptions o;
    o.sparsity = 0.5;
    if (n_of_m) o.method = compress::PruneMethod::kNofM, o.n = 2, o.m = 4;
    // Ramp over 10 steps, masks updated every 3: after 5 steps the last update was step 3.
    compress::GradualPruner pruner(*graph, layers, o, 10, 3);
    ASSERT_TRUE(pruner.start().ok());
    for (int k = 0; k < 5; ++k) ASSERT_TRUE(pruner.after_step().ok());
    compress::GradualPruner resumed(*graph, layers, o, 10, 3);
    ASSERT_TRUE(resumed.resume_at(5).ok());
    EXPECT_EQ(resumed.steps(), 5);
    EXPECT_DOUBLE_EQ(resumed.current_sparsity(), pruner.current_sparsity());
    if (!n_of_m) EXPECT_LT(pruner.current_sparsity(), 0.5);
    EXPECT_EQ(resumed.masks(), pruner.masks());
    // Both continue alike: the next update (step 6) at the same sparsity.
    ASSERT_TRUE(pruner.after_step().ok());
    ASSERT_TRUE(resumed.after_step().ok());
    EXPECT_DOUBLE_EQ(resumed.current_sparsity(), pruner.current_sparsity());
    EXPECT_EQ(resumed.masks(), pruner.masks());
  }
}

TEST(Prune, ClusteringLeavesAtMostTwoToTheBitsValues) {
  ir::Model m = arch("cnn-small");
  MaskOptions o;
  o.sparsity = 0.5;
  const auto layers = compress::prunable_weights(m.graph);
  auto masks = compress::make_masks(layers, lookup(m), o);
  ASSERT_TRUE(masks.ok());
  ASSERT_TRUE(compress::apply_masks(m.graph, *masks).ok());
  for (int bits : {2, 3}) {
    ir::Model c = m;
    compress::ClusterOptions co;
    co.bits = bits;
    auto res = compress::cluster_weights(c.graph, co);
    ASSERT_TRUE(res.ok()) << res.status().message();
    ASSERT_EQ(res->size(), layers.size());
    for (const auto& l : layers) {
      const Tensor& w = *c.graph.find_initializer(l.name);
      std::set<float> distinct(w.data<float>(), w.data<float>() + w.numel());
      EXPECT_LE(distinct.size(), size_t{1} << bits) << l.name;
      EXPECT_GT(distinct.size(), 1u) << l.name;
      EXPECT_TRUE(distinct.count(0.f)) << l.name;
      // Pruned weights stay pruned.
      EXPECT_EQ(zeros(w), zeros(*m.graph.find_initializer(l.name))) << l.name;
    }
  }
  compress::ClusterOptions co;
  co.init = compress::ClusterInit::kKMeansPlusPlus;
  const auto c = compress::kmeans_1d({0.f, 0.1f, 10.f, 10.1f, 10.2f}, 2, co);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_NEAR(c[0], 0.05f, 1e-5f);
  EXPECT_NEAR(c[1], 10.1f, 1e-5f);
}

TEST(Prune, BadInputGivesClearErrors) {
  for (double s : {1.0, -0.1, 1.5, std::nan("")}) {
    const Status st = compress::check_sparsity(s);
    EXPECT_FALSE(st.ok()) << s;
    EXPECT_NE(st.message().find("[0, 1)"), std::string::npos) << st.message();
  }
  PruneMethod method;
  int64_t n = 0, mm = 0;
  Status st = compress::parse_prune_method("lottery", method, n, mm);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("lottery"), std::string::npos);
  EXPECT_FALSE(compress::parse_prune_method("4:2", method, n, mm).ok());
  ASSERT_TRUE(compress::parse_prune_method("2:4", method, n, mm).ok());
  EXPECT_EQ(method, PruneMethod::kNofM);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(mm, 4);

  ir::Model m = arch("cnn-small");
  EXPECT_FALSE(compress::prune_channels(m, 1.0).ok());
  MaskOptions o;
  o.sparsity = 1.0;
  EXPECT_FALSE(compress::make_masks(compress::prunable_weights(m.graph), lookup(m), o).ok());
  compress::ClusterOptions co;
  co.bits = 0;
  EXPECT_FALSE(compress::cluster_weights(m.graph, co).ok());
  // A mask of the wrong size is refused, naming the weight.
  compress::MaskSet bad{{"conv1.weight", compress::Mask(3, 1)}};
  st = compress::apply_masks(m.graph, bad);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("conv1.weight"), std::string::npos);
}

}  // namespace
}  // namespace qtk
