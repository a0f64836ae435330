// What this CPU can run, asked once. Every kernel family's run-time dispatch
// reads these, so a path is never picked on a CPU (or OS) that lacks it.
#pragma once

namespace qtk {

bool cpu_has_avx2();         // AVX2
bool cpu_has_avx2_fma();     // AVX2 and FMA
bool cpu_has_avx512f();      // AVX-512F (and the OS saves zmm state), with AVX2+FMA
bool cpu_has_avx512bw();    // AVX-512 F/BW/VL (Skylake-SP on), with AVX2
bool cpu_has_avx512_vnni();  // AVX-512 F/BW/VL/VNNI, with AVX2
bool cpu_has_avx512_vbmi();  // AVX-512 F/BW/VBMI (byte permutes), with AVX2

// The widest instruction set the kernels use here, after QTK_ISA: "avx512_vnni",
// "avx512", "avx2" or "scalar" (what `qtk bench` reports as cpu_isa).
const char* cpu_instruction_set();

// Physical cores this process may run on (hyper-threads of one core count
// once): the CLI's default thread count. At least 1.
int physical_core_count();

// A kernel-path override from the environment (e.g. QTK_SGEMM_SCALAR=1):
// true when `name` is set to anything but "" or a value starting with '0'.
bool env_flag_set(const char* name);

}  // namespace qtk
