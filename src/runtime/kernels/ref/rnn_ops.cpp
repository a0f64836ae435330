// LSTM, GRU and RNN reference kernels with the full ONNX semantics:
// forward/reverse/bidirectional, per-batch sequence_lens, optional bias,
// initial states and peepholes, clip, custom activations, GRU
// linear_before_reset, LSTM input_forget and the batch-first layout (opset 14).
//
// Everything is computed in double and stored in the input's float type. The
// input projection X*W^T + biases is done for all time steps up front; each
// step then adds H_{t-1}*R^T.
#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/rnn_activation.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace {

using ref::RnnActivation;

enum class Cell { kLstm, kGru, kRnn };

int gate_count(Cell c) { return c == Cell::kLstm ? 4 : c == Cell::kGru ? 3 : 1; }
const char* cell_name(Cell c) { return c == Cell::kLstm ? "LSTM" : c == Cell::kGru ? "GRU" : "RNN"; }

struct RnnAttrs {
  Cell cell = Cell::kLstm;
  int dirs = 1;
  bool reverse = false;  // single direction, run backwards
  int64_t hidden = -1;   // -1 when the attribute is absent (taken from R)
  double clip = 0;       // <= 0: no clipping
  bool batch_first = false;
  bool linear_before_reset = false;
  bool input_forget = false;
  std::vector<RnnActivation> acts;  // acts_per_dir for each direction
  int acts_per_dir = 1;
};

// Input positions shared by the three ops.
enum { kX = 0, kW = 1, kR = 2, kB = 3, kSeqLens = 4, kInitH = 5, kInitC = 6, kP = 7 };

std::vector<double> read_doubles(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::kFloat64)
    std::copy(t.data<double>(), t.data<double>() + t.numel(), v.begin());
  else
    std::copy(t.data<float>(), t.data<float>() + t.numel(), v.begin());
  return v;
}

Tensor write_doubles(DType dt, const Shape& shape, const std::vector<double>& v) {
  Tensor t(dt, shape);
  if (dt == DType::kFloat64)
    std::copy(v.begin(), v.end(), t.data<double>());
  else
    for (size_t i = 0; i < v.size(); ++i) t.data<float>()[i] = static_cast<float>(v[i]);
  return t;
}

Status expect_shape(const Tensor& t, const Shape& want, const char* what) {
  if (t.shape() != want)
    return invalid_argument(std::string(what) + " must have shape " + shape_to_string(want) + ", got " +
                            shape_to_string(t.shape()));
  return Status::Ok();
}

struct Dims {
  int64_t seq, batch, input, hidden, dirs, gates;
};

// The tensors of one run, as doubles, and where things live in them.
struct RnnData {
  Dims d;
  bool batch_first;
  std::vector<double> x, w, r, b, p, init_h, init_c;
  std::vector<int64_t> lens;
  // Outputs in the seq-first layout [seq, dirs, batch, H] / [dirs, batch, H].
  std::vector<double> y, y_h, y_c;

  const double* x_at(int64_t t, int64_t bt) const {
    return x.data() + (batch_first ? bt * d.seq + t : t * d.batch + bt) * d.input;
  }
  // Offset of (direction, batch) in initial_h / initial_c.
  int64_t state_at(int64_t dir, int64_t bt) const {
    return (batch_first ? bt * d.dirs + dir : dir * d.batch + bt) * d.hidden;
  }
};

double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

