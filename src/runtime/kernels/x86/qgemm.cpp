// Packing, the output-stage parameters, the scalar kernels and the threaded
// driver of the int8 GEMM (qgemm.h). The AVX2 kernels are in qgemm_avx2.cpp.
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_pack_quads.h"
#include "core/alloc_hook.h"
#include "core/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>

#include "runtime/kernels/x86/qgemm_u8s8.h"
#include "runtime/kernels/x86/qgemm_vnni.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86 {

bool qgemm_avx2_supported() { return cpu_has_avx2(); }

bool qgemm_avx512_vnni_supported() { return cpu_has_avx512_vnni(); }

QgemmPath qgemm_resolve_path(QgemmPath p) {
  static const QgemmPath automatic = [] {
    if (env_flag_set("QTK_QGEMM_SCALAR")) return QgemmPath::kScalar;
    if (qgemm_avx512_vnni_supported() && !env_flag_set("QTK_QGEMM_NO_VNNI")) return QgemmPath::kAvx512Vnni;
    return qgemm_avx2_supported() ? QgemmPath::kAvx2 : QgemmPath::kScalar;
  }();
  if (p == QgemmPath::kAuto) return automatic;
  if (p == QgemmPath::kAvx512Vnni && !qgemm_avx512_vnni_supported()) p = QgemmPath::kAvx2;
  if (p == QgemmPath::kAvx2 && !qgemm_avx2_supported()) p = QgemmPath::kScalar;
  return p;
}

const char* qgemm_path_name(QgemmPath p) {
  switch (p) {
    case QgemmPath::kAuto: return "auto";
    case QgemmPath::kScalar: return "scalar";
    case QgemmPath::kAvx2: return "avx2";
    case QgemmPath::kAvx512Vnni: return "avx512vnni";
  }
  return "?";
}

namespace {

// Two int16 values in one packed word: lo (even k) in the low half.
inline int32_t pair_word(int32_t lo, int32_t hi) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
}

template <class T>
void pack_a_tile_typed(const T* base, int64_t stride_i, int64_t stride_j, int64_t m0, int rows, int64_t k,
                       const int32_t* zp, bool zp_per_row, int32_t* tile) {
  const int64_t kpairs = qgemm_kpairs(k);
  for (int i = 0; i < kQgemmMR; ++i) {
    int32_t* dst = tile + i;
    if (i >= rows) {
      for (int64_t q = 0; q < kpairs; ++q) dst[q * kQgemmMR] = 0;
      continue;
    }
    const T* row = base + (m0 + i) * stride_i;
    const int32_t z = zp[zp_per_row ? m0 + i : 0];
    const int64_t full = k / 2;
    if (stride_j == 1) {
      for (int64_t q = 0; q < full; ++q) dst[q * kQgemmMR] = pair_word(row[2 * q] - z, row[2 * q + 1] - z);
    } else {
      for (int64_t q = 0; q < full; ++q)
        dst[q * kQgemmMR] = pair_word(row[2 * q * stride_j] - z, row[(2 * q + 1) * stride_j] - z);
    }
    if (k % 2) dst[full * kQgemmMR] = pair_word(row[(k - 1) * stride_j] - z, 0);
  }
}

}  // namespace

