#include "train/conv_stride1_pack.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "runtime/kernels/ref/sgemm.h"
#include "train/conv_weight_grad.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QTK_TRAIN_X86 1
#endif

namespace qtk::train {

bool stride1_pack_applies(const Window2d& w) {
  return direct_weight_grad_applies(w) &&
         rt::ref::sgemm_packed_b_width(rt::ref::SgemmPath::kAuto) == kStride1PackWidth;
}

Stride1PackPlan plan_stride1_pack(const Window2d& w) {
  Stride1PackPlan plan;
  const int64_t p = w.oh * w.ow, wp = w.pl + w.iw + w.pr;
  plan.slivers = (p + kStride1PackWidth - 1) / kStride1PackWidth;
  const int64_t halves = plan.slivers * 2;
  plan.first.reserve(static_cast<size_t>(halves + 1));
  for (int64_t h = 0; h < halves; ++h) {
    plan.first.push_back(static_cast<int64_t>(plan.segments.size()));
    const int64_t j0 = h * 16, j1 = std::min(p, j0 + 16);
    for (int64_t j = j0; j < j1;) {  // one segment per output row the half touches
      const int64_t oy = j / w.ow, ox = j % w.ow, end = std::min(j1, (oy + 1) * w.ow);
      uint16_t mask = 0;
      for (int64_t l = j - j0; l < end - j0; ++l) mask = static_cast<uint16_t>(mask | (1u << l));
      plan.segments.push_back({mask, oy * wp + ox - (j - j0)});
      j = end;
    }
  }
  plan.first.push_back(static_cast<int64_t>(plan.segments.size()));
  return plan;
}

#ifdef QTK_TRAIN_X86
namespace {
#define QTK_AVX512 __attribute__((target("avx512f")))

constexpr int kMaxRows = 4;  // per 16-lane half: outputs rows of >= 5 (resnet20's 7x7 spans 4)

// One half of a sliver row from N segments: zero-masked loads OR-ed (no
// chain of merging loads). Masked-off lanes are not read, so a segment's
// `src` may point before the plane (integer arithmetic: no out-of-range
// pointer is formed).
template <int N>
QTK_AVX512 inline __m512i load_half(uintptr_t base, const Stride1PackPlan::Segment* seg) {
  __m512i v = _mm512_setzero_si512();
  for (int g = 0; g < N; ++g)
    v = _mm512_or_si512(v, _mm512_maskz_loadu_epi32(seg[g].mask, reinterpret_cast<const void*>(
                                                                         base + static_cast<uintptr_t>(seg[g].src * 4))));
  return v;
}

// One sliver whose halves span N0 and N1 output rows, the segments hoisted
// out of the tap loop: a loop over each half's segments per tap (count
// read from the plan, reloaded after every store) made the pack cost over
// half of the GEMM it feeds.
template <int N0, int N1>
QTK_AVX512 void pack_sliver(const Stride1PackPlan::Segment* s0, const Stride1PackPlan::Segment* s1,
                            const float* padded, const int64_t* off, int64_t k, float* dst) {
  Stride1PackPlan::Segment a[N0 > 0 ? N0 : 1], b[N1 > 0 ? N1 : 1];
  for (int g = 0; g < N0; ++g) a[g] = s0[g];
  for (int g = 0; g < N1; ++g) b[g] = s1[g];
  for (int64_t r = 0; r < k; ++r, dst += kStride1PackWidth) {
    const auto base = reinterpret_cast<uintptr_t>(padded + off[r]);
    _mm512_store_si512(dst, load_half<N0>(base, a));
    _mm512_store_si512(dst + 16, load_half<N1>(base, b));
  }
}

using SliverFn = void (*)(const Stride1PackPlan::Segment*, const Stride1PackPlan::Segment*, const float*,
                          const int64_t*, int64_t, float*);
template <int... I>
constexpr std::array<SliverFn, sizeof...(I)> sliver_table(std::integer_sequence<int, I...>) {
  return {&pack_sliver<I / (kMaxRows + 1), I % (kMaxRows + 1)>...};
}
constexpr auto kSlivers = sliver_table(std::make_integer_sequence<int, (kMaxRows + 1) * (kMaxRows + 1)>());

QTK_AVX512 void pack_avx512(const Stride1PackPlan& plan, const float* padded, const int64_t* off, int64_t k,
                            int64_t s_begin, int64_t s_end, float* packed) {
  const auto* seg = plan.segments.data();
  const int64_t* first = plan.first.data();
  for (int64_t s = s_begin; s < s_end; ++s) {
    float* dst = packed + (s - s_begin) * k * kStride1PackWidth;
    const int64_t h0 = s * 2, h1 = h0 + 1;
    const int64_t n0 = first[h0 + 1] - first[h0], n1 = first[h1 + 1] - first[h1];
    if (n0 <= kMaxRows && n1 <= kMaxRows) {
      kSlivers[n0 * (kMaxRows + 1) + n1](seg + first[h0], seg + first[h1], padded, off, k, dst);
      continue;
    }
    for (int64_t r = 0; r < k; ++r) {  // outputs rows of under 5
      const auto base = reinterpret_cast<uintptr_t>(padded + off[r]);
      for (int half = 0; half < 2; ++half) {
        const int64_t h = h0 + half;
        __m512i v = _mm512_setzero_si512();
        for (int64_t g = first[h]; g < first[h + 1]; ++g)
          v = _mm512_or_si512(v, _mm512_maskz_loadu_epi32(seg[g].mask, reinterpret_cast<const void*>(
                                                                          base + static_cast<uintptr_t>(seg[g].src * 4))));
        _mm512_store_si512(dst + r * kStride1PackWidth + half * 16, v);
      }
    }
  }
}
}  // namespace
#endif

void stride1_pack(const Stride1PackPlan& plan, const float* padded, const int64_t* off, int64_t k, float* packed) {
  stride1_pack(plan, padded, off, k, 0, plan.slivers, packed);
}

void stride1_pack(const Stride1PackPlan& plan, const float* padded, const int64_t* off, int64_t k, int64_t s0,
                  int64_t s1, float* packed) {
#ifdef QTK_TRAIN_X86
  if (rt::ref::sgemm_avx512_supported()) {
    pack_avx512(plan, padded, off, k, s0, s1, packed);
    return;
  }
#endif
  for (int64_t s = s0; s < s1; ++s)
    for (int64_t r = 0; r < k; ++r) {
      float* dst = packed + ((s - s0) * k + r) * kStride1PackWidth;
      std::fill(dst, dst + kStride1PackWidth, 0.f);
      for (int half = 0; half < 2; ++half) {
        const int64_t h = s * 2 + half;
        for (int64_t g = plan.first[h]; g < plan.first[h + 1]; ++g)
          for (int l = 0; l < 16; ++l)
            if (plan.segments[g].mask >> l & 1) dst[half * 16 + l] = padded[off[r] + plan.segments[g].src + l];
      }
    }
}

}  // namespace qtk::train
