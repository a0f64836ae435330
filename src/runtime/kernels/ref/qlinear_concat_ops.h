// com.microsoft QLinearConcat, registered with the com.microsoft family in
// qlinear_contrib_ops.cpp.
#pragma once

namespace qtk::rt {
class OpRegistry;
void register_qlinear_concat_op(OpRegistry& r);
}  // namespace qtk::rt