namespace detail {

QgemmGrid qgemm_grid_for(int64_t m, const QgemmPackedB& b, int64_t tiles, ThreadPool* pool) {
  const bool split = pool != nullptr && m * b.n * std::max<int64_t>(b.k, 1) >= kQgemmMinParallelMacs;
  return qgemm_choose_grid(tiles, b.panels, split ? pool->size() : 1);
}

namespace {
// qgemm_run_grid's shared-out panels: `slots` threads, each over every A
// block, taking units of `group` panels.
void run_panels_shared(int64_t slots, int64_t ablocks, int64_t panels, int64_t group, ThreadPool& pool,
                       const std::function<void(int64_t, const std::function<int64_t()>&)>& fn) {
  const int64_t units = (panels + group - 1) / group;
  // Per (A block, slot): the units left of the slot's share, (front << 32) | back.
  auto range = [](int64_t front, int64_t back) { return (static_cast<uint64_t>(front) << 32) | static_cast<uint64_t>(back); };
  std::unique_ptr<std::atomic<uint64_t>[]> left(new std::atomic<uint64_t>[static_cast<size_t>(ablocks * slots)]);
  for (int64_t ab = 0; ab < ablocks; ++ab)
    for (int64_t i = 0; i < slots; ++i)
      left[static_cast<size_t>(ab * slots + i)].store(range(units * i / slots, units * (i + 1) / slots));
  pool.parallel_for(slots, [&](int64_t begin, int64_t end) {
    for (int64_t slot = begin; slot < end; ++slot)
      for (int64_t ab = 0; ab < ablocks; ++ab) {
        std::atomic<uint64_t>* shares = left.get() + ab * slots;
        int64_t s = 0;                // shares[(slot + s) % slots] is being taken from
        int64_t p = 0, p_end = 0;     // the unit in hand
        auto take_unit = [&]() -> int64_t {
          for (; s < slots; ++s) {
            std::atomic<uint64_t>& share = shares[(slot + s) % slots];
            uint64_t v = share.load(std::memory_order_relaxed);
            for (;;) {
              const int64_t front = static_cast<int64_t>(v >> 32), back = static_cast<int64_t>(v & 0xFFFFFFFFu);
              if (front >= back) break;
              const uint64_t taken = s == 0 ? range(front + 1, back) : range(front, back - 1);
              if (share.compare_exchange_weak(v, taken, std::memory_order_relaxed)) return s == 0 ? front : back - 1;
            }
          }
          return -1;
        };
        const std::function<int64_t()> next = [&]() -> int64_t {
          if (p == p_end) {
            const int64_t u = take_unit();
            if (u < 0) return -1;
            p = u * group;
            p_end = std::min(panels, p + group);
          }
          return p++;
        };
        fn(ab, next);
      }
  });
}

// Runs run_block(i) for every block of the grid, over the pool when there are several.
void qgemm_run_blocks(const QgemmGrid& grid, ThreadPool* pool, const std::function<void(int64_t)>& run_block) {
  const int64_t blocks = grid.tm * grid.tn;
  if (blocks == 1 || pool == nullptr) {
    for (int64_t i = 0; i < blocks; ++i) run_block(i);
    return;
  }
  pool->parallel_for(blocks, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) run_block(i);
  });
}
}  // namespace

void qgemm_run_grid(const QgemmGrid& grid, ThreadPool* pool, int64_t tiles, int64_t panels, int64_t block_tiles,
                    int64_t group, const QgemmRunTiles& run_tiles) {
  if (grid.tm == 1 && grid.tn > 1 && pool != nullptr) {
    run_panels_shared(grid.tn, (tiles + block_tiles - 1) / block_tiles, panels, std::max<int64_t>(group, 1), *pool,
                      [&](int64_t ab, const std::function<int64_t()>& next) {
                        run_tiles(ab * block_tiles, std::min(tiles, (ab + 1) * block_tiles), next);
                      });
    return;
  }
  qgemm_run_blocks(grid, pool, [&](int64_t index) {
    const auto [t_begin, t_end, p_begin, p_end] = qgemm_grid_block(grid, index, tiles, panels);
    for (int64_t t0 = t_begin; t0 < t_end; t0 += block_tiles) {
      int64_t p = p_begin;
      run_tiles(t0, std::min(t_end, t0 + block_tiles), [&]() -> int64_t { return p < p_end ? p++ : -1; });
    }
  });
}

QgemmGrid qgemm_choose_grid(int64_t tiles, int64_t panels, int threads) {
  // Splits tiles x panels into at most `threads` rectangles, minimising the
  // largest one; ties: fewer threads, then more row splits. Blocks side by
  // side in columns each pack the same rows of A, and with narrow outputs
  // (N = 64 bytes of codes) they write the same cache lines: a 3200 x 64
  // matmul split by panels ran slower on 2 threads than on 1.
  QgemmGrid best;
  int64_t best_cost = std::numeric_limits<int64_t>::max();
  for (int64_t tm = 1; tm <= threads; ++tm)
    for (int64_t tn = 1; tm * tn <= threads; ++tn) {
      if (tm > tiles || tn > panels) continue;
      const int64_t cost = ((tiles + tm - 1) / tm) * ((panels + tn - 1) / tn);
      const bool better = cost < best_cost ||
                          (cost == best_cost && (tm * tn < best.tm * best.tn ||
                                                 (tm * tn == best.tm * best.tn && tm > best.tm)));
      if (better) {
        best_cost = cost;
        best = {tm, tn};
      }
    }
  return best;
}

void qgemm_pack_a_tile(const QgemmCodes& a, int64_t m0, int rows, int64_t k, const int32_t* zero_points,
                       bool zp_per_row, int32_t* tile) {
  if (a.is_signed)
    pack_a_tile_typed(static_cast<const int8_t*>(a.data), a.stride_i, a.stride_j, m0, rows, k, zero_points,
                      zp_per_row, tile);
  else
    pack_a_tile_typed(static_cast<const uint8_t*>(a.data), a.stride_i, a.stride_j, m0, rows, k, zero_points,
                      zp_per_row, tile);
}

