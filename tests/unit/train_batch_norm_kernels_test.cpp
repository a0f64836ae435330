// BatchNormalization's per-plane training kernels (batch_norm_kernels.h)
// against their plain references, for plane sizes around the vector
// widths (tails of every length) and resnet20's planes (49, 196, 784).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "test_models.h"
#include "train/batch_norm_kernels.h"

namespace qtk::train {
namespace {

const std::vector<int64_t> kSizes = {1, 5, 15, 16, 17, 31, 49, 63, 64, 65, 100, 196, 784, 1000};

// Sums of n floats in [-1, 2): the float lanes round at about 1e-7 of the
// sum of magnitudes.
void expect_sum_near(double got, double want, double magnitude, const char* what, int64_t n) {
  EXPECT_NEAR(got, want, 1e-5 * (magnitude + 1.0)) << what << ", n = " << n;
}

TEST(TrainBatchNormKernels, ReductionsMatchReference) {
  for (int64_t n : kSizes) {
    const Tensor x = testing::uniform_tensor({n + 3}, 11, -1.f, 2.f);
    const Tensor g = testing::uniform_tensor({n + 3}, 12, -1.f, 1.f);
    const float* px = x.data<float>() + 3;  // unaligned, as planes of odd sizes are
    const float* pg = g.data<float>() + 3;
    double mag = 0;
    for (int64_t j = 0; j < n; ++j) mag += std::fabs(px[j]) + 2.0;
    const double start = 0.25;  // both add to what the accumulators hold
    double s = start, sr = start;
    bn_sum(px, n, s);
    bn_sum_reference(px, n, sr);
    expect_sum_near(s, sr, mag, "sum", n);
    double s1 = start, s2 = start, r1 = start, r2 = start;
    bn_centered_sums(px, n, 0.4f, s1, s2);
    bn_centered_sums_reference(px, n, 0.4f, r1, r2);
    expect_sum_near(s1, r1, mag, "centered sum", n);
    expect_sum_near(s2, r2, mag * mag / n, "centered squares", n);
    double sg = start, sgx = start, rg = start, rgx = start;
    bn_grad_sums(px, pg, nullptr, n, 0.4f, sg, sgx);
    bn_grad_sums_reference(px, pg, nullptr, n, 0.4f, rg, rgx);
    expect_sum_near(sg, rg, mag, "gradient sum", n);
    expect_sum_near(sgx, rgx, mag, "gradient times centered input", n);
    // Behind a fused Relu (x as its output: about a third of it <= 0), the
    // sums take g only where x > 0, as the definition does.
    double mg = start, mgx = start, mrg = start, mrgx = start, dg = start, dgx = start;
    bn_grad_sums(px, pg, px, n, 0.4f, mg, mgx);
    bn_grad_sums_reference(px, pg, px, n, 0.4f, mrg, mrgx);
    for (int64_t j = 0; j < n; ++j)
      if (px[j] > 0.f) {
        dg += pg[j];
        dgx += pg[j] * (px[j] - 0.4);
      }
    expect_sum_near(mg, mrg, mag, "masked gradient sum", n);
    expect_sum_near(mgx, mrgx, mag, "masked gradient times centered input", n);
    expect_sum_near(mg, dg, mag, "masked gradient sum vs double", n);
    expect_sum_near(mgx, dgx, mag, "masked gradient times centered input vs double", n);
    // And against the definition in double.
    double d1 = start, d2 = start;
    for (int64_t j = 0; j < n; ++j) {
      d1 += px[j] - 0.4;
      d2 += (px[j] - 0.4) * (px[j] - 0.4);
    }
    expect_sum_near(s1, d1, mag, "centered sum vs double", n);
    expect_sum_near(s2, d2, mag * mag / n, "centered squares vs double", n);
  }
}

TEST(TrainBatchNormKernels, AffinePassesMatchReferenceAndWriteOnlyTheirPlane) {
  for (int64_t n : kSizes) {
    const Tensor x = testing::uniform_tensor({n + 1}, 21, -3.f, 3.f);
    const Tensor g = testing::uniform_tensor({n + 1}, 22, -1.f, 1.f);
    const float* px = x.data<float>() + 1;
    const float* pg = g.data<float>() + 1;
    // A guard float before and after the plane: masked tails must not write past it.
    for (bool relu : {false, true}) {
      SCOPED_TRACE(relu ? "with a fused Relu" : "without Relu");
      const float* mask = relu ? px : nullptr;  // x as the Relu output: a third of it <= 0
      std::vector<float> y(n + 2, -9.f), yr(n + 2, -9.f), dx(n + 2, -9.f), dxr(n + 2, -9.f);
      bn_affine(px, n, 1.7f, -0.3f, relu, y.data() + 1);
      bn_affine_reference(px, n, 1.7f, -0.3f, relu, yr.data() + 1);
      bn_input_grad(px, pg, mask, n, 0.9f, 0.05f, 0.2f, 0.6f, dx.data() + 1);
      bn_input_grad_reference(px, pg, mask, n, 0.9f, 0.05f, 0.2f, 0.6f, dxr.data() + 1);
      for (int64_t j = 1; j <= n; ++j) {
        // The vector kernels fuse a multiply-add (one rounding fewer).
        EXPECT_NEAR(y[j], yr[j], 1e-6f * (std::fabs(yr[j]) + 1.f)) << "affine, n = " << n << ", j = " << j;
        EXPECT_NEAR(dx[j], dxr[j], 1e-6f * (std::fabs(dxr[j]) + 1.f)) << "input grad, n = " << n << ", j = " << j;
        const float v = px[j - 1] * 1.7f - 0.3f;
        if (relu && v < -1e-5f) EXPECT_EQ(y[j], 0.f) << "Relu of a negative value, n = " << n << ", j = " << j;
        const float gj = relu && !(px[j - 1] > 0.f) ? 0.f : pg[j - 1];
        EXPECT_NEAR(dx[j], 0.9f * (gj - 0.05f - (px[j - 1] - 0.2f) * 0.6f), 1e-5f) << "input grad by definition";
      }
      EXPECT_EQ(y[0], -9.f);
      EXPECT_EQ(y[n + 1], -9.f) << "affine wrote past the plane, n = " << n;
      EXPECT_EQ(dx[0], -9.f);
      EXPECT_EQ(dx[n + 1], -9.f) << "input grad wrote past the plane, n = " << n;
    }
  }
}

}  // namespace
}  // namespace qtk::train
