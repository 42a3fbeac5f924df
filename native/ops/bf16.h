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
