#include "train/conv_weight_grad.h"

#include <algorithm>
#include <cstdlib>

#include "runtime/kernels/ref/sgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QTK_TRAIN_X86 1
#define QTK_AVX512 __attribute__((target("avx512f")))
#endif

namespace qtk::train {

namespace {
int64_t padded_h(const Window2d& w) { return w.pt + w.ih + w.pb; }
int64_t padded_w(const Window2d& w) { return w.pl + w.iw + w.pr; }
}  // namespace

bool direct_paths_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("QTK_TRAIN_IM2COL");
    return e == nullptr || e[0] == '\0' || e[0] == '0';
  }();
  return on;
}

bool direct_weight_grad_applies(const Window2d& w) {
  if (!direct_paths_enabled()) return false;
  if (w.sh != 1 || w.sw != 1 || w.pt < 0 || w.pl < 0 || w.pb < 0 || w.pr < 0) return false;
  // Stride 1: the outputs tile the padded image exactly (ow = Wp - (kw-1)*dw).
  if (w.ow != padded_w(w) - (w.kw - 1) * w.dw || w.oh != padded_h(w) - (w.kh - 1) * w.dh) return false;
  return rt::ref::sgemm_resolve_path(rt::ref::SgemmPath::kAuto) == rt::ref::SgemmPath::kAvx512;
}

int64_t padded_image_floats(int64_t channels, const Window2d& w) {
  // The last tap of the last channel reads (kw-1)*dw floats past its plane
  // (the columns of dy_spread that are zero); 16 more keep vector loads simple.
  return channels * padded_h(w) * padded_w(w) + (w.kw - 1) * w.dw + 16;
}

int64_t spread_rows_floats(int64_t rows, const Window2d& w) { return rows * w.oh * padded_w(w); }

// Plain loops rather than std::fill / memcpy: the pieces are a few floats
// to a few dozen, where a libc call per piece costs more than the copy.
void pad_image_reference(const float* image, int64_t channels, const Window2d& w, float* padded) {
  const int64_t hp = padded_h(w), wp = padded_w(w);
  for (int64_t c = 0; c < channels; ++c) {
    float* plane = padded + c * hp * wp;
    for (int64_t i = 0; i < w.pt * wp; ++i) plane[i] = 0.f;
    for (int64_t y = 0; y < w.ih; ++y) {
      float* row = plane + (w.pt + y) * wp;
      const float* src = image + (c * w.ih + y) * w.iw;
      for (int64_t i = 0; i < w.pl; ++i) row[i] = 0.f;
      for (int64_t i = 0; i < w.iw; ++i) row[w.pl + i] = src[i];
      for (int64_t i = w.pl + w.iw; i < wp; ++i) row[i] = 0.f;
    }
    for (int64_t i = (w.pt + w.ih) * wp; i < hp * wp; ++i) plane[i] = 0.f;
  }
  float* end = padded + channels * hp * wp;
  for (int64_t i = 0; i < (w.kw - 1) * w.dw + 16; ++i) end[i] = 0.f;
}

void spread_rows_reference(const float* dy, int64_t rows, const Window2d& w, float* spread) {
  const int64_t wp = padded_w(w);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t oy = 0; oy < w.oh; ++oy) {
      float* d = spread + (r * w.oh + oy) * wp;
      const float* src = dy + (r * w.oh + oy) * w.ow;
      for (int64_t i = 0; i < w.ow; ++i) d[i] = src[i];
      for (int64_t i = w.ow; i < wp; ++i) d[i] = 0.f;
    }
}

