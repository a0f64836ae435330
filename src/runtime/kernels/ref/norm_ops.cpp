#include "runtime/op_registry.h"

namespace qtk::rt {

void register_norm_ops(OpRegistry& r) { (void)r; }

}  // namespace qtk::rt
