// Einsum (runtime/kernels/ref/einsum*.cpp) against a brute-force evaluator
// written here: random equations (diagonals, '...' with broadcasting,
// implicit outputs, 1-3 operands), the sgemm path against the loop path on
// matrix-product equations, every error the equation or the operands can
// raise, and the op through a Session.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "qtk/session.h"
#include "runtime/kernels/ref/einsum.h"
#include "runtime/thread_pool.h"
#include "one_node.h"

namespace qtk {
namespace {

using rt::ref::EinsumPath;

// An operand in explicit form: one label per axis. Letters are themselves;
// '0', '1', ... stand for the '...' dims (right-aligned), which the equation
// writes as "...". dims[i] is the axis' size (1 where a '...' dim broadcasts).
struct Operand {
  std::string labels;
  std::vector<int64_t> dims;
  int ellipsis_at = -1;  // axis where "..." starts in the written term
  int ellipsis_len = 0;
};

std::string written(const Operand& o) {
  if (o.ellipsis_at < 0) return o.labels;
  return o.labels.substr(0, o.ellipsis_at) + "..." + o.labels.substr(o.ellipsis_at + o.ellipsis_len);
}

// out[o] = sum over every assignment of all labels of prod operands[i][...]:
// the definition, label by label, with nothing shared with the kernel.
std::vector<double> brute_force(const std::vector<Operand>& ops, const std::vector<std::vector<double>>& data,
                                const std::string& out_labels, const std::map<char, int64_t>& size) {
  std::vector<char> all;  // the labels the operands use
  for (const auto& o : ops)
    for (char c : o.labels)
      if (std::find(all.begin(), all.end(), c) == all.end()) all.push_back(c);
  int64_t out_n = 1;
  for (char c : out_labels) out_n *= size.at(c);
  std::vector<double> out(out_n, 0.0);
  std::map<char, int64_t> at;
  for (char c : all) at[c] = 0;
  for (;;) {
    double prod = 1;
    for (size_t i = 0; i < ops.size(); ++i) {
      int64_t off = 0;
      for (size_t a = 0; a < ops[i].labels.size(); ++a)
        off = off * ops[i].dims[a] + (ops[i].dims[a] == 1 ? 0 : at[ops[i].labels[a]]);
      prod *= data[i][off];
    }
    int64_t o = 0;
    for (char c : out_labels) o = o * size.at(c) + at[c];
    out[o] += prod;
    size_t d = 0;
    for (; d < all.size(); ++d) {
      if (++at[all[d]] < size.at(all[d])) break;
      at[all[d]] = 0;
    }
    if (d == all.size()) break;
  }
  return out;
}

struct Case {
  std::string equation, out_labels;
  std::vector<Operand> ops;
  std::map<char, int64_t> size;
};

// A random equation: 1-3 operands, letters that may repeat within a term,
// '...' dims that some operands carry (some stretched from 1), explicit or
// implicit output.
Case random_case(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Case c;
  const std::string pool = "abcdeBC";  // upper case sorts first in an implicit output
  const int letters = pick(1, 5);
  std::string used_pool;
  for (int i = 0; i < letters; ++i) {
    used_pool += pool[pick(0, static_cast<int>(pool.size()) - 1)];
    c.size[used_pool.back()] = pick(1, 4);
  }
  const int ell = pick(0, 2);
  for (int j = 0; j < ell; ++j) c.size[static_cast<char>('0' + j)] = pick(2, 3);
  const int n = pick(1, 3);
  int ell_used = 0;
  bool any_ellipsis = false;
  for (int i = 0; i < n; ++i) {
    Operand o;
    const int rank = pick(0, 3);
    for (int a = 0; a < rank; ++a) o.labels += used_pool[pick(0, letters - 1)];
    if (pick(0, 1) == 1) {
      any_ellipsis = true;
      o.ellipsis_len = pick(0, ell);
      o.ellipsis_at = pick(0, rank);
      std::string e;
      for (int j = ell - o.ellipsis_len; j < ell; ++j) e += static_cast<char>('0' + j);
      o.labels.insert(o.ellipsis_at, e);
      ell_used = std::max(ell_used, o.ellipsis_len);
    }
    // Some dims of 1 stretched to the label's size: a '...' dim per axis, a
    // letter in all its axes of this operand (a diagonal's dims are equal).
    std::map<char, bool> stretch_letter;
    for (char l : o.labels) {
      const bool digit = l >= '0' && l <= '9';
      if (!digit && !stretch_letter.count(l)) stretch_letter[l] = pick(0, 5) == 0;
      const bool stretch = digit ? pick(0, 3) == 0 : stretch_letter[l];
      o.dims.push_back(stretch ? 1 : c.size[l]);
    }
    c.ops.push_back(o);
  }
  // '...' dims no operand carries, and letters no operand uses, are not in the equation.
  std::map<char, int> count;
  for (const auto& o : c.ops)
    for (char l : o.labels) ++count[l];
  for (auto it = c.size.begin(); it != c.size.end();) it = count.count(it->first) ? std::next(it) : c.size.erase(it);
  // A label stretched in every operand has size 1.
  for (auto& [l, s] : c.size) {
    bool full = false;
    for (const auto& o : c.ops)
      for (size_t a = 0; a < o.labels.size(); ++a) full = full || (o.labels[a] == l && o.dims[a] != 1);
    if (!full) s = 1;
  }
  std::string ell_labels;
  for (int j = ell - ell_used; j < ell; ++j) ell_labels += static_cast<char>('0' + j);
  for (int i = 0; i < n; ++i) c.equation += (i ? "," : "") + written(c.ops[i]);
  if (pick(0, 4) < 3) {  // explicit: some of the letters, shuffled, and the '...' dims somewhere
    std::string letters_out;
    for (const auto& [l, cnt] : count)
      if (!(l >= '0' && l <= '9') && pick(0, 1) == 1) letters_out += l;
    std::shuffle(letters_out.begin(), letters_out.end(), rng);
    const int at = pick(0, static_cast<int>(letters_out.size()));
    const bool write_ellipsis = ell_used > 0 || pick(0, 1) == 1;
    c.out_labels = letters_out;
    if (write_ellipsis) c.out_labels.insert(at, ell_labels);
    c.equation += "->" + letters_out.substr(0, at) + (write_ellipsis ? "..." : "") + letters_out.substr(at);
  } else {  // implicit: '...' dims, then the letters used once, in ASCII order
    if (any_ellipsis) c.out_labels = ell_labels;
    for (const auto& [l, cnt] : count)
      if (!(l >= '0' && l <= '9') && cnt == 1) c.out_labels += l;
  }
  return c;
}

template <class T>
Tensor random_tensor(const std::vector<int64_t>& dims, std::mt19937& rng, std::vector<double>& values) {
  Tensor t(DTypeOf<T>::value, dims);
  values.resize(static_cast<size_t>(t.numel()));
  std::uniform_int_distribution<int> d(-4, 4);
  for (int64_t i = 0; i < t.numel(); ++i) {
    values[i] = std::is_floating_point_v<T> ? d(rng) * 0.25 : d(rng);
    t.data<T>()[i] = static_cast<T>(values[i]);
  }
  return t;
}

template <class T>
void expect_matches(const Tensor& got, const std::vector<double>& want, const Shape& shape, const std::string& what) {
  ASSERT_EQ(got.dtype(), DTypeOf<T>::value) << what;
  ASSERT_EQ(got.shape(), shape) << what;
  for (int64_t i = 0; i < got.numel(); ++i)
    ASSERT_NEAR(static_cast<double>(got.data<T>()[i]), want[i], 1e-4 * (1 + std::fabs(want[i])))
        << what << " element " << i;
}

template <class T>
void check_random(uint32_t seed, int cases) {
  std::mt19937 rng(seed);
  rt::ThreadPool pool(2);
  for (int k = 0; k < cases; ++k) {
    const Case c = random_case(rng);
    std::vector<Tensor> tensors;
    std::vector<std::vector<double>> values(c.ops.size());
    for (size_t i = 0; i < c.ops.size(); ++i) tensors.push_back(random_tensor<T>(c.ops[i].dims, rng, values[i]));
    const std::vector<double> want = brute_force(c.ops, values, c.out_labels, c.size);
    Shape shape;
    for (char l : c.out_labels) shape.push_back(c.size.at(l));
    auto spec = rt::ref::parse_einsum(c.equation);
    ASSERT_TRUE(spec.ok()) << c.equation << ": " << spec.status().message();
    std::vector<const Tensor*> in;
    for (const auto& t : tensors) in.push_back(&t);
    for (EinsumPath path : {EinsumPath::kAuto, EinsumPath::kLoop})
      for (rt::ThreadPool* p : {static_cast<rt::ThreadPool*>(nullptr), &pool}) {
        auto y = rt::ref::einsum(*spec, in, p, path);
        ASSERT_TRUE(y.ok()) << c.equation << ": " << y.status().message();
        expect_matches<T>(*y, want, shape, c.equation);
      }
  }
}

TEST(Einsum, RandomEquationsFloat) { check_random<float>(1, 400); }
TEST(Einsum, RandomEquationsDouble) { check_random<double>(2, 150); }
TEST(Einsum, RandomEquationsInt64) { check_random<int64_t>(3, 150); }
TEST(Einsum, RandomEquationsInt32) { check_random<int32_t>(4, 100); }

// Operands given as explicit-label strings (no '...'), random sizes per label.
void check_equation(const std::string& equation, const std::vector<std::string>& terms, const std::string& out,
                    std::map<char, int64_t> size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Operand> ops;
  std::vector<Tensor> tensors;
  std::vector<std::vector<double>> values(terms.size());
  for (size_t i = 0; i < terms.size(); ++i) {
    Operand o;
    o.labels = terms[i];
    for (char l : terms[i]) o.dims.push_back(size.at(l));
    ops.push_back(o);
    tensors.push_back(random_tensor<float>(o.dims, rng, values[i]));
  }
  const std::vector<double> want = brute_force(ops, values, out, size);
  Shape shape;
  for (char l : out) shape.push_back(size.at(l));
  auto spec = rt::ref::parse_einsum(equation);
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  std::vector<const Tensor*> in;
  for (const auto& t : tensors) in.push_back(&t);
  rt::ThreadPool pool(2);
  for (EinsumPath path : {EinsumPath::kAuto, EinsumPath::kLoop})
    for (rt::ThreadPool* p : {static_cast<rt::ThreadPool*>(nullptr), &pool}) {
      auto y = rt::ref::einsum(*spec, in, p, path);
      ASSERT_TRUE(y.ok()) << equation << ": " << y.status().message();
      expect_matches<float>(*y, want, shape, equation);
    }
}

// Matrix products up to transposes (the sgemm path, operands read in place,
// copied, or the output written transposed), sizes past one sgemm tile.
TEST(Einsum, MatrixProductsMatchBruteForce) {
  const std::map<char, int64_t> s = {{'b', 2}, {'h', 3}, {'i', 9}, {'j', 17}, {'d', 7}, {'k', 5}};
  uint32_t seed = 10;
  check_equation("bhid,bhjd->bhij", {"bhid", "bhjd"}, "bhij", s, ++seed);
  check_equation("bhij,bhjd->bhid", {"bhij", "bhjd"}, "bhid", s, ++seed);
  check_equation("bij,bjk->bik", {"bij", "bjk"}, "bik", s, ++seed);
  check_equation("ij,jk->ik", {"ij", "jk"}, "ik", s, ++seed);
  check_equation("ji,jk->ik", {"ji", "jk"}, "ik", s, ++seed);   // A transposed
  check_equation("ij,kj->ik", {"ij", "kj"}, "ik", s, ++seed);   // B transposed
  check_equation("ij,jk->ki", {"ij", "jk"}, "ki", s, ++seed);   // output transposed
  check_equation("bij,jk->bik", {"bij", "jk"}, "bik", s, ++seed);  // B shared by every batch
  check_equation("bij,bjk->ibk", {"bij", "bjk"}, "ibk", s, ++seed);  // batch between m and n in the output
  check_equation("bji,hbjk->bhki", {"bji", "hbjk"}, "bhki", s, ++seed);  // A copied, output transposed
  check_equation("idj,jk->ikd", {"idj", "jk"}, "ikd", s, ++seed);  // output through a buffer (i, d split by k)
  check_equation("bhjd,bhid->bhij", {"bhjd", "bhid"}, "bhij", s, ++seed);
  check_equation("idj,jdk->ki", {"idj", "jdk"}, "ki", s, ++seed);  // two contracted labels
  check_equation("i,j->ij", {"i", "j"}, "ij", s, ++seed);          // outer product (K = 1)
  check_equation("bi,bi->b", {"bi", "bi"}, "b", s, ++seed);        // batched dot (M = N = 1)
  check_equation("ij,jk,kd->id", {"ij", "jk", "kd"}, "id", s, ++seed);  // a chain of three
  check_equation("bij,bjk,bd->bikd", {"bij", "bjk", "bd"}, "bikd", s, ++seed);
}

// The products above run on sgemm, not only on the loop (which the
// brute-force comparison would accept as well).
TEST(Einsum, MatrixProductsTakeTheSgemmPath) {
  const std::map<char, int64_t> size = {{'b', 2}, {'h', 3}, {'i', 9}, {'j', 17}, {'d', 7}, {'k', 5}};
  for (const std::string eq : {"bhid,bhjd->bhij", "bhij,bhjd->bhid", "bij,bjk->bik", "ji,jk->ik", "ij,kj->ik",
                               "ij,jk->ki", "bij,jk->bik", "idj,jk->ikd", "bji,hbjk->bhki"}) {
    const size_t comma = eq.find(','), arrow = eq.find("->");
    const std::string terms[2] = {eq.substr(0, comma), eq.substr(comma + 1, arrow - comma - 1)};
    std::vector<Shape> shapes(2);
    std::vector<Tensor> x;
    for (int t = 0; t < 2; ++t) {
      for (char l : terms[t]) shapes[t].push_back(size.at(l));
      x.emplace_back(DType::kFloat32, shapes[t]);
    }
    auto spec = rt::ref::parse_einsum(eq);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    auto plan = rt::ref::plan_einsum(*spec, shapes);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    Tensor y(DType::kFloat32, plan->output_shape);
    EXPECT_TRUE(rt::ref::detail::einsum_gemm(x[0].data<float>(), plan->operands[0], x[1].data<float>(),
                                             plan->operands[1], plan->output, plan->sizes, y.data<float>(), nullptr))
        << eq << " did not take the sgemm path";
  }
}

TEST(Einsum, DiagonalsTracesAndSums) {
  const std::map<char, int64_t> s = {{'b', 3}, {'i', 4}, {'j', 5}};
  check_equation("ii->i", {"ii"}, "i", s, 1);
  check_equation("ii", {"ii"}, "", s, 2);           // trace
  check_equation("bii->bi", {"bii"}, "bi", s, 3);
  check_equation("iji->j", {"iji"}, "j", s, 4);
  check_equation("ij->", {"ij"}, "", s, 5);
  check_equation("ij->ji", {"ij"}, "ji", s, 6);
  check_equation("ii,ij->ij", {"ii", "ij"}, "ij", s, 7);
  check_equation("bij,bij->bij", {"bij", "bij"}, "bij", s, 8);  // elementwise: no contraction
}

TEST(Einsum, EllipsisBroadcasts) {
  auto spec = rt::ref::parse_einsum("...ij,...jk->...ik");
  ASSERT_TRUE(spec.ok());
  std::mt19937 rng(7);
  std::vector<double> va, vb;
  const Tensor a = random_tensor<float>({2, 1, 3, 4}, rng, va), b = random_tensor<float>({5, 4, 2}, rng, vb);
  for (EinsumPath path : {EinsumPath::kAuto, EinsumPath::kLoop}) {
    auto y = rt::ref::einsum(*spec, {&a, &b}, nullptr, path);
    ASSERT_TRUE(y.ok()) << y.status().message();
    ASSERT_EQ(y->shape(), Shape({2, 5, 3, 2}));
    for (int64_t p = 0; p < 2; ++p)
      for (int64_t q = 0; q < 5; ++q)
        for (int64_t i = 0; i < 3; ++i)
          for (int64_t k = 0; k < 2; ++k) {
            double want = 0;
            for (int64_t j = 0; j < 4; ++j) want += va[(p * 3 + i) * 4 + j] * vb[(q * 4 + j) * 2 + k];
            EXPECT_NEAR(y->data<float>()[((p * 5 + q) * 3 + i) * 2 + k], want, 1e-5);
          }
  }
}

// A letter's dim of 1 stretches to the other operands' size, as in numpy
// and ONNX Runtime (whose results these are).
TEST(Einsum, LetterDimsOfOneStretch) {
  auto spec = rt::ref::parse_einsum("i,i");
  ASSERT_TRUE(spec.ok());
  const Tensor a = Tensor::from_vector<float>({1}, {2}), b = Tensor::from_vector<float>({3}, {1, 2, 4});
  auto y = rt::ref::einsum(*spec, {&a, &b}, nullptr);
  ASSERT_TRUE(y.ok()) << y.status().message();
  EXPECT_EQ(y->to_float_vector(), std::vector<float>({14}));
  spec = rt::ref::parse_einsum("ii,ij->ij");  // a diagonal of 1s stretches too
  const Tensor d = Tensor::from_vector<float>({1, 1}, {3}), m = Tensor::from_vector<float>({2, 2}, {1, 2, 3, 4});
  for (EinsumPath path : {EinsumPath::kAuto, EinsumPath::kLoop}) {
    y = rt::ref::einsum(*spec, {&d, &m}, nullptr, path);
    ASSERT_TRUE(y.ok()) << y.status().message();
    EXPECT_EQ(y->to_float_vector(), std::vector<float>({3, 6, 9, 12}));
  }
}

TEST(Einsum, ZeroSizedDims) {
  auto spec = rt::ref::parse_einsum("ij,jk->ik");
  ASSERT_TRUE(spec.ok());
  const Tensor a(DType::kFloat32, {3, 0}), b(DType::kFloat32, {0, 2});
  for (EinsumPath path : {EinsumPath::kAuto, EinsumPath::kLoop}) {
    auto y = rt::ref::einsum(*spec, {&a, &b}, nullptr, path);
    ASSERT_TRUE(y.ok()) << y.status().message();
    ASSERT_EQ(y->shape(), Shape({3, 2}));
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(y->data<float>()[i], 0.f);
  }
  const Tensor e(DType::kFloat32, {0, 4}), f(DType::kFloat32, {4, 2});
  auto y = rt::ref::einsum(*spec, {&e, &f}, nullptr);
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y->shape(), Shape({0, 2}));
}

TEST(Einsum, ImplicitOutputOrder) {
  // ASCII order (numpy's): upper case first, '...' dims ahead of the letters.
  auto spec = rt::ref::parse_einsum("bA...");
  ASSERT_TRUE(spec.ok());
  auto plan = rt::ref::plan_einsum(*spec, {Shape{2, 3, 5}});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->output_shape, Shape({5, 3, 2}));
  spec = rt::ref::parse_einsum("ij,jk");
  plan = rt::ref::plan_einsum(*spec, {Shape{2, 3}, Shape{3, 4}});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->output_shape, Shape({2, 4}));
}