// Runs one direction over the whole batch.
void run_direction(const RnnAttrs& a, RnnData& D, int64_t dir, bool backwards, ThreadPool& pool) {
  const Dims& d = D.d;
  const int64_t H = d.hidden, GH = d.gates * H, I = d.input;
  const double* W = D.w.data() + dir * GH * I;
  const double* R = D.r.data() + dir * GH * H;
  const double* Wb = D.b.data() + dir * 2 * GH;
  const double* Rb = Wb + GH;
  const double* P = D.p.empty() ? nullptr : D.p.data() + dir * 3 * H;
  const RnnActivation* act = a.acts.data() + dir * a.acts_per_dir;
  const double clip = a.clip;
  auto clipped = [clip](double v) { return clip > 0 ? std::clamp(v, -clip, clip) : v; };

  // xw[(t * batch + b) * GH + j] = X_t[b] . W[j] + Wb[j] (+ Rb[j], except the
  // GRU candidate gate whose Rb sits inside the reset product).
  std::vector<double> xw(static_cast<size_t>(d.seq * d.batch * GH));
  pool.parallel_for(
      d.seq * d.batch,
      [&](int64_t r0, int64_t r1) {
        for (int64_t row = r0; row < r1; ++row) {
          const double* xr = D.x_at(row / d.batch, row % d.batch);
          double* out = xw.data() + row * GH;
          for (int64_t j = 0; j < GH; ++j) {
            const bool rb_inside = a.cell == Cell::kGru && j >= 2 * H;
            out[j] = dot(xr, W + j * I, I) + Wb[j] + (rb_inside ? 0.0 : Rb[j]);
          }
        }
      },
      std::max<int64_t>(1, 4096 / std::max<int64_t>(1, GH * I)));

  std::vector<double> h(static_cast<size_t>(d.batch * H), 0.0), c(h.size(), 0.0);
  for (int64_t bt = 0; bt < d.batch; ++bt) {
    if (!D.init_h.empty()) std::copy_n(D.init_h.data() + D.state_at(dir, bt), H, h.data() + bt * H);
    if (!D.init_c.empty()) std::copy_n(D.init_c.data() + D.state_at(dir, bt), H, c.data() + bt * H);
  }

  auto step = [&](int64_t bt, int64_t t, std::vector<double>& g, std::vector<double>& tmp) {
    double* hb = h.data() + bt * H;
    double* cb = c.data() + bt * H;
    const double* xg = xw.data() + (t * d.batch + bt) * GH;
    switch (a.cell) {
      case Cell::kLstm: {
        // Gate rows in W/R/B are ordered i, o, f, c; P holds i, o, f.
        for (int64_t j = 0; j < GH; ++j) g[j] = xg[j] + dot(hb, R + j * H, H);
        for (int64_t k = 0; k < H; ++k) {
          double gi = g[k], go = g[H + k], gf = g[2 * H + k], gc = g[3 * H + k];
          if (P) {
            gi += P[k] * cb[k];
            gf += P[2 * H + k] * cb[k];
          }
          const double it = act[0](clipped(gi));
          const double ft = a.input_forget ? 1.0 - it : act[0](clipped(gf));
          const double ct = act[1](clipped(gc));
          const double c_new = ft * cb[k] + it * ct;
          if (P) go += P[H + k] * c_new;
          const double ot = act[0](clipped(go));
          cb[k] = c_new;
          tmp[k] = ot * act[2](c_new);
        }
        std::copy_n(tmp.data(), H, hb);
        break;
      }
      case Cell::kGru: {
        // Gate rows ordered z, r, h.
        for (int64_t j = 0; j < 2 * H; ++j) g[j] = act[0](clipped(xg[j] + dot(hb, R + j * H, H)));
        const double* Rh = R + 2 * H * H;
        const double* Rbh = Rb + 2 * H;
        if (a.linear_before_reset) {
          for (int64_t k = 0; k < H; ++k)
            g[2 * H + k] = xg[2 * H + k] + g[H + k] * (dot(hb, Rh + k * H, H) + Rbh[k]);
        } else {
          for (int64_t k = 0; k < H; ++k) tmp[k] = g[H + k] * hb[k];  // r (.) H_{t-1}
          for (int64_t k = 0; k < H; ++k) g[2 * H + k] = xg[2 * H + k] + dot(tmp.data(), Rh + k * H, H) + Rbh[k];
        }
        for (int64_t k = 0; k < H; ++k) {
          const double z = g[k], ht = act[1](clipped(g[2 * H + k]));
          hb[k] = (1.0 - z) * ht + z * hb[k];
        }
        break;
      }
      case Cell::kRnn: {
        for (int64_t j = 0; j < H; ++j) g[j] = act[0](clipped(xg[j] + dot(hb, R + j * H, H)));
        std::copy_n(g.data(), H, hb);
        break;
      }
    }
  };

  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, GH * H));
  for (int64_t s = 0; s < d.seq; ++s) {
    pool.parallel_for(
        d.batch,
        [&](int64_t b0, int64_t b1) {
          std::vector<double> g(static_cast<size_t>(GH)), tmp(static_cast<size_t>(H));
          for (int64_t bt = b0; bt < b1; ++bt) {
            const int64_t len = D.lens[bt];
            if (s >= len) continue;  // past this sequence's end: Y stays 0
            const int64_t t = backwards ? len - 1 - s : s;
            step(bt, t, g, tmp);
            std::copy_n(h.data() + bt * H, H, D.y.data() + ((t * d.dirs + dir) * d.batch + bt) * H);
          }
        },
        grain);
  }
  for (int64_t bt = 0; bt < d.batch; ++bt) {
    std::copy_n(h.data() + bt * H, H, D.y_h.data() + (dir * d.batch + bt) * H);
    std::copy_n(c.data() + bt * H, H, D.y_c.data() + (dir * d.batch + bt) * H);
  }
}