void qgemm_ukernel_scalar(int rows, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc) {
  uint32_t sum[kQgemmMR][kQgemmNR] = {};
  for (int64_t q = 0; q < kpairs; ++q) {
    const int32_t* aq = a + q * kQgemmMR;
    const int16_t* bq = b + q * 2 * kQgemmNR;
    for (int i = 0; i < rows; ++i) {
      const int32_t lo = static_cast<int16_t>(aq[i] & 0xffff);
      const int32_t hi = static_cast<int16_t>(static_cast<uint32_t>(aq[i]) >> 16);
      for (int j = 0; j < kQgemmNR; ++j) {
        const int64_t pair = static_cast<int64_t>(lo) * bq[2 * j] + static_cast<int64_t>(hi) * bq[2 * j + 1];
        sum[i][j] += static_cast<uint32_t>(pair);  // int32 wrap, like vpaddd
      }
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < kQgemmNR; ++j) acc[i * kQgemmNR + j] = static_cast<int32_t>(sum[i][j]);
}

void qgemm_epilogue_scalar(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0, const QgemmOutput& out) {
  for (int i = 0; i < mr; ++i) {
    const int64_t m = m0 + i;
    for (int j = 0; j < nr; ++j) {
      const int64_t n = n0 + j;
      const int64_t ch = out.channel_is_row ? m : n;
      int32_t v = acc[i * kQgemmNR + j];
      if (out.bias) {
        const int32_t b = out.bias[m * out.bias_rs + n * out.bias_cs];
        if (out.bias_saturates) {
          const int64_t s = static_cast<int64_t>(v) + b;
          v = static_cast<int32_t>(std::clamp<int64_t>(s, std::numeric_limits<int32_t>::min(),
                                                       std::numeric_limits<int32_t>::max()));
        } else {
          v = static_cast<int32_t>(static_cast<uint32_t>(v) + static_cast<uint32_t>(b));
        }
      }
      const int64_t o = m * out.ldo + n;
      switch (out.kind) {
        case QgemmOutputKind::kInt32: static_cast<int32_t*>(out.out)[o] = v; break;
        case QgemmOutputKind::kFloat: static_cast<float*>(out.out)[o] = static_cast<float>(v) * out.scale[ch]; break;
        case QgemmOutputKind::kCodes: {
          const QgemmRequant& r = *out.requant;
          const int32_t q = quant::requantize_to_code(v, r.mult[r.mult.size() == 1 ? 0 : ch], r.zero_point, r.qmin,
                                                      r.qmax);
          if (out.codes_signed) static_cast<int8_t*>(out.out)[o] = static_cast<int8_t>(q);
          else static_cast<uint8_t*>(out.out)[o] = static_cast<uint8_t>(q);
          break;
        }
      }
    }
  }
}

void qgemm_expand_a_scalar(const QgemmNarrowA& a, int64_t t0, int64_t t1, int32_t* out) {
  const int64_t len = a.kpairs * 2 * kQgemmMR;  // bytes of a tile, int16 of its expansion
  auto* dst = reinterpret_cast<uint16_t*>(out);
  if (a.quads) {  // int8, zero point 0: k pair p of row i is bytes 2(p % 2).. of its quad p / 2
    for (int64_t t = t0; t < t1; ++t) {
      const uint8_t* src = a.tile(t);
      uint16_t* d = dst + (t - t0) * len;
      for (int64_t p = 0; p < a.kpairs; ++p)
        for (int i = 0; i < kQgemmMR; ++i)
          for (int h = 0; h < 2; ++h)
            d[(p * kQgemmMR + i) * 2 + h] =
                static_cast<uint16_t>(static_cast<int8_t>(src[(p / 2) * 4 * kQgemmMR + 4 * i + 2 * (p % 2) + h]));
    }
    return;
  }
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* src = a.tile(t);
    const int32_t* zp = a.zero_points.data() + t * kQgemmMR;
    uint16_t* d = dst + (t - t0) * len;
    for (int64_t j = 0; j < len; ++j) {
      const int32_t v = a.is_signed ? static_cast<int8_t>(src[j]) : src[j];
      d[j] = static_cast<uint16_t>(v - zp[(j / 2) % kQgemmMR]);
    }
  }
}

QgemmExpandA qgemm_expand_a(QgemmPath resolved) {
  return resolved == QgemmPath::kScalar ? qgemm_expand_a_scalar : qgemm_expand_a_avx2;
}

