#include "train/conv_stride1_pack.h"

#include <algorithm>
#include <cstring>

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
__attribute__((target("avx512f"))) void pack_avx512(const Stride1PackPlan& plan, const float* padded,
                                                    const int64_t* off, int64_t k, float* packed) {
  const auto* seg = plan.segments.data();
  const int64_t* first = plan.first.data();
  for (int64_t s = 0; s < plan.slivers; ++s)
    for (int64_t r = 0; r < k; ++r) {
      // Masked-off lanes are not read, so `src` may point before the plane
      // (integer arithmetic: no out-of-range pointer is formed).
      const auto base = reinterpret_cast<uintptr_t>(padded + off[r]);
      float* dst = packed + (s * k + r) * kStride1PackWidth;
      for (int half = 0; half < 2; ++half) {
        const int64_t h = s * 2 + half;
        __m512 v = _mm512_setzero_ps();
        for (int64_t g = first[h]; g < first[h + 1]; ++g)
          v = _mm512_mask_loadu_ps(v, seg[g].mask,
                                   reinterpret_cast<const float*>(base + static_cast<uintptr_t>(seg[g].src * 4)));
        _mm512_store_ps(dst + half * 16, v);
      }
    }
}
}  // namespace
#endif

void stride1_pack(const Stride1PackPlan& plan, const float* padded, const int64_t* off, int64_t k, float* packed) {
#ifdef QTK_TRAIN_X86
  if (rt::ref::sgemm_avx512_supported()) {
    pack_avx512(plan, padded, off, k, packed);
    return;
  }
#endif
  for (int64_t s = 0; s < plan.slivers; ++s)
    for (int64_t r = 0; r < k; ++r) {
      float* dst = packed + (s * k + r) * kStride1PackWidth;
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
