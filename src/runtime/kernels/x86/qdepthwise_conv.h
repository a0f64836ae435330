// Depthwise 2-D QLinearConv (group == C == M, w [C, 1, kh, kw], constant
// weights): weights are centred to int16 and requantization parameters are
// computed once, at session build time; each (image, channel) plane is then
// one task on the session's pool. An AVX-512 path (int16 x int16 -> int32
// with vpdpwssd, exact) runs when the CPU has AVX-512 VNNI, else an AVX2 path
// (vpmaddwd) when it has AVX2; a scalar path always builds. On small planes
// the AVX-512 tier runs one task per image and block of 16 channels instead,
// the vector lanes being channels (qdepthwise_conv_channels_avx512.cpp).
// Results equal the reference QLinearConv bit for bit
// (docs/integer-semantics.md), including the int32 clamp of acc + bias.
#pragma once

#include <memory>

#include "qtk/status.h"
#include "runtime/kernel.h"

namespace qtk::rt {

// A kernel for this QLinearConv node, or a null pointer when it is not a 2-D
// depthwise conv with constant weights (the caller then uses another kernel).
// The returned kernel hands shapes or parameters it cannot take at run time
// (and every error report) to the reference kernel.
Expected<std::unique_ptr<Kernel>> try_make_qdepthwise_conv_kernel(const KernelInit& init);

namespace qdw {

enum class Path {
  kAuto,    // the widest the CPU has; QTK_QDW_SCALAR=1 forces scalar,
            // QTK_QDW_NO_AVX512=1 stops at AVX2
  kScalar,  // portable C++
  kAvx2,    // AVX2; falls back to scalar on CPUs without it
  kAvx512,  // AVX-512 VNNI planes only; falls back to AVX2, then scalar
  // AVX-512 VNNI, channels-last for every conv that path can take (kAuto
  // takes it by a rule on the plane size; QTK_QDW_CHANNELS=0 never, =1
  // always); else as kAvx512
  kAvx512Channels,
};

bool avx2_supported();
bool avx512_supported();  // AVX-512 F/BW/VL/VNNI
const char* path_name(Path p);

// As try_make_qdepthwise_conv_kernel with a forced path (tests, benchmarks).
Expected<std::unique_ptr<Kernel>> try_make_kernel(const KernelInit& init, Path path);

}  // namespace qdw

}  // namespace qtk::rt