QgemmUkernel qgemm_ukernel(QgemmPath resolved) {
  return resolved == QgemmPath::kScalar ? qgemm_ukernel_scalar : qgemm_ukernel_avx2;
}

QgemmEpilogue qgemm_epilogue(QgemmPath resolved, const QgemmOutput& out) {
  return resolved == QgemmPath::kScalar ? qgemm_epilogue_scalar : qgemm_epilogue_avx2_for(out);
}

}  // namespace detail

// Each layout is made once (thread-safe); a repack of the same object
// (qgemm_pack_b on a B nobody else shares) clears the flags and keeps the
// buffers, so per-matrix packing (batched QLinearMatMul) allocates nothing.
struct QgemmPackedB::Lazy {
  struct Once {
    std::atomic<bool> done{false};
    template <class F>
    void operator()(std::mutex& mu, F make) {
      if (done.load(std::memory_order_acquire)) return;
      std::lock_guard<std::mutex> lock(mu);
      if (done.load(std::memory_order_relaxed)) return;
      make();
      done.store(true, std::memory_order_release);
    }
  };
  std::mutex mu;
  Once pairs_once, narrow_once, quads_once;
  AlignedBuffer<int16_t> pairs;
  AlignedBuffer<uint8_t> narrow;
  QgemmQuadB quads;
  void reset() {
    for (Once* o : {&pairs_once, &narrow_once, &quads_once}) o->done.store(false, std::memory_order_relaxed);
  }
};

void qgemm_pack_b(const QgemmCodes& b, int64_t k, int64_t n, const std::vector<int32_t>& zero_points,
                  QgemmPackedB& out, void* consumable, bool per_call) {
  out.k = k;
  out.n = n;
  out.kpairs = qgemm_kpairs(k);
  out.panels = (n + kQgemmNR - 1) / kQgemmNR;
  out.is_signed = b.is_signed;
  out.source = b;
  if (out.lazy && out.lazy.use_count() == 1) out.lazy->reset();
  else out.lazy = std::make_shared<QgemmPackedB::Lazy>();
  out.zero_points.assign(static_cast<size_t>(out.panels * kQgemmNR), 0);
  out.any_zero_point = false;
  for (int64_t j = 0; j < n; ++j) {
    out.zero_points[static_cast<size_t>(j)] = zero_points[zero_points.size() > 1 ? j : 0];
    out.any_zero_point = out.any_zero_point || out.zero_points[static_cast<size_t>(j)] != 0;
  }
  out.u8s8 = !per_call && detail::qgemm_u8s8_wanted(b, k, n, out.zero_points);
  // The layout the automatic tier reads, now (prepare time).
  switch (qgemm_resolve_path(QgemmPath::kAuto)) {
    case QgemmPath::kAvx512Vnni:
      out.consumable = consumable;
      out.quads();
      out.consumable = nullptr;
      break;
    case QgemmPath::kAvx2:
      out.consumable = consumable;
      if (out.u8s8) out.quads();
      else out.narrow();
      out.consumable = nullptr;
      break;
    default: out.pairs(); break;
  }
}

uint64_t QgemmPackedB::narrow_bytes() const {
  if (u8s8)  // the quads, their column sums and zero points (QgemmQuadB), and zero_points
    return static_cast<uint64_t>(std::max<int64_t>(panels * qgemm_kquads(k) * 4 * kQgemmNR, 1)) +
           3 * zero_points.size() * sizeof(int32_t);
  return static_cast<uint64_t>(std::max<int64_t>(panels * kpairs * 2 * kQgemmNR, 1)) +
         zero_points.size() * sizeof(int32_t);
}

const int16_t* QgemmPackedB::pairs() const {
  lazy->pairs_once(lazy->mu, [this] {
    const int64_t panel_len = kpairs * 2 * kQgemmNR, len = std::max<int64_t>(panels * panel_len, 1);
    int16_t* dst = lazy->pairs.get(len);
    std::memset(dst, 0, static_cast<size_t>(len) * sizeof(int16_t));
    for (int64_t col = 0; col < n; ++col) {
      const int32_t z = zero_points[static_cast<size_t>(col)];
      int16_t* d = dst + (col / kQgemmNR) * panel_len + 2 * (col % kQgemmNR);
      for (int64_t kk = 0; kk < k; ++kk)
        d[(kk / 2) * 2 * kQgemmNR + (kk % 2)] = static_cast<int16_t>(source.at(kk, col) - z);
    }
  });
  return lazy->pairs.data();
}