Status run_rnn(const RnnAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 3));
  const Tensor& X = ctx.input(kX);
  const DType dt = X.dtype();
  if (dt != DType::kFloat32 && dt != DType::kFloat64)
    return unsupported(std::string(cell_name(a.cell)) + " input dtype " + dtype_name(dt) + " (float, double only)");
  if (X.rank() != 3)
    return invalid_argument(std::string("X must have rank 3 (") + (a.batch_first ? "batch, seq" : "seq, batch") +
                            ", input), got " + shape_to_string(X.shape()));
  const Tensor& W = ctx.input(kW);
  const Tensor& R = ctx.input(kR);
  for (const Tensor* t : {&W, &R})
    if (t->dtype() != dt) return invalid_argument("W and R must have the same dtype as X");
  if (W.rank() != 3 || R.rank() != 3)
    return invalid_argument("W and R must have rank 3, got " + shape_to_string(W.shape()) + " and " +
                            shape_to_string(R.shape()));

  Dims d;
  d.seq = a.batch_first ? X.dim(1) : X.dim(0);
  d.batch = a.batch_first ? X.dim(0) : X.dim(1);
  d.input = X.dim(2);
  d.dirs = a.dirs;
  d.gates = gate_count(a.cell);
  d.hidden = a.hidden >= 0 ? a.hidden : R.dim(2);
  const int64_t H = d.hidden, GH = d.gates * H;
  QTK_RETURN_IF_ERROR(expect_shape(W, {d.dirs, GH, d.input}, "W"));
  QTK_RETURN_IF_ERROR(expect_shape(R, {d.dirs, GH, H}, "R"));

  RnnData D;
  D.d = d;
  D.batch_first = a.batch_first;
  D.x = read_doubles(X);
  D.w = read_doubles(W);
  D.r = read_doubles(R);
  if (ctx.has_input(kB)) {
    const Tensor& B = ctx.input(kB);
    if (B.dtype() != dt) return invalid_argument("B must have the same dtype as X");
    QTK_RETURN_IF_ERROR(expect_shape(B, {d.dirs, 2 * GH}, "B"));
    D.b = read_doubles(B);
  } else {
    D.b.assign(static_cast<size_t>(d.dirs * 2 * GH), 0.0);
  }
  D.lens.assign(static_cast<size_t>(d.batch), d.seq);
  if (ctx.has_input(kSeqLens)) {
    const Tensor& L = ctx.input(kSeqLens);
    if (L.dtype() != DType::kInt32 && L.dtype() != DType::kInt64)
      return invalid_argument(std::string("sequence_lens must be int32, got ") + dtype_name(L.dtype()));
    QTK_RETURN_IF_ERROR(expect_shape(L, {d.batch}, "sequence_lens"));
    D.lens = L.to_int64_vector();
    for (int64_t v : D.lens)
      if (v < 0 || v > d.seq)
        return invalid_argument("sequence_lens value " + std::to_string(v) + " is outside [0, " +
                                std::to_string(d.seq) + "]");
  }
  const Shape state_shape = a.batch_first ? Shape{d.batch, d.dirs, H} : Shape{d.dirs, d.batch, H};
  for (int k : {static_cast<int>(kInitH), static_cast<int>(kInitC)}) {
    if (!ctx.has_input(k)) continue;
    if (k == kInitC && a.cell != Cell::kLstm) break;
    const Tensor& t = ctx.input(k);
    if (t.dtype() != dt) return invalid_argument("initial states must have the same dtype as X");
    QTK_RETURN_IF_ERROR(expect_shape(t, state_shape, k == kInitH ? "initial_h" : "initial_c"));
    (k == kInitH ? D.init_h : D.init_c) = read_doubles(t);
  }
  if (a.cell == Cell::kLstm && ctx.has_input(kP)) {
    const Tensor& t = ctx.input(kP);
    if (t.dtype() != dt) return invalid_argument("P must have the same dtype as X");
    QTK_RETURN_IF_ERROR(expect_shape(t, {d.dirs, 3 * H}, "P"));
    D.p = read_doubles(t);
  }

  D.y.assign(static_cast<size_t>(d.seq * d.dirs * d.batch * H), 0.0);
  D.y_h.assign(static_cast<size_t>(d.dirs * d.batch * H), 0.0);
  D.y_c.assign(D.y_h.size(), 0.0);
  for (int64_t dir = 0; dir < d.dirs; ++dir) run_direction(a, D, dir, dir == 1 || a.reverse, *ctx.pool);

  // Outputs, moved to the batch-first layout where asked.
  std::vector<double> y = D.y, y_h = D.y_h, y_c = D.y_c;
  Shape y_shape{d.seq, d.dirs, d.batch, H};
  if (a.batch_first) {
    y_shape = {d.batch, d.seq, d.dirs, H};
    for (int64_t t = 0; t < d.seq; ++t)
      for (int64_t dir = 0; dir < d.dirs; ++dir)
        for (int64_t bt = 0; bt < d.batch; ++bt)
          std::copy_n(D.y.data() + ((t * d.dirs + dir) * d.batch + bt) * H, H,
                      y.data() + ((bt * d.seq + t) * d.dirs + dir) * H);
    for (int64_t dir = 0; dir < d.dirs; ++dir)
      for (int64_t bt = 0; bt < d.batch; ++bt) {
        std::copy_n(D.y_h.data() + (dir * d.batch + bt) * H, H, y_h.data() + D.state_at(dir, bt));
        std::copy_n(D.y_c.data() + (dir * d.batch + bt) * H, H, y_c.data() + D.state_at(dir, bt));
      }
  }
  if (ctx.outputs.size() > 0) ctx.outputs[0] = write_doubles(dt, y_shape, y);
  if (ctx.outputs.size() > 1) ctx.outputs[1] = write_doubles(dt, state_shape, y_h);
  if (ctx.outputs.size() > 2) ctx.outputs[2] = write_doubles(dt, state_shape, y_c);
  return Status::Ok();
}