#ifdef QTK_TRAIN_X86
namespace {
// The plain loops above compile to SSE2 plus a memset call per padding
// piece (GCC turns the zero loops into memset): 6-8% of a resnet20 step.
// Here each padded row is whole 16-lane stores, its data lanes read by one
// masked load per 16 columns; the zero runs between rows are vector stores.
// pad_image is the first to read a conv's input: without the prefetch it
// still took 12% of a 1-thread step's samples, with it 5% (perf, same load).
__mmask16 lanes_below(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? 0 : __mmask16((1u << n) - 1); }

QTK_AVX512 void zero_floats(float* p, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(p + i, _mm512_setzero_ps());
  if (i < n) _mm512_mask_storeu_ps(p + i, lanes_below(n - i), _mm512_setzero_ps());
}

// The first read of a conv's input (or output gradient) comes from memory:
// ask for the rows 4 KiB ahead (later rows of the image, then the next
// image) while copying this one. Prefetches never fault.
constexpr int64_t kPrefetchFloats = 1024;

// dst[0, len) = src[i - lead] where lead <= i < lead + n, else 0. Masked-off
// lanes are not read (integer arithmetic: no out-of-range pointer is formed).
QTK_AVX512 inline void copy_row(const float* src, int64_t lead, int64_t n, int64_t len, float* dst) {
  const auto ahead = reinterpret_cast<uintptr_t>(src) + static_cast<uintptr_t>(kPrefetchFloats * 4);
  for (int64_t j = 0; j < n; j += 16)  // (integer arithmetic: the address may lie past the buffer)
    _mm_prefetch(reinterpret_cast<const char*>(ahead + static_cast<uintptr_t>(j * 4)), _MM_HINT_T0);
  const auto base = reinterpret_cast<uintptr_t>(src) - static_cast<uintptr_t>(lead * 4);
  for (int64_t j = 0; j < len; j += 16) {
    const __mmask16 load = static_cast<__mmask16>(lanes_below(lead + n - j) & ~lanes_below(lead - j));
    const __m512 v = _mm512_maskz_loadu_ps(load, reinterpret_cast<const float*>(base + static_cast<uintptr_t>(j * 4)));
    _mm512_mask_storeu_ps(dst + j, lanes_below(len - j), v);
  }
}

QTK_AVX512 void pad_image_avx512(const float* image, int64_t channels, const Window2d& w, float* padded) {
  const int64_t hp = padded_h(w), wp = padded_w(w);
  for (int64_t c = 0; c < channels; ++c) {
    float* plane = padded + c * hp * wp;
    zero_floats(plane, w.pt * wp);
    for (int64_t y = 0; y < w.ih; ++y) copy_row(image + (c * w.ih + y) * w.iw, w.pl, w.iw, wp, plane + (w.pt + y) * wp);
    zero_floats(plane + (w.pt + w.ih) * wp, w.pb * wp);
  }
  zero_floats(padded + channels * hp * wp, (w.kw - 1) * w.dw + 16);
}

QTK_AVX512 void spread_rows_avx512(const float* dy, int64_t rows, const Window2d& w, float* spread) {
  const int64_t wp = padded_w(w);
  for (int64_t r = 0; r < rows * w.oh; ++r) copy_row(dy + r * w.ow, 0, w.ow, wp, spread + r * wp);
}
}  // namespace
#endif

void pad_image(const float* image, int64_t channels, const Window2d& w, float* padded) {
#ifdef QTK_TRAIN_X86
  if (rt::ref::sgemm_avx512_supported()) return pad_image_avx512(image, channels, w, padded);
#endif
  pad_image_reference(image, channels, w, padded);
}

void spread_rows(const float* dy, int64_t rows, const Window2d& w, float* spread) {
#ifdef QTK_TRAIN_X86
  if (rt::ref::sgemm_avx512_supported()) return spread_rows_avx512(dy, rows, w, spread);
#endif
  spread_rows_reference(dy, rows, w, spread);
}

std::vector<int64_t> tap_offsets(int64_t channels, const Window2d& w) {
  const int64_t hp = padded_h(w), wp = padded_w(w);
  std::vector<int64_t> off(static_cast<size_t>(channels * w.kh * w.kw));
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t ky = 0; ky < w.kh; ++ky)
      for (int64_t kx = 0; kx < w.kw; ++kx) off[(c * w.kh + ky) * w.kw + kx] = c * hp * wp + ky * w.dh * wp + kx * w.dw;
  return off;
}

void shifted_dots_reference(int64_t m, int64_t k, int64_t len, int64_t images, const float* dy, int64_t ldy,
                            int64_t dy_image, const float* x, int64_t x_image, const int64_t* off, float* dw,
                            int64_t ldw) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < k; ++r) {
      double s = 0;
      for (int64_t n = 0; n < images; ++n)
        for (int64_t q = 0; q < len; ++q)
          s += static_cast<double>(dy[n * dy_image + i * ldy + q]) * x[n * x_image + off[r] + q];
      dw[i * ldw + r] += static_cast<float>(s);
    }
}

