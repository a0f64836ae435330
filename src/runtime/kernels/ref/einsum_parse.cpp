// Einsum's equation: syntax (parse_einsum) and its binding to the operands'
// shapes (plan_einsum). Every error names the equation and the problem.
#include <algorithm>
#include <array>
#include <cctype>
#include <string_view>

#include "runtime/kernels/ref/einsum.h"

namespace qtk::rt::ref {
namespace {

bool is_label(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

Status equation_error(const std::string& equation, const std::string& why) {
  return invalid_argument("Einsum equation '" + equation + "': " + why);
}

// One term without spaces; "" when it parses, else the reason.
std::string parse_term(std::string_view t, EinsumTerm& out) {
  for (size_t i = 0; i < t.size();) {
    const char c = t[i];
    if (is_label(c)) {
      out.letters += c;
      ++i;
    } else if (c == '.') {
      if (t.substr(i, 3) != "...") return "a '.' outside '...' in term '" + std::string(t) + "'";
      if (out.ellipsis_at >= 0) return "more than one '...' in term '" + std::string(t) + "'";
      out.ellipsis_at = static_cast<int>(out.letters.size());
      i += 3;
    } else {
      return std::string("unexpected character '") + c + "' in term '" + std::string(t) + "'";
    }
  }
  return {};
}

std::string term_text(const EinsumTerm& t) {
  if (t.ellipsis_at < 0) return t.letters;
  return t.letters.substr(0, t.ellipsis_at) + "..." + t.letters.substr(t.ellipsis_at);
}

}  // namespace

Expected<EinsumSpec> parse_einsum(const std::string& equation) {
  EinsumSpec s;
  s.equation = equation;
  std::string eq;
  for (char c : equation)
    if (!std::isspace(static_cast<unsigned char>(c))) eq += c;
  const size_t arrow = eq.find("->");
  if (arrow != std::string::npos && eq.find("->", arrow + 2) != std::string::npos)
    return equation_error(equation, "more than one '->'");
  s.explicit_output = arrow != std::string::npos;
  const std::string lhs = eq.substr(0, arrow);
  for (size_t start = 0;;) {
    const size_t comma = lhs.find(',', start);
    EinsumTerm t;
    const std::string why = parse_term(std::string_view(lhs).substr(start, comma - start), t);
    if (!why.empty()) return equation_error(equation, why);
    s.inputs.push_back(std::move(t));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (s.explicit_output) {
    const std::string rhs = eq.substr(arrow + 2);
    if (rhs.find(',') != std::string::npos) return equation_error(equation, "the output term has a ','");
    const std::string why = parse_term(rhs, s.output);
    if (!why.empty()) return equation_error(equation, why);
    for (size_t i = 0; i < s.output.letters.size(); ++i) {
      const char c = s.output.letters[i];
      if (s.output.letters.find(c, i + 1) != std::string::npos)
        return equation_error(equation, std::string("label '") + c + "' appears twice in the output");
      if (std::none_of(s.inputs.begin(), s.inputs.end(),
                       [c](const EinsumTerm& t) { return t.letters.find(c) != std::string::npos; }))
        return equation_error(equation, std::string("output label '") + c + "' is in no input term");
    }
  }
  return s;
}

Expected<EinsumPlan> plan_einsum(const EinsumSpec& spec, const std::vector<Shape>& shapes) {
  const std::string& eq = spec.equation;
  const size_t n = spec.inputs.size();
  if (shapes.size() != n)
    return equation_error(eq, "it has " + std::to_string(n) + " input term(s), the node has " +
                                  std::to_string(shapes.size()) + " input(s)");
  // The '...' dims of each operand, right-aligned against the widest.
  std::vector<int> ell(n, 0);
  int ell_rank = 0;
  bool any_ellipsis = false;
  for (size_t i = 0; i < n; ++i) {
    const EinsumTerm& t = spec.inputs[i];
    const int rank = static_cast<int>(shapes[i].size()), named = static_cast<int>(t.letters.size());
    const std::string who = "operand " + std::to_string(i) + " " + shape_to_string(shapes[i]) + " (term '" +
                            term_text(t) + "')";
    if (t.ellipsis_at < 0 && named != rank)
      return equation_error(eq, who + " has rank " + std::to_string(rank) + ", its term names " +
                                    std::to_string(named) + " axes");
    if (t.ellipsis_at >= 0 && named > rank)
      return equation_error(eq, who + " has rank " + std::to_string(rank) + ", fewer than its term's " +
                                    std::to_string(named) + " letters");
    if (t.ellipsis_at >= 0) any_ellipsis = true, ell[i] = rank - named;
    ell_rank = std::max(ell_rank, ell[i]);
  }
  EinsumPlan p;
  p.sizes.assign(ell_rank, 1);
  for (size_t i = 0; i < n; ++i)
    for (int j = 0; j < ell[i]; ++j) {
      const int64_t d = shapes[i][spec.inputs[i].ellipsis_at + j];
      int64_t& g = p.sizes[ell_rank - ell[i] + j];
      if (g == 1) g = d;
      else if (d != 1 && d != g)
        return equation_error(eq, "the '...' dims of operand " + std::to_string(i) + " " +
                                      shape_to_string(shapes[i]) + " do not broadcast with the other operands'");
    }
  // Letter ids in ASCII order after the '...' dims.
  std::array<int, 128> id{}, count{};
  id.fill(-1);
  for (const auto& t : spec.inputs)
    for (char c : t.letters) ++count[static_cast<unsigned char>(c)];
  for (int c = 0; c < 128; ++c)
    if (count[c] > 0) id[c] = static_cast<int>(p.sizes.size()), p.sizes.push_back(-1);
  // A letter's size: its dims agree, except that a dim of 1 in one operand
  // stretches to the others' (as numpy and ONNX Runtime do); within one
  // operand (a diagonal) they must be equal. `first`: the operand that fixed
  // the size, for the error message.
  auto axis_of = [&](size_t i, int k) {
    const int at = spec.inputs[i].ellipsis_at;
    return k + (at >= 0 && k >= at ? ell[i] : 0);
  };
  std::array<int, 128> first{};
  for (size_t i = 0; i < n; ++i) {
    const std::string& letters = spec.inputs[i].letters;
    for (int k = 0; k < static_cast<int>(letters.size()); ++k) {
      const unsigned char c = static_cast<unsigned char>(letters[k]);
      const int64_t d = shapes[i][axis_of(i, k)];
      const int prev = static_cast<int>(letters.find(letters[k]));
      if (prev < k) {
        if (shapes[i][axis_of(i, prev)] != d)
          return equation_error(eq, std::string("label '") + letters[k] + "' has sizes " +
                                        std::to_string(shapes[i][axis_of(i, prev)]) + " and " + std::to_string(d) +
                                        " in operand " + std::to_string(i) + " (a diagonal needs equal dims)");
        continue;
      }
      int64_t& size = p.sizes[id[c]];
      if (size < 0 || (size == 1 && d != 1)) size = d, first[c] = static_cast<int>(i);
      else if (d != size && d != 1)
        return equation_error(eq, std::string("label '") + letters[k] + "' has size " + std::to_string(size) +
                                      " in operand " + std::to_string(first[c]) + " and " + std::to_string(d) +
                                      " in operand " + std::to_string(i));
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const EinsumTerm& t = spec.inputs[i];
    EinsumOperand op;
    int64_t stride = 1;
    std::vector<int64_t> axis_stride(shapes[i].size());
    for (size_t a = shapes[i].size(); a-- > 0;) axis_stride[a] = stride, stride *= shapes[i][a];
    // A dim of 1 stretched to a larger size: stride 0. A repeated label: the
    // sum of its axes' strides, i.e. the diagonal.
    auto add = [&](int label, int axis) {
      const int64_t s = shapes[i][axis] == 1 && p.sizes[label] != 1 ? 0 : axis_stride[axis];
      const auto it = std::find(op.labels.begin(), op.labels.end(), label);
      if (it == op.labels.end()) op.labels.push_back(label), op.strides.push_back(s);
      else op.strides[it - op.labels.begin()] += s;
    };
    int axis = 0;
    for (int k = 0; k <= static_cast<int>(t.letters.size()); ++k) {
      if (k == t.ellipsis_at)
        for (int j = 0; j < ell[i]; ++j, ++axis) add(ell_rank - ell[i] + j, axis);
      if (k == static_cast<int>(t.letters.size())) break;
      add(id[static_cast<unsigned char>(t.letters[k])], axis++);
    }
    p.operands.push_back(std::move(op));
  }
  if (spec.explicit_output) {
    const EinsumTerm& o = spec.output;
    if (ell_rank > 0 && o.ellipsis_at < 0)
      return equation_error(eq, "the inputs have '...' dims, the output term has no '...'");
    for (int k = 0; k <= static_cast<int>(o.letters.size()); ++k) {
      if (k == o.ellipsis_at)
        for (int j = 0; j < ell_rank; ++j) p.output.push_back(j);
      if (k < static_cast<int>(o.letters.size())) p.output.push_back(id[static_cast<unsigned char>(o.letters[k])]);
    }
  } else {
    if (any_ellipsis)
      for (int j = 0; j < ell_rank; ++j) p.output.push_back(j);
    for (int c = 0; c < 128; ++c)
      if (count[c] == 1) p.output.push_back(id[c]);
  }
  for (int l : p.output) p.output_shape.push_back(p.sizes[l]);
  return p;
}

}  // namespace qtk::rt::ref
