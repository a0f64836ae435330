// The training Conv's stride-1 backward paths (dX as the transposed
// convolution, dW as shifted dot products, conv_weight_grad.h) against plain
// loops in double, with and without a pool; and the vector dot kernel
// against its reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "runtime/kernels/ref/sgemm.h"
#include "runtime/thread_pool.h"
#include "test_models.h"
#include "train/conv_stride1_pack.h"
#include "train/conv_weight_grad.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

struct ConvCase {
  Shape x, w;
  std::vector<int64_t> pads{0, 0, 0, 0}, dilations{1, 1}, strides{1, 1};
  int64_t group = 1;
};

ir::Node conv_node(const ConvCase& cc) {
  ir::Node n;
  n.name = "conv";
  n.op_type = "Conv";
  n.inputs = {"x", "w"};
  n.outputs = {"y"};
  n.attrs = {ir::attr_ints("pads", cc.pads), ir::attr_ints("dilations", cc.dilations),
             ir::attr_ints("strides", cc.strides), ir::attr_int("group", cc.group)};
  return n;
}

// dX and dW of sum(y * r) by the definition of the convolution, in double.
void naive_conv_grads(const ConvCase& cc, const Tensor& x, const Tensor& w, const Tensor& r, std::vector<double>& dx,
                      std::vector<double>& dw) {
  const int64_t n = cc.x[0], c = cc.x[1], ih = cc.x[2], iw = cc.x[3];
  const int64_t m = cc.w[0], cg = cc.w[1], kh = cc.w[2], kw = cc.w[3], mg = m / cc.group;
  const int64_t oh = r.dim(2), ow = r.dim(3);
  dx.assign(static_cast<size_t>(x.numel()), 0.0);
  dw.assign(static_cast<size_t>(w.numel()), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < m; ++o)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const double g = r.data<float>()[((i * m + o) * oh + oy) * ow + ox];
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t ky = 0; ky < kh; ++ky)
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t y = oy * cc.strides[0] - cc.pads[0] + ky * cc.dilations[0];
                const int64_t xx = ox * cc.strides[1] - cc.pads[1] + kx * cc.dilations[1];
                if (y < 0 || y >= ih || xx < 0 || xx >= iw) continue;
                const int64_t channel = (o / mg) * cg + ci;
                const int64_t xi = ((i * c + channel) * ih + y) * iw + xx, wi = ((o * cg + ci) * kh + ky) * kw + kx;
                dx[xi] += g * w.data<float>()[wi];
                dw[wi] += g * x.data<float>()[xi];
              }
        }
}

void check_conv_backward(const ConvCase& cc, rt::ThreadPool* pool) {
  SCOPED_TRACE("x " + shape_to_string(cc.x) + " w " + shape_to_string(cc.w) + " pool " + (pool ? "yes" : "no"));
  const Tensor x = testing::uniform_tensor(cc.x, 1, -1.f, 1.f), w = testing::uniform_tensor(cc.w, 2, -1.f, 1.f);
  const ir::Node node = conv_node(cc);
  const GradOp* op = find_grad_op("Conv");
  ASSERT_NE(op, nullptr);
  ForwardContext f{node, {x, w}, {}, {}, true, pool, {}};
  ASSERT_TRUE(op->forward(f).ok());
  const Tensor r = testing::uniform_tensor(f.out[0].shape(), 3, -1.f, 1.f);
  BackwardContext b{node, f.in, f.out, f.saved, {r}, {true, true}, {Tensor(), Tensor()}, pool};
  const Status st = op->backward(b);
  ASSERT_TRUE(st.ok()) << st.message();
  std::vector<double> dx, dw;
  naive_conv_grads(cc, x, w, r, dx, dw);
  ASSERT_EQ(b.din[0].shape(), x.shape());
  ASSERT_EQ(b.din[1].shape(), w.shape());
  for (int64_t i = 0; i < x.numel(); ++i)
    ASSERT_NEAR(b.din[0].data<float>()[i], dx[i], 1e-4 * (1 + std::fabs(dx[i]))) << "dX element " << i;
  for (int64_t i = 0; i < w.numel(); ++i)
    ASSERT_NEAR(b.din[1].data<float>()[i], dw[i], 1e-4 * (1 + std::fabs(dw[i]))) << "dW element " << i;
}

