// Run-time CPU feature checks for the kernels' AVX-512 / AVX2+FMA paths (no -march=native in
// builds). NEUROTAP_CPU=scalar|avx2|avx512 caps the choice for tests and benchmarks.
#pragma once

namespace nt {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// The best instruction set this CPU (and the NEUROTAP_CPU cap) allows.
Isa cpu_isa();

}  // namespace nt
