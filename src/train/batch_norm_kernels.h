// The per-plane loops of BatchNormalization's training forward and backward
// (grad_ops_norm.cpp): two reductions and two affine passes over one
// image's plane of one channel. AVX-512 where sgemm runs its AVX-512 path
// (the library is built for the baseline ISA, where these loops compiled to
// scalar-heavy SSE2 and BatchNormalization was 15% of a resnet20 step);
// the *_reference versions are the plain loops they are tested against.
//
// The reductions sum each plane in float lanes (64 in the vector kernel,
// 8 in the reference) and add the lane totals to the double accumulators:
// the order is fixed per plane, so results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace qtk::train {

// s1 += sum of p[j] - mu, s2 += sum of (p[j] - mu)^2, j < n.
void bn_centered_sums(const float* p, int64_t n, float mu, double& s1, double& s2);
// s += sum of p[j].
void bn_sum(const float* p, int64_t n, double& s);
// A Relu fused after the normalization (train_graph.h): where `relu_out`
// is given, y[j] = max(x[j] * a + b, 0), and the backward kernels read the
// output gradient as g[j] where relu_out[j] > 0 and 0 elsewhere.
//
// sg += sum of g[j], sgx += sum of g[j] * (x[j] - mu).
void bn_grad_sums(const float* x, const float* g, const float* relu_out, int64_t n, float mu, double& sg,
                  double& sgx);
// y[j] = x[j] * a + b (then Relu when `relu`).
void bn_affine(const float* x, int64_t n, float a, float b, bool relu, float* y);
// dx[j] = a * (g[j] - mg - (x[j] - m) * f).
void bn_input_grad(const float* x, const float* g, const float* relu_out, int64_t n, float a, float mg, float m,
                   float f, float* dx);

// Asks for n floats from p (the next image's plane of a channel: the planes
// of one channel are a channel's size apart, so each starts a new stream the
// hardware prefetcher has to find again). Never faults.
void bn_prefetch(const float* p, int64_t n);

void bn_centered_sums_reference(const float* p, int64_t n, float mu, double& s1, double& s2);
void bn_sum_reference(const float* p, int64_t n, double& s);
void bn_grad_sums_reference(const float* x, const float* g, const float* relu_out, int64_t n, float mu, double& sg,
                            double& sgx);
void bn_affine_reference(const float* x, int64_t n, float a, float b, bool relu, float* y);
void bn_input_grad_reference(const float* x, const float* g, const float* relu_out, int64_t n, float a, float mg,
                             float m, float f, float* dx);

}  // namespace qtk::train