const uint8_t* QgemmPackedB::narrow() const {
  lazy->narrow_once(lazy->mu, [this] {
    const int64_t panel_len = kpairs * 2 * kQgemmNR, len = std::max<int64_t>(panels * panel_len, 1);
    uint8_t* dst = lazy->narrow.get(len);
    std::memset(dst, 0, static_cast<size_t>(len));
    // Column col is a contiguous row of the source (B given transposed):
    // the panels done so far are the source's first bytes (as in quads()).
    const bool consume = consumable != nullptr && source.stride_i == 1 && source.stride_j == k;
    for (int64_t col = 0; col < n; ++col) {
      if (consume && col > 0 && col % kQgemmNR == 0) core::discard_pages(consumable, static_cast<size_t>(col * k));
      // Past k: zeros (A is zero there too).
      uint8_t* d = dst + (col / kQgemmNR) * panel_len + 2 * (col % kQgemmNR);
      for (int64_t kk = 0; kk < k; ++kk)
        d[(kk / 2) * 2 * kQgemmNR + (kk % 2)] = static_cast<uint8_t>(source.at(kk, col));
    }
  });
  return lazy->narrow.data();
}

void qgemm_unpack_quads_b(const QgemmPackedB& b, bool transposed, void* out) {
  // Column j in panel j / NR at byte 4 * (j % NR), k in quads of 4 rows; codes made signed (u8 - 128).
  const QgemmQuadB& q = b.quads();
  const int shift = b.is_signed ? 0 : 128;
  const int64_t panel_len = q.kquads * 4 * kQgemmNR;
  auto* dst = static_cast<uint8_t*>(out);
  for (int64_t j = 0; j < b.n; ++j) {
    const int8_t* col = q.codes.data() + (j / kQgemmNR) * panel_len + 4 * (j % kQgemmNR);
    for (int64_t kk = 0; kk < b.k; ++kk)
      dst[transposed ? j * b.k + kk : kk * b.n + j] = static_cast<uint8_t>(col[(kk / 4) * 4 * kQgemmNR + kk % 4] + shift);
  }
}

void qgemm_unpack_narrow_b(const QgemmPackedB& b, bool transposed, void* out) {
  if (b.u8s8) return qgemm_unpack_quads_b(b, transposed, out);  // the AVX2 tier holds the quads
  // Column j in panel j / NR at byte 2 * (j % NR), k in pairs of 2 rows.
  const uint8_t* codes = b.narrow();
  const int64_t panel_len = b.kpairs * 2 * kQgemmNR;
  auto* dst = static_cast<uint8_t*>(out);
  for (int64_t j = 0; j < b.n; ++j) {
    const uint8_t* col = codes + (j / kQgemmNR) * panel_len + 2 * (j % kQgemmNR);
    for (int64_t kk = 0; kk < b.k; ++kk)
      dst[transposed ? j * b.k + kk : kk * b.n + j] = col[(kk / 2) * 2 * kQgemmNR + kk % 2];
  }
}

const QgemmQuadB& QgemmPackedB::quads() const {
  lazy->quads_once(lazy->mu, [this] {
    QgemmQuadB& q = lazy->quads;
    q.kquads = qgemm_kquads(k);
    const int64_t cols = panels * kQgemmNR, panel_len = q.kquads * 4 * kQgemmNR;
    const int64_t len = std::max<int64_t>(panels * panel_len, 1);
    int8_t* dst = q.codes.get(len);
    if (n == 0) std::memset(dst, 0, static_cast<size_t>(len));
    q.colsum.assign(static_cast<size_t>(cols), 0);
    q.zero_point.assign(static_cast<size_t>(cols), 0);
    q.any_zero_point = false;
    const int shift = is_signed ? 0 : 128;  // u8 codes and zero points - 128: signed bytes
    // Column col is a contiguous row of the source (B given transposed):
    // the panels done so far are the source's first bytes.
    const bool consume = consumable != nullptr && source.stride_i == 1 && source.stride_j == k;
    if (!consume && source.stride_j == 1 && n > 0 && qgemm_resolve_path(QgemmPath::kAuto) == QgemmPath::kAvx512Vnni) {
      // Rows of contiguous columns (an activation B): 16 columns × 4 rows a step.
      detail::qgemm_pack_quads_rows_avx512(static_cast<const uint8_t*>(source.data), source.stride_i, is_signed, k, n,
                                           panels, panel_len, dst, q.colsum.data());
      for (int64_t col = 0; col < n; ++col) {
        const int32_t zp = zero_points[static_cast<size_t>(col)];
        q.zero_point[static_cast<size_t>(col)] = zp - shift;
        q.any_zero_point = q.any_zero_point || zp != shift;
      }
      return;
    }
    for (int64_t col = 0; col < n; ++col) {
      if (col % kQgemmNR == 0) {  // a panel's bytes, zero where no code lands (k and n padding)
        std::memset(dst + (col / kQgemmNR) * panel_len, 0, static_cast<size_t>(panel_len));
        if (consume && col > 0) core::discard_pages(consumable, static_cast<size_t>(col * k));
      }
      const int32_t zp = zero_points[static_cast<size_t>(col)];
      q.zero_point[static_cast<size_t>(col)] = zp - shift;
      q.any_zero_point = q.any_zero_point || zp != shift;
      int8_t* d = dst + (col / kQgemmNR) * panel_len + 4 * (col % kQgemmNR);
      int32_t sum = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const int32_t v = source.at(kk, col) - shift;
        d[(kk / 4) * 4 * kQgemmNR + kk % 4] = static_cast<int8_t>(v);
        sum += v;
      }
      q.colsum[static_cast<size_t>(col)] = sum;
    }
  });
  return lazy->quads;
}