std::vector<ConvCase> stride_one_cases() {
  return {
      {{3, 4, 9, 7}, {5, 4, 3, 3}, {1, 1, 1, 1}},                // ResNet's 3x3, odd channel counts
      {{2, 3, 8, 6}, {4, 3, 3, 2}, {1, 0, 2, 1}},                // asymmetric pads, up to (k-1)*d
      {{2, 2, 9, 9}, {3, 2, 3, 3}, {2, 1, 2, 2}, {2, 2}},         // dilation
      {{5, 6, 5, 5}, {4, 3, 3, 3}, {1, 1, 1, 1}, {1, 1}, {1, 1}, 2},  // groups
      {{4, 8, 7, 7}, {16, 8, 1, 1}},                              // 1x1
      {{2, 1, 28, 28}, {16, 1, 3, 3}, {1, 1, 1, 1}},              // the stem: K = 9 (a 4-tap remainder)
      {{2, 3, 6, 6}, {2, 3, 3, 3}, {3, 0, 0, 0}},                 // a pad past (k-1)*d: dX by col2im
  };
}

TEST(TrainConvDirect, StrideOneBackwardMatchesDefinition) {
  for (const ConvCase& cc : stride_one_cases()) check_conv_backward(cc, nullptr);
}

TEST(TrainConvDirect, StrideOneBackwardWithPoolMatchesDefinition) {
  rt::ThreadPool pool(3);
  for (const ConvCase& cc : stride_one_cases()) check_conv_backward(cc, &pool);
}

TEST(TrainConvDirect, StridedBackwardStillMatchesDefinition) {
  ConvCase cc{{3, 4, 9, 8}, {6, 4, 3, 3}, {1, 1, 1, 1}};
  cc.strides = {2, 2};
  check_conv_backward(cc, nullptr);
  rt::ThreadPool pool(2);
  check_conv_backward(cc, &pool);
}

TEST(TrainConvDirect, DirectWeightGradCoversStrideOneOnAvx512) {
  Window2d w;
  w.ih = w.iw = 28;
  w.kh = w.kw = 3;
  w.pt = w.pl = w.pb = w.pr = 1;
  w.oh = w.ow = 28;
  const char* env = std::getenv("QTK_TRAIN_IM2COL");
  const bool forced_off = env != nullptr && env[0] != '\0' && env[0] != '0';
  EXPECT_EQ(direct_paths_enabled(), !forced_off);
  const bool avx512 = rt::ref::sgemm_resolve_path(rt::ref::SgemmPath::kAuto) == rt::ref::SgemmPath::kAvx512;
  EXPECT_EQ(direct_weight_grad_applies(w), avx512 && !forced_off);
  Window2d strided = w;
  strided.sh = strided.sw = 2;
  strided.oh = strided.ow = 14;
  EXPECT_FALSE(direct_weight_grad_applies(strided));
}

TEST(TrainConvDirect, ShiftedDotsMatchReference) {
  for (int64_t m : {1, 3, 4, 9})
    for (int64_t k : {1, 4, 7, 12})
      for (int64_t len : {1, 15, 16, 17, 63, 200})
        for (int64_t images : {1, 3}) {
          SCOPED_TRACE("m " + std::to_string(m) + " k " + std::to_string(k) + " len " + std::to_string(len) +
                       " images " + std::to_string(images));
          const int64_t ldy = len + 5, dy_image = m * ldy + 3, x_image = len + 3 * k + 40;
          const Tensor dy = testing::uniform_tensor({images * dy_image}, 4, -1.f, 1.f);
          const Tensor x = testing::uniform_tensor({images * x_image}, 5, -1.f, 1.f);
          std::vector<int64_t> off(static_cast<size_t>(k));
          for (int64_t r = 0; r < k; ++r) off[r] = (r * 7) % (3 * k + 1);
          const int64_t ldw = k + 2;
          Tensor got = testing::uniform_tensor({m * ldw}, 6, -1.f, 1.f), want = got.clone();  // accumulates
          shifted_dots(m, k, len, images, dy.data<float>(), ldy, dy_image, x.data<float>(), x_image, off.data(),
                       got.data<float>(), ldw);
          shifted_dots_reference(m, k, len, images, dy.data<float>(), ldy, dy_image, x.data<float>(), x_image,
                                 off.data(), want.data<float>(), ldw);
          for (int64_t i = 0; i < m * ldw; ++i)
            ASSERT_NEAR(got.data<float>()[i], want.data<float>()[i], 1e-4 * (1 + std::fabs(want.data<float>()[i])))
                << "element " << i;
        }
}

