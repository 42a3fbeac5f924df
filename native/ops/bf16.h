// bfloat16 conversions shared by the CPU kernels: f32 -> bf16 rounds to nearest even (as
// torch does; NaN stays a quiet NaN, subnormals are kept), bf16 -> f32 is exact.
#pragma once

#include <cstdint>
#include <cstring>

namespace nt {

inline uint16_t bf16_from_f32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float f32_from_bf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// x rounded to the nearest bf16 value, as an f32.
inline float bf16_round(float x) { return f32_from_bf16(bf16_from_f32(x)); }

}  // namespace nt

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace nt {

// bf16_from_f32 on 16 lanes: each 32-bit lane holds its bf16 in the low half, zero above.
__attribute__((target("avx512f"))) inline __m512i bf16_bits512(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
  const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_blend_epi32(nan, r, q);
}

// bf16_round on 16 lanes.
__attribute__((target("avx512f"))) inline __m512 bf16_round512(__m512 x) { return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits512(x), 16)); }

}  // namespace nt
#endif
