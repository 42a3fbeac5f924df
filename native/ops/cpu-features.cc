// cpu_isa(): cpuid (through the compiler's builtins, which also check OS support) and the
// NEUROTAP_CPU cap, evaluated once.
#include "ops/cpu-features.h"

#include <cstdlib>
#include <cstring>

namespace nt {

static Isa detect() {
  Isa best = Isa::Scalar;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::Avx2;
  if (__builtin_cpu_supports("avx512f")) best = Isa::Avx512;
#endif
  const char *cap = std::getenv("NEUROTAP_CPU");
  if (cap) {
    Isa want = std::strcmp(cap, "scalar") == 0 ? Isa::Scalar : std::strcmp(cap, "avx2") == 0 ? Isa::Avx2 : Isa::Avx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

Isa cpu_isa() {
  static const Isa isa = detect();
  return isa;
}

}  // namespace nt
