// Run-time CPU feature checks for the kernels' AVX-512 / AVX2+FMA paths and the bf16 compute
// kernels (AVX512_BF16, AMX), no -march=native in builds. NEUROTAP_CPU caps the choice for
// tests and benchmarks: scalar | avx2 | avx512 | avx512bf16 | amx (unset: the best there is).
#pragma once

namespace nt {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// The best vector instruction set this CPU (and the NEUROTAP_CPU cap) allows.
Isa cpu_isa();

// The kernel family of the bf16 compute mode: None (round A to bf16, then the f32 kernels on
// bf16 weights), Avx512Bf16 (vdpbf16ps) or Amx (TDPBF16PS tiles; needs AVX512_BF16 too, and
// the AMX permission Linux grants through arch_prctl, requested once here).
enum class Bf16Isa { None = 0, Avx512Bf16 = 1, Amx = 2 };
Bf16Isa cpu_bf16_isa();

// Why cpu_bf16_isa() is below `want` ("" when it is not): missing CPUID bits, the NEUROTAP_CPU
// cap, or the refused AMX permission. For skip messages.
const char *cpu_bf16_isa_missing(Bf16Isa want);

}  // namespace nt