KernelFactory rnn_factory(Cell cell) {
  return [cell](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const ir::Node& n = init.node;
    const size_t max_outputs = cell == Cell::kLstm ? 3 : 2;
    if (n.outputs.size() > max_outputs)
      return invalid_argument(std::string(cell_name(cell)) + " has at most " + std::to_string(max_outputs) +
                              " outputs, got " + std::to_string(n.outputs.size()));
    RnnAttrs a;
    a.cell = cell;
    const std::string direction = n.attr_string("direction", "forward");
    if (direction == "bidirectional")
      a.dirs = 2;
    else if (direction == "reverse")
      a.reverse = true;
    else if (direction != "forward")
      return invalid_argument("direction must be forward, reverse or bidirectional, got '" + direction + "'");
    if (n.has_attr("hidden_size")) {
      a.hidden = n.attr_int("hidden_size", 0);
      if (a.hidden <= 0) return invalid_argument("hidden_size must be positive");
    }
    if (n.has_attr("clip")) {
      a.clip = n.attr_float("clip", 0.f);
      if (a.clip <= 0) return invalid_argument("clip must be positive");
    }
    a.batch_first = init.opset >= 14 && n.attr_int("layout", 0) != 0;
    a.linear_before_reset = n.attr_int("linear_before_reset", 0) != 0;
    a.input_forget = n.attr_int("input_forget", 0) != 0;
    std::vector<std::string> defaults;
    switch (cell) {
      case Cell::kLstm: defaults = {"Sigmoid", "Tanh", "Tanh"}; break;
      case Cell::kGru: defaults = {"Sigmoid", "Tanh"}; break;
      case Cell::kRnn: defaults = {"Tanh"}; break;
    }
    a.acts_per_dir = static_cast<int>(defaults.size());
    QTK_ASSIGN_OR_RETURN(a.acts, ref::parse_rnn_activations(n, a.acts_per_dir, a.dirs, defaults));
    return make_fn_kernel([a](KernelContext& ctx) { return run_rnn(a, ctx); });
  };
}

}  // namespace

void register_rnn_ops(OpRegistry& r) {
  r.add("LSTM", rnn_factory(Cell::kLstm));
  r.add("GRU", rnn_factory(Cell::kGru));
  r.add("RNN", rnn_factory(Cell::kRnn));
}

}  // namespace qtk::rt