void qgemm_pack_a(const QgemmCodes& a, int64_t m, int64_t k, const std::vector<int32_t>& zero_points,
                  QgemmPackedA& out) {
  out.m = m;
  out.k = k;
  out.kpairs = qgemm_kpairs(k);
  out.tiles = (m + kQgemmMR - 1) / kQgemmMR;
  int32_t* dst = out.storage.get(std::max<int64_t>(out.tiles * out.kpairs * kQgemmMR, 1));
  for (int64_t t = 0; t < out.tiles; ++t)
    detail::qgemm_pack_a_tile(a, t * kQgemmMR, static_cast<int>(std::min<int64_t>(kQgemmMR, m - t * kQgemmMR)), k,
                              zero_points.data(), zero_points.size() > 1, dst + t * out.kpairs * kQgemmMR);
}

void qgemm_pack_narrow_a(const QgemmCodes& a, int64_t m, int64_t k, const std::vector<int32_t>& zero_points,
                         QgemmNarrowA& out) {
  out.m = m;
  out.k = k;
  out.kpairs = qgemm_kpairs(k);
  out.tiles = (m + kQgemmMR - 1) / kQgemmMR;
  out.is_signed = a.is_signed;
  const int64_t len = out.kpairs * 2 * kQgemmMR, bytes = out.tiles * len + kQgemmExpandSlack;
  uint8_t* dst = out.codes.get(bytes);
  std::memset(dst, 0, static_cast<size_t>(bytes));
  out.zero_points.assign(static_cast<size_t>(out.tiles * kQgemmMR), 0);
  out.any_zero_point = false;
  const int32_t lo = a.is_signed ? -128 : 0, hi = a.is_signed ? 127 : 255;
  for (int64_t i = 0; i < m; ++i) {
    const int32_t z = zero_points[zero_points.size() > 1 ? static_cast<size_t>(i) : 0];
    if (z < lo || z > hi) {  // the pad byte could not hold it
      std::fprintf(stderr, "qtk: internal error: zero point %d is no %s code\n", z, a.is_signed ? "int8" : "uint8");
      std::abort();
    }
    out.zero_points[static_cast<size_t>(i)] = z;
    out.any_zero_point = out.any_zero_point || z != 0;
    uint8_t* row = dst + (i / kQgemmMR) * len + 2 * (i % kQgemmMR);
    for (int64_t j = 0; j < k; ++j) row[(j / 2) * 2 * kQgemmMR + j % 2] = static_cast<uint8_t>(a.at(i, j));
    if (k % 2) row[(k / 2) * 2 * kQgemmMR + 1] = static_cast<uint8_t>(z);  // expands to z - z = 0
  }
}

void qgemm_unpack_narrow_a(const QgemmNarrowA& a, void* out) {
  const int64_t len = a.kpairs * 2 * kQgemmMR;
  auto* dst = static_cast<uint8_t*>(out);
  if (a.quads) {
    for (int64_t i = 0; i < a.m; ++i)
      for (int64_t j = 0; j < a.k; ++j)
        dst[i * a.k + j] = a.tile(i / kQgemmMR)[(j / 4) * 4 * kQgemmMR + 4 * (i % kQgemmMR) + j % 4];
    return;
  }
  for (int64_t i = 0; i < a.m; ++i) {
    const uint8_t* row = a.codes.data() + (i / kQgemmMR) * len + 2 * (i % kQgemmMR);
    for (int64_t j = 0; j < a.k; ++j) dst[i * a.k + j] = row[(j / 2) * 2 * kQgemmMR + j % 2];
  }
}

