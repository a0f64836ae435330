// CodeTable (domain "qtk", runtime/code_tables.h): y[i] = table[x[i]], the
// session's stand-in for an 8-bit elementwise region. The kernel is shared
// by the reference table and the x86 override, which differ only in the
// loop that looks the codes up.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/kernel.h"

namespace qtk::rt {

class OpRegistry;

// y[i] = table[x[i] ^ flip] for i < n (flip 0x80: int8 codes, indexed from -128).
using CodeTableFn = void (*)(const uint8_t* table, const uint8_t* x, uint8_t* y, int64_t n, uint8_t flip);
void code_table_scalar(const uint8_t* table, const uint8_t* x, uint8_t* y, int64_t n, uint8_t flip);

// The kernel for a CodeTable node, looking codes up with `fn`.
Expected<std::unique_ptr<Kernel>> make_code_table_kernel(const KernelInit& init, CodeTableFn fn);

void register_code_table_op(OpRegistry& r);

}  // namespace qtk::rt
