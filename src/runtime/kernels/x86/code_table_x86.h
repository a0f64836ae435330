// CodeTable's x86 lookup loop (code_table_x86.cpp), for the registry and tests.
#pragma once

#include <cstdint>

namespace qtk::rt {

class OpRegistry;

// code_table_scalar's bytes, 64 codes per step; AVX-512 VBMI CPUs only.
void code_table_vbmi(const uint8_t* table, const uint8_t* x, uint8_t* y, int64_t n, uint8_t flip);
// The CPU has AVX-512 VBMI and QTK_CODE_TABLE_SCALAR is not set.
bool code_table_vbmi_supported();
void register_x86_code_table_op(OpRegistry& r);

}  // namespace qtk::rt