// The masked-load im2col against the generic one in the same packed layout,
// for output widths above and below the 16-lane halves (7: four rows per half).
TEST(TrainConvDirect, Stride1PackMatchesGenericIm2col) {
  struct Geo {
    int64_t ch, ih, iw, kh, kw, dh, dw, pt, pl, pb, pr;
  };
  for (const Geo& g : std::vector<Geo>{{3, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1},
                                       {2, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1},
                                       {2, 5, 3, 3, 2, 1, 1, 2, 0, 1, 1},
                                       {1, 9, 11, 3, 3, 2, 2, 2, 1, 2, 2},
                                       {4, 6, 6, 1, 1, 1, 1, 0, 0, 0, 0}}) {
    Window2d w;
    w.ih = g.ih, w.iw = g.iw, w.kh = g.kh, w.kw = g.kw, w.dh = g.dh, w.dw = g.dw;
    w.pt = g.pt, w.pl = g.pl, w.pb = g.pb, w.pr = g.pr;
    w.oh = g.ih + g.pt + g.pb - (g.kh - 1) * g.dh;
    w.ow = g.iw + g.pl + g.pr - (g.kw - 1) * g.dw;
    SCOPED_TRACE("image " + std::to_string(g.ih) + "x" + std::to_string(g.iw) + " out " + std::to_string(w.oh) + "x" +
                 std::to_string(w.ow));
    const Tensor image = testing::uniform_tensor({g.ch, g.ih, g.iw}, 7, -1.f, 1.f);
    const int64_t k = g.ch * g.kh * g.kw, p = w.oh * w.ow, slivers = (p + 31) / 32;
    std::vector<float> padded(static_cast<size_t>(padded_image_floats(g.ch, w)));
    pad_image(image.data<float>(), g.ch, w, padded.data());
    rt::ref::AlignedFloats got_buf, want_buf;
    float* got = got_buf.get(slivers * k * 32);
    float* want = want_buf.get(slivers * k * 32);
    std::fill(got, got + slivers * k * 32, -7.f);  // every element must be written
    const Stride1PackPlan plan = plan_stride1_pack(w);
    ASSERT_EQ(plan.slivers, slivers);
    stride1_pack(plan, padded.data(), tap_offsets(g.ch, w).data(), k, got);
    im2col_2d_packed(image.data<float>(), g.ch, w, 32, want);
    for (int64_t i = 0; i < slivers * k * 32; ++i) ASSERT_EQ(got[i], want[i]) << "element " << i;
    // Sliver ranges (Conv packs a slab at a time) write the same slivers from the start of the buffer.
    for (int64_t s0 = 0; s0 < slivers; ++s0)
      for (int64_t s1 = s0 + 1; s1 <= std::min(slivers, s0 + 3); ++s1) {
        std::fill(got, got + slivers * k * 32, -7.f);
        stride1_pack(plan, padded.data(), tap_offsets(g.ch, w).data(), k, s0, s1, got);
        for (int64_t i = 0; i < (s1 - s0) * k * 32; ++i)
          ASSERT_EQ(got[i], want[s0 * k * 32 + i]) << "slivers [" << s0 << ", " << s1 << ") element " << i;
        if (s1 - s0 < slivers)
          ASSERT_EQ(got[(s1 - s0) * k * 32], -7.f) << "wrote past slivers [" << s0 << ", " << s1 << ")";
      }
  }
}

