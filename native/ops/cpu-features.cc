// cpu_isa() / cpu_bf16_isa(): cpuid (the compiler's builtins, which also check that the OS saves
// the vector state; CPUID leaf 7 for AVX512_BF16 and AMX), the AMX permission from Linux, and
// the NEUROTAP_CPU cap, evaluated once. Tests: test/native/test-bf16.cc runs under each cap.
#include "ops/cpu-features.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define NT_X86 1
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace nt {

namespace {

struct Features {
  Isa isa = Isa::Scalar;
  Bf16Isa bf16 = Bf16Isa::None;
  std::string no_avx512bf16, no_amx;  // why each is off ("" when on)
};

// NEUROTAP_CPU's level on one scale: scalar 0, avx2 1, avx512 2, avx512bf16 3, amx 4.
int cap_level() {
  const char *cap = std::getenv("NEUROTAP_CPU");
  if (!cap || !*cap) return 4;
  const char *names[] = {"scalar", "avx2", "avx512", "avx512bf16", "amx"};
  for (int i = 0; i < 5; ++i)
    if (std::strcmp(cap, names[i]) == 0) return i;
  return 4;  // unknown values cap nothing
}

#ifdef NT_X86
// XCR0: which register states the OS saves on a context switch.
uint64_t xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// Linux (5.16+) hands out the 8 KB AMX tile state only to processes that ask for it; without
// the permission the first tile instruction raises SIGILL.
std::string request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0) return "";
  return std::string("Linux refused the AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM: ") + std::strerror(errno) + ")";
#else
  return "AMX needs Linux's arch_prctl permission";
#endif
}
#endif

Features detect() {
  Features f;
  const int cap = cap_level();
  const std::string capped = std::string("capped by NEUROTAP_CPU=") + (std::getenv("NEUROTAP_CPU") ? std::getenv("NEUROTAP_CPU") : "");
  f.no_avx512bf16 = f.no_amx = "this CPU lacks AVX-512";
#ifdef NT_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f.isa = Isa::Avx2;
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) f.isa = Isa::Avx512;
  if (avx512) {
    uint32_t a = 0, b = 0, c = 0, d = 0;
    // Leaf 7 subleaf 1, EAX bit 5: AVX512_BF16. Leaf 7 subleaf 0, EDX bits 22 / 24: AMX-BF16 / AMX-TILE.
    const bool leaf7 = __get_cpuid_max(0, nullptr) >= 7;
    bool has_bf16 = false, has_amx = false;
    if (leaf7) {
      __cpuid_count(7, 1, a, b, c, d);
      has_bf16 = (a >> 5) & 1u;
      __cpuid_count(7, 0, a, b, c, d);
      has_amx = ((d >> 22) & 1u) && ((d >> 24) & 1u);
    }
    f.no_avx512bf16 = has_bf16 ? "" : "this CPU lacks AVX512_BF16";
    f.no_amx = !has_amx ? "this CPU lacks AMX-TILE / AMX-BF16" : !has_bf16 ? "the AMX kernel also needs AVX512_BF16" : "";
    if (f.no_amx.empty() && (xcr0() & (3u << 17)) != (3u << 17)) f.no_amx = "the OS does not enable the AMX tile state (XCR0)";
    if (f.no_avx512bf16.empty() && cap < 3) f.no_avx512bf16 = capped;
    if (f.no_amx.empty() && cap < 4) f.no_amx = capped;
    if (f.no_amx.empty()) f.no_amx = request_amx_permission();
    if (f.no_avx512bf16.empty()) f.bf16 = Bf16Isa::Avx512Bf16;
    if (f.no_avx512bf16.empty() && f.no_amx.empty()) f.bf16 = Bf16Isa::Amx;
  }
  if (cap < static_cast<int>(f.isa)) f.isa = static_cast<Isa>(cap);
#else
  f.no_avx512bf16 = f.no_amx = "not an x86-64 CPU";
#endif
  return f;
}

const Features &features() {
  static const Features f = detect();
  return f;
}

}  // namespace

Isa cpu_isa() { return features().isa; }
Bf16Isa cpu_bf16_isa() { return features().bf16; }

const char *cpu_bf16_isa_missing(Bf16Isa want) {
  const Features &f = features();
  if (want == Bf16Isa::None) return "";
  if (!f.no_avx512bf16.empty()) return f.no_avx512bf16.c_str();
  return want == Bf16Isa::Amx ? f.no_amx.c_str() : "";
}

}  // namespace nt