// The equation alone.
void expect_parse_error(const std::string& eq, const std::string& why) {
  auto s = rt::ref::parse_einsum(eq);
  ASSERT_FALSE(s.ok()) << eq;
  EXPECT_EQ(s.status().code(), ErrorCode::kInvalidArgument) << eq;
  EXPECT_NE(s.status().message().find(why), std::string::npos) << eq << ": " << s.status().message();
  EXPECT_NE(s.status().message().find(eq), std::string::npos) << s.status().message();
}

TEST(Einsum, BadEquations) {
  expect_parse_error("ij->i#", "unexpected character '#'");
  expect_parse_error("i1,j", "unexpected character '1'");
  expect_parse_error("i..j", "'.' outside '...'");
  expect_parse_error("...i...", "more than one '...'");
  expect_parse_error("ij->i->j", "more than one '->'");
  expect_parse_error("ij->ii", "'i' appears twice in the output");
  expect_parse_error("ij->k", "output label 'k' is in no input term");
  expect_parse_error("ij->i,j", "output term has a ','");
  expect_parse_error("ij-i", "unexpected character '-'");
}

// The equation against the operands.
void expect_plan_error(const std::string& eq, const std::vector<Shape>& shapes, const std::string& why) {
  auto s = rt::ref::parse_einsum(eq);
  ASSERT_TRUE(s.ok()) << eq;
  std::vector<Tensor> ts;
  for (const Shape& sh : shapes) ts.emplace_back(DType::kFloat32, sh);
  std::vector<const Tensor*> in;
  for (const auto& t : ts) in.push_back(&t);
  auto y = rt::ref::einsum(*s, in, nullptr);
  ASSERT_FALSE(y.ok()) << eq;
  EXPECT_EQ(y.status().code(), ErrorCode::kInvalidArgument) << eq;
  EXPECT_NE(y.status().message().find(why), std::string::npos) << eq << ": " << y.status().message();
}