uint64_t QgemmNarrowA::bytes() const {
  return static_cast<uint64_t>(tiles * tile_bytes() + kQgemmExpandSlack) +
         (zero_points.size() + row_sums.size()) * sizeof(int32_t);
}

QgemmRequantChannel qgemm_requant_channel(const QgemmRequant& r, int64_t c) {
  const quant::FixedPointMultiplier f = r.mult[r.mult.size() == 1 || c >= r.channels ? 0 : static_cast<size_t>(c)];
  const int n = std::clamp(31 - f.shift, 1, 62);
  const int64_t bias = int64_t{1} << (62 - n);
  return {f.multiplier,
          (int64_t{1} << 62) + (int64_t{1} << (n - 1)),
          n,
          r.qmin - r.zero_point + bias,
          r.qmax - r.zero_point + bias,
          r.zero_point - bias,
          static_cast<int32_t>(static_cast<uint32_t>(-bias))};  // -2^(62-n) mod 2^32 (n >= 31 when below one)
}

namespace detail {

void check_requant_layout(const QgemmOutput& out) {
  if (out.kind != QgemmOutputKind::kCodes || out.requant == nullptr) return;
  const QgemmRequantFor want = out.channel_is_row ? QgemmRequantFor::kRows : QgemmRequantFor::kColumns;
  if (out.requant->use == want) return;
  std::fprintf(stderr, "qtk: internal error: a requantization made for %s read by the %s output stage\n",
               out.requant->use == QgemmRequantFor::kRows ? "rows" : "columns",
               out.channel_is_row ? "row" : "column");
  std::abort();
}

}  // namespace detail

QgemmRequant qgemm_make_requant(const std::vector<quant::FixedPointMultiplier>& mult, int64_t channels,
                                int32_t zero_point, int32_t qmin, int32_t qmax, QgemmRequantFor use) {
  QgemmRequant r;
  r.channels = channels;
  r.use = use;
  r.mult = mult;
  r.zero_point = zero_point;
  r.qmin = qmin;
  r.qmax = qmax;
  r.below_one = true;
  for (const auto& f : mult) r.below_one = r.below_one && f.shift <= 0;
  // Per channel, for requantize_fixed_point's  r = (acc·m + 2^(n-1)) >> n
  // without a 64-bit arithmetic shift (AVX2 has none): with the offset 2^62,
  // u = acc·m + 2^62 + 2^(n-1) is never negative, and u >>> n = r + 2^(62-n)
  // exactly (2^62 is a multiple of 2^n). Clamping u >>> n to
  // [qmin - zp, qmax - zp] + 2^(62-n) and adding zp - 2^(62-n) gives the code
  // (qgemm_requant_channel).
  if (use == QgemmRequantFor::kRows) {
    r.rows.resize(static_cast<size_t>(std::max<int64_t>(channels, 1)));
    if (!r.below_one) r.row_clamps.resize(r.rows.size());
    for (size_t c = 0; c < r.rows.size(); ++c) {
      const QgemmRequantChannel k = qgemm_requant_channel(r, static_cast<int64_t>(c));
      r.rows[c] = {k.add, k.shift, static_cast<int32_t>(k.mult), k.round_offset};
      if (!r.below_one) r.row_clamps[c] = {k.lo, k.hi, k.off};
    }
    return r;
  }
  const int64_t groups = (std::max<int64_t>(channels, 1) + kQgemmNR - 1) / kQgemmNR * (kQgemmNR / 8);
  r.lanes.assign(static_cast<size_t>(groups * 48), 0);
  r.round_offset.assign(static_cast<size_t>(groups * 8), 0);
  for (int64_t c = 0; c < groups * 8; ++c) {
    const QgemmRequantChannel k = qgemm_requant_channel(r, c);
    int64_t* g = &r.lanes[(c / 8) * 48];
    const int lane = static_cast<int>((c % 2) * 4 + (c % 8) / 2);
    g[0 * 8 + lane] = k.mult;
    g[1 * 8 + lane] = k.add;
    g[2 * 8 + lane] = k.shift;
    g[3 * 8 + lane] = k.lo;
    g[4 * 8 + lane] = k.hi;
    g[5 * 8 + lane] = k.off;
    r.round_offset[static_cast<size_t>(c)] = k.round_offset;
  }
  return r;
}

