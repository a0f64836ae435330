// A graph input without a declared type must not crash the optimizer's call
// into libonnx shape inference (which dereferences it unchecked).
#include <gtest/gtest.h>

#include "qtk/model.h"
#include "qtk/session.h"

namespace qtk {
namespace {

TEST(UntypedInput, SessionCreationDoesNotCrash) {
  Model m;
  m.opsets = {{"", 17}};
  ir::ValueInfo in;
  in.name = "x";  // no dtype, no shape
  m.graph.inputs.push_back(in);
  ir::ValueInfo out;
  out.name = "y";
  m.graph.outputs.push_back(out);
  ir::Node n;
  n.name = "eye";
  n.op_type = "EyeLike";
  n.inputs = {"x"};
  n.outputs = {"y"};
  m.graph.nodes.push_back(n);
  auto s = Session::create(m);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto y = (*s)->run(std::vector<Tensor>{Tensor(DType::kFloat32, {2, 3})});
  ASSERT_TRUE(y.ok()) << y.status().message();
  EXPECT_EQ((*y)[0].shape(), (Shape{2, 3}));
  EXPECT_EQ((*y)[0].data<float>()[0], 1.f);
  EXPECT_EQ((*y)[0].data<float>()[1], 0.f);
}

}  // namespace
}  // namespace qtk
