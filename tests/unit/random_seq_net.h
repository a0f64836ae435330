// A random MLP or attention-like net on x [N, T, D] for the randomized
// tests: Linear layers, single-head attention, gated products, a Gemm head
// (random_matmul_exactness_test.cpp, and against ONNX Runtime in
// tests/ort/random_nets_agreement_main.cpp).
#pragma once

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "random_nets.h"
#include "test_models.h"

namespace qtk::testing {

struct Seq {
  std::string name;
  int64_t t, d;  // [N, t, d]
};

class SeqNetBuilder : RandomNetBuilder {
 public:
  SeqNetBuilder(uint32_t seed, std::ostringstream& log) : RandomNetBuilder(seed, log) {}

  ir::Model build(Seq x) {
    const int blocks = pick(1, 4);
    for (int b = 0; b < blocks; ++b) {
      switch (pick(0, 3)) {
        case 0: x = linear(x, pick(1, 24)); break;
        case 1: x = attention(x); break;
        case 2: x = gated(x); break;
        default: x = linear(linear(x, pick(1, 24)), x.d); break;
      }
    }
    if (pick(0, 1) == 0) {  // flattened into a Gemm head, else the sequence is the output
      const std::string flat = name("flat"), w = name("head_w"), b = name("head_b"), y = name("head");
      ir::Node f = op_node("Flatten", {x.name}, flat);
      f.attrs = {ir::attr_int("axis", 1)};
      m_.graph.nodes.push_back(f);
      m_.graph.set_initializer(w, uniform_tensor({10, x.t * x.d}, next_seed(), -0.3f, 0.3f));
      m_.graph.set_initializer(b, uniform_tensor({10}, next_seed(), -0.1f, 0.1f));
      ir::Node g = op_node("Gemm", {flat, w, b}, y);
      g.attrs = {ir::attr_int("transB", 1)};
      m_.graph.nodes.push_back(g);
      log_ << " Flatten Gemm(10)";
      x = {y, 1, 10};
    }
    m_.graph.outputs.push_back(float_info(x.name));
    return m_;
  }

 private:

  std::string node(const std::string& op, std::vector<std::string> in) {
    const std::string out = name(op);
    m_.graph.nodes.push_back(op_node(op, std::move(in), out));
    return out;
  }

  // x · W [d, out] (+ bias), then Relu, Sigmoid or nothing.
  Seq linear(const Seq& x, int64_t out) {
    const std::string w = name("w");
    const float bound = 1.5f / std::sqrt(static_cast<float>(x.d));
    m_.graph.set_initializer(w, uniform_tensor({x.d, out}, next_seed(), -bound, bound));
    std::string y = node("MatMul", {x.name, w});
    log_ << " Linear(" << x.d << "->" << out << ")";
    if (pick(0, 2) != 0) {
      const std::string b = name("b");
      m_.graph.set_initializer(b, uniform_tensor({out}, next_seed(), -0.2f, 0.2f));
      y = node("Add", {y, b});
    }
    switch (pick(0, 2)) {
      case 0: log_ << " Relu"; y = node("Relu", {y}); break;
      case 1: log_ << " Sigmoid"; y = node("Sigmoid", {y}); break;
      default: break;
    }
    return {y, x.t, out};
  }

  // One head: softmax(q kᵀ) v, projected back to d and added to x.
  Seq attention(const Seq& x) {
    log_ << " [attention";
    const int64_t dh = pick(1, 16);
    const Seq q = linear(x, dh), k = linear(x, dh), v = linear(x, dh);
    const std::string kt = name("kt");
    ir::Node t = op_node("Transpose", {k.name}, kt);
    t.attrs = {ir::attr_ints("perm", {0, 2, 1})};
    m_.graph.nodes.push_back(t);
    const std::string scores = node("MatMul", {q.name, kt});
    ir::Node sm = op_node("Softmax", {scores}, name("softmax"));
    sm.attrs = {ir::attr_int("axis", -1)};
    m_.graph.nodes.push_back(sm);
    const std::string mixed = node("MatMul", {sm.outputs[0], v.name});
    const Seq projected = linear({mixed, x.t, dh}, x.d);
    log_ << " Add]";
    return {node("Add", {projected.name, x.name}), x.t, x.d};
  }

  // x ⊙ f(x · W), f as in linear(): a product of two activations.
  Seq gated(const Seq& x) {
    log_ << " [gate";
    const Seq a = linear(x, x.d);
    log_ << " Mul]";
    return {node("Mul", {x.name, a.name}), x.t, x.d};
  }
};

// Net `seed` on x [N, t, d] with its input's sizes, drawn from the seed.
struct RandomSeqNet {
  ir::Model model;
  int64_t t, d;
};
inline RandomSeqNet random_seq_net(uint32_t seed, std::ostringstream& log) {
  RandomDims dim(seed);
  const int64_t t = dim(1, 12), d = dim(1, 24);
  log << "seed " << seed << ": x [N," << t << "," << d << "]";
  return {SeqNetBuilder(seed, log).build({"x", t, d}), t, d};
}

}  // namespace qtk::testing