void qgemm(int64_t m, const QgemmCodes& a, int32_t a_zero_point, const QgemmPackedB& b, const QgemmOutput& out,
           ThreadPool* pool, QgemmPath path) {
  detail::check_requant_layout(out);
  if (m <= 0 || b.n <= 0) return;
  const QgemmPath resolved = qgemm_resolve_path(path);
  if (resolved == QgemmPath::kAvx512Vnni) return detail::qgemm_vnni(m, a, a_zero_point, b, out, pool);
  if (resolved == QgemmPath::kAvx2 && b.u8s8) return detail::qgemm_u8s8(m, a, a_zero_point, b, out, pool);
  const detail::QgemmUkernel ukernel = detail::qgemm_ukernel(resolved);
  const detail::QgemmEpilogue epilogue = detail::qgemm_epilogue(resolved, out);
  const detail::QgemmPackATile pack_a =
      resolved == QgemmPath::kAvx2 ? detail::qgemm_pack_a_tile_avx2 : detail::qgemm_pack_a_tile;
  const int64_t tiles = (m + kQgemmMR - 1) / kQgemmMR, kpairs = b.kpairs, tile_len = kpairs * kQgemmMR;
  const detail::QgemmGrid grid = detail::qgemm_grid_for(m, b, tiles, pool);
  const int64_t block_tiles = std::max<int64_t>(1, detail::kQgemmABlockBytes / std::max<int64_t>(tile_len * 4, 1));

  // The AVX2 tier reads B's 8-bit codes (QgemmPackedB::narrow), the scalar
  // tier the int16 pairs.
  const uint8_t* narrow = resolved == QgemmPath::kAvx2 ? b.narrow() : nullptr;
  const int16_t* pairs = narrow ? nullptr : b.pairs();
  const int64_t panel_len = kpairs * 2 * kQgemmNR;
  // A tiles [t0, t1) against the panels next() hands out (-1: done); packs
  // the tiles only if there is a panel.
  auto run_tiles = [&](int64_t t0, int64_t t1, const std::function<int64_t()>& next) {
    int64_t p = next();
    if (p < 0) return;
    thread_local AlignedBuffer<int32_t> a_buffer;
    thread_local AlignedBuffer<int16_t> panel_buffer;
    alignas(64) int32_t acc[kQgemmMR * kQgemmNR];
    int32_t* packed = a_buffer.get((t1 - t0) * tile_len);
    for (int64_t t = t0; t < t1; ++t)
      pack_a(a, t * kQgemmMR, static_cast<int>(std::min<int64_t>(kQgemmMR, m - t * kQgemmMR)), b.k, &a_zero_point,
             false, packed + (t - t0) * tile_len);
    if (narrow && t1 - t0 == 1) {
      // One tile (few rows: bound by reading B): the micro-kernel widens
      // the codes in registers, the zero points come out as
      // acc -= zp[n] · Σ_k (a - a_zp).
      const int rows = static_cast<int>(std::min<int64_t>(kQgemmMR, m - t0 * kQgemmMR));
      int32_t sums[kQgemmMR];
      if (b.any_zero_point) detail::qgemm_tile_row_sums_avx2(kpairs, packed, sums);
      for (; p >= 0; p = next()) {
        const int nr = static_cast<int>(std::min<int64_t>(kQgemmNR, b.n - p * kQgemmNR));
        detail::qgemm_ukernel_narrow_avx2(rows, kpairs, packed, narrow + p * panel_len, b.is_signed,
                                         b.any_zero_point ? b.zero_points.data() + p * kQgemmNR : nullptr, sums, acc);
        epilogue(acc, rows, nr, t0 * kQgemmMR, p * kQgemmNR, out);
      }
      return;
    }
    // Several tiles: each panel widened once (minus its zero points) into
    // an L1-resident int16 copy that every tile of the block reads.
    int16_t* widened = narrow ? panel_buffer.get(panel_len) : nullptr;
    for (; p >= 0; p = next()) {
      const int nr = static_cast<int>(std::min<int64_t>(kQgemmNR, b.n - p * kQgemmNR));
      const int16_t* panel = pairs ? pairs + p * panel_len : widened;
      if (narrow)
        detail::qgemm_expand_b_panel_avx2(narrow + p * panel_len, kpairs, b.is_signed,
                                          b.any_zero_point ? b.zero_points.data() + p * kQgemmNR : nullptr, widened);
      for (int64_t t = t0; t < t1; ++t) {
        const int rows = static_cast<int>(std::min<int64_t>(kQgemmMR, m - t * kQgemmMR));
        ukernel(rows, kpairs, packed + (t - t0) * tile_len, panel, acc);
        epilogue(acc, rows, nr, t * kQgemmMR, p * kQgemmNR, out);
      }
    }
  };
  detail::qgemm_run_grid(grid, pool, tiles, b.panels, block_tiles, detail::qgemm_panel_group(out), run_tiles);
}

}  // namespace qtk::rt::x86