TEST(TrainConvDirect, PaddedImageAndSpreadRowsLayout) {
  Window2d w;
  w.ih = 2;
  w.iw = 3;
  w.kh = w.kw = 3;
  w.pt = 1, w.pb = 0, w.pl = 2, w.pr = 1;
  w.oh = 1, w.ow = 4;  // (1 + 2 + 0 - 2), (2 + 3 + 1 - 2)
  const float image[6] = {1, 2, 3, 4, 5, 6};
  std::vector<float> padded(static_cast<size_t>(padded_image_floats(1, w)), -1.f);
  pad_image(image, 1, w, padded.data());
  const std::vector<float> want = {0, 0, 0, 0, 0, 0,  // top pad row, Wp = 6
                                   0, 0, 1, 2, 3, 0,  //
                                   0, 0, 4, 5, 6, 0};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(padded[i], want[i]) << i;
  for (size_t i = want.size(); i < padded.size(); ++i) EXPECT_EQ(padded[i], 0.f) << "slack " << i;
  const float dy[4] = {1, 2, 3, 4};
  std::vector<float> spread(static_cast<size_t>(spread_rows_floats(1, w)), -1.f);
  spread_rows(dy, 1, w, spread.data());
  EXPECT_EQ(spread, (std::vector<float>{1, 2, 3, 4, 0, 0}));
  const std::vector<int64_t> off = tap_offsets(1, w);
  ASSERT_EQ(off.size(), 9u);
  EXPECT_EQ(off[0], 0);
  EXPECT_EQ(off[5], 1 * 6 + 2);  // ky 1, kx 2
}

// The vector padding and spreading against their plain loops, byte for
// byte, over widths below, at and above the 16-lane vectors and pads wider
// than a vector; every float of the buffers written.
TEST(TrainConvDirect, PadImageAndSpreadRowsMatchReference) {
  struct Geo {
    int64_t ch, ih, iw, kh, kw, dh, dw, pt, pl, pb, pr;
  };
  for (const Geo& g : std::vector<Geo>{{3, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1},
                                       {2, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1},
                                       {5, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1},
                                       {2, 5, 3, 3, 2, 1, 1, 2, 0, 1, 1},
                                       {1, 9, 11, 3, 3, 2, 2, 2, 1, 2, 2},
                                       {2, 4, 33, 1, 5, 1, 1, 0, 18, 0, 17},
                                       {4, 6, 16, 1, 1, 1, 1, 0, 0, 0, 0}}) {
    Window2d w;
    w.ih = g.ih, w.iw = g.iw, w.kh = g.kh, w.kw = g.kw, w.dh = g.dh, w.dw = g.dw;
    w.pt = g.pt, w.pl = g.pl, w.pb = g.pb, w.pr = g.pr;
    w.oh = g.ih + g.pt + g.pb - (g.kh - 1) * g.dh;
    w.ow = g.iw + g.pl + g.pr - (g.kw - 1) * g.dw;
    SCOPED_TRACE("image " + std::to_string(g.ih) + "x" + std::to_string(g.iw) + " pads " + std::to_string(g.pl) +
                 "/" + std::to_string(g.pr));
    const Tensor image = testing::uniform_tensor({g.ch, g.ih, g.iw}, 5, -1.f, 1.f);
    const size_t pf = static_cast<size_t>(padded_image_floats(g.ch, w));
    std::vector<float> got(pf + 1, -7.f), want(pf + 1, -7.f);  // one guard float past the end
    pad_image(image.data<float>(), g.ch, w, got.data());
    pad_image_reference(image.data<float>(), g.ch, w, want.data());
    for (size_t i = 0; i <= pf; ++i) ASSERT_EQ(got[i], want[i]) << "padded float " << i;
    ASSERT_EQ(got[pf], -7.f) << "wrote past the padded image";
    const Tensor dy = testing::uniform_tensor({g.ch, w.oh, w.ow}, 6, -1.f, 1.f);
    const size_t sf = static_cast<size_t>(spread_rows_floats(g.ch, w));
    std::vector<float> sgot(sf + 1, -7.f), swant(sf + 1, -7.f);
    spread_rows(dy.data<float>(), g.ch, w, sgot.data());
    spread_rows_reference(dy.data<float>(), g.ch, w, swant.data());
    for (size_t i = 0; i <= sf; ++i) ASSERT_EQ(sgot[i], swant[i]) << "spread float " << i;
    ASSERT_EQ(sgot[sf], -7.f) << "wrote past the spread rows";
  }
}

}  // namespace
}  // namespace qtk::train