#ifdef QTK_TRAIN_X86
namespace {
// Lane i of the result = the sum of the 16 lanes of v[i]: a transposing
// add tree (45 shuffles and adds for 16 sums, where one horizontal sum each
// took 15 adds; at 7x7 outputs the sums cost as much as the dots).
// (The maskz forms: GCC 12's plain ones trip -Wuninitialized.)
__attribute__((always_inline)) inline QTK_AVX512 __m512 sum16(const __m512* v) {
  constexpr __mmask16 kAll = 0xFFFF;
  __m512 p[8], q[4], r[2];
  for (int k = 0; k < 8; ++k)  // [a0+a2 b0+b2 a1+a3 b1+b3] per 128-bit group
    p[k] = _mm512_add_ps(_mm512_maskz_unpacklo_ps(kAll, v[2 * k], v[2 * k + 1]),
                         _mm512_maskz_unpackhi_ps(kAll, v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 4; ++k)  // [a b c d] partials per group
    q[k] = _mm512_add_ps(_mm512_shuffle_ps(p[2 * k], p[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(p[2 * k], p[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int k = 0; k < 2; ++k)  // groups (0+2, 1+3) of two quads
    r[k] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll, q[2 * k], q[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_maskz_shuffle_f32x4(kAll, q[2 * k], q[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll, r[0], r[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_maskz_shuffle_f32x4(kAll, r[0], r[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// MB rows of dy against RB shifted rows of x (MB * RB <= 32), 16 positions
// per step: MB + RB loads per MB * RB multiply-adds. The tail is masked.
// Every weight's sum is one vector accumulator folded by sum16, whose add
// tree is the same for each of its 16 inputs: the blocking does not change
// the result.
template <int MB, int RB>
QTK_AVX512 void dots_block(int64_t len, int64_t images, const float* dy, int64_t ldy, int64_t dy_image, const float* x,
                           int64_t x_image, const int64_t* off, float* dw, int64_t ldw) {
  static_assert(MB * RB <= 32, "at most two sum16 per block");
  constexpr int kAcc = MB * RB > 16 ? 32 : 16;
  __m512 acc[kAcc];
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (int64_t n = 0; n < images; ++n, dy += dy_image, x += x_image) {
    const float* xr[RB];
    for (int r = 0; r < RB; ++r) xr[r] = x + off[r];
    int64_t q = 0;
    for (; q + 16 <= len; q += 16) {
      __m512 a[MB];
      for (int i = 0; i < MB; ++i) a[i] = _mm512_loadu_ps(dy + i * ldy + q);
      for (int r = 0; r < RB; ++r) {
        const __m512 b = _mm512_loadu_ps(xr[r] + q);
        for (int i = 0; i < MB; ++i) acc[i * RB + r] = _mm512_fmadd_ps(a[i], b, acc[i * RB + r]);
      }
    }
    if (q < len) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (len - q)) - 1);
      __m512 a[MB];
      for (int i = 0; i < MB; ++i) a[i] = _mm512_maskz_loadu_ps(mask, dy + i * ldy + q);
      for (int r = 0; r < RB; ++r) {
        const __m512 b = _mm512_maskz_loadu_ps(mask, xr[r] + q);
        for (int i = 0; i < MB; ++i) acc[i * RB + r] = _mm512_fmadd_ps(a[i], b, acc[i * RB + r]);
      }
    }
  }
  alignas(64) float sums[kAcc];
  _mm512_store_ps(sums, sum16(acc));
  if (kAcc > 16) _mm512_store_ps(sums + 16, sum16(acc + 16));
  for (int i = 0; i < MB; ++i)
    for (int r = 0; r < RB; ++r) dw[i * ldw + r] += sums[i * RB + r];
}

template <int MB>
QTK_AVX512 void dots_rows(int64_t k, int64_t len, int64_t images, const float* dy, int64_t ldy, int64_t dy_image,
                          const float* x, int64_t x_image, const int64_t* off, float* dw, int64_t ldw) {
  // 4 x 6: 24 accumulators, 10 loads (most of them split over two cache
  // lines) per 24 multiply-adds, where 4 x 4 took 8 per 16 and waited on them.
  int64_t r = 0;
  for (; MB == 4 && r + 6 <= k; r += 6)
    dots_block<MB, 6>(len, images, dy, ldy, dy_image, x, x_image, off + r, dw + r, ldw);
  constexpr int kRB = 4;
  for (; r + kRB <= k; r += kRB)
    dots_block<MB, kRB>(len, images, dy, ldy, dy_image, x, x_image, off + r, dw + r, ldw);
  for (; r < k; ++r) dots_block<MB, 1>(len, images, dy, ldy, dy_image, x, x_image, off + r, dw + r, ldw);
}
}  // namespace
#endif

void shifted_dots(int64_t m, int64_t k, int64_t len, int64_t images, const float* dy, int64_t ldy, int64_t dy_image,
                  const float* x, int64_t x_image, const int64_t* off, float* dw, int64_t ldw) {
#ifdef QTK_TRAIN_X86
  if (rt::ref::sgemm_avx512_supported()) {
    int64_t i = 0;
    for (; i + 4 <= m; i += 4)
      dots_rows<4>(k, len, images, dy + i * ldy, ldy, dy_image, x, x_image, off, dw + i * ldw, ldw);
    for (; i < m; ++i) dots_rows<1>(k, len, images, dy + i * ldy, ldy, dy_image, x, x_image, off, dw + i * ldw, ldw);
    return;
  }
#endif
  shifted_dots_reference(m, k, len, images, dy, ldy, dy_image, x, x_image, off, dw, ldw);
}

}  // namespace qtk::train