TEST(Einsum, OperandsThatDoNotFit) {
  expect_plan_error("ij,jk->ik", {{2, 3}}, "2 input term(s), the node has 1 input(s)");
  expect_plan_error("ij->i", {{2, 3}, {3}}, "1 input term(s), the node has 2 input(s)");
  expect_plan_error("ij->i", {{2, 3, 4}}, "has rank 3, its term names 2 axes");
  expect_plan_error("ij...->i", {{2}}, "has rank 1, fewer than its term's 2 letters");
  expect_plan_error("ij,jk->ik", {{2, 3}, {4, 5}}, "label 'j' has size 3 in operand 0 and 4 in operand 1");
  expect_plan_error("ii->i", {{2, 3}}, "label 'i' has sizes 2 and 3 in operand 0 (a diagonal needs equal dims)");
  expect_plan_error("i,i->i", {{2}, {3}}, "label 'i' has size 2 in operand 0 and 3 in operand 1");
  expect_plan_error("...i,...i->...i", {{2, 3}, {4, 3}}, "'...' dims of operand 1 [4,3] do not broadcast");
  expect_plan_error("...i->i", {{2, 3}}, "the output term has no '...'");
  Tensor a(DType::kFloat32, {2}), b(DType::kFloat64, {2});
  auto s = rt::ref::parse_einsum("i,i");
  auto y = rt::ref::einsum(*s, {&a, &b}, nullptr);
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.status().message().find("must share a dtype"), std::string::npos) << y.status().message();
  Tensor u(DType::kUInt8, {2});
  y = rt::ref::einsum(*s, {&u, &u}, nullptr);
  ASSERT_FALSE(y.ok());
  EXPECT_EQ(y.status().code(), ErrorCode::kUnsupported);
}

// The op as a model's node: registered from opset 12, the attribute read,
// a bad equation refused when the session is built.
TEST(Einsum, RunsAsANode) {
  const Tensor a = Tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = Tensor::from_vector<float>({3, 2}, {1, 0, 0, 1, 1, 1});
  auto y = testing::run_one_node("Einsum", {"a", "b"}, {a, b}, {ir::attr_string("equation", "ij,jk->ki")}, 1,
                                 {.opset = 12});
  ASSERT_TRUE(y.ok()) << y.status().message();
  ASSERT_EQ((*y)[0].shape(), Shape({2, 2}));
  EXPECT_EQ((*y)[0].to_float_vector(), std::vector<float>({4, 10, 5, 11}));
  auto bad = testing::run_one_node("Einsum", {"a"}, {a}, {ir::attr_string("equation", "i$")}, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unexpected character '$'"), std::string::npos) << bad.status().message();
  auto old = testing::run_one_node("Einsum", {"a"}, {a}, {ir::attr_string("equation", "ij->ji")}, 1, {.opset = 11});
  EXPECT_FALSE(old.ok());
}

}  // namespace
}  // namespace qtk
