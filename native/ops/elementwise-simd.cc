// AVX-512 and AVX2/FMA GELU (tanh form) and SiLU over a vectorized exp, chosen at run time by
// elementwise.cc. gelu_tanh(x) = 0.5x(1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi)(x +
// 0.044715x^3); silu(x) = x / (1 + exp(-x)). exp is Cephes' expf polynomial (~1 ulp); the
// results match the scalar libm path to a few ulp (test/native/test-ops.cc).
#include <cstdint>

#include "ops/ops.h"
#include "ops/simd-math.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace nt {

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
using simd::exp256;
using simd::exp512;

// x / (1 + exp(-s * x_arg)): the shared logistic form of GELU (tanh) and SiLU.
__attribute__((target("avx512f"))) inline __m512 gelu512(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(kSqrt2OverPi), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
  const __m512 e = exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

__attribute__((target("avx512f"))) inline __m512 silu512(__m512 x) {
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

__attribute__((target("avx2,fma"))) inline __m256 gelu256(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 u = _mm256_mul_ps(_mm256_set1_ps(kSqrt2OverPi), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
  const __m256 e = exp256(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

__attribute__((target("avx2,fma"))) inline __m256 silu256(__m256 x) {
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// y = act(gate) (* up when up is non-null) over [i0, i1); act 0 = GELU tanh, 2 = SiLU.
__attribute__((target("avx512f"))) void act_avx512(int act, const float *gate, const float *up, float *out, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i < i1; i += 16) {
    const __mmask16 m = i1 - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (i1 - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, gate + i);
    __m512 y = act == 0 ? gelu512(x) : silu512(x);
    if (up) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, up + i));
    _mm512_mask_storeu_ps(out + i, m, y);
  }
}

__attribute__((target("avx2,fma"))) void act_avx2(int act, const float *gate, const float *up, float *out, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    __m256 y = act == 0 ? gelu256(x) : silu256(x);
    if (up) y = _mm256_mul_ps(y, _mm256_loadu_ps(up + i));
    _mm256_storeu_ps(out + i, y);
  }
  if (i < i1) {  // tail through a padded lane buffer
    alignas(32) float g[8] = {0}, u[8] = {0}, o[8];
    for (int64_t j = i; j < i1; ++j) {
      g[j - i] = gate[j];
      if (up) u[j - i] = up[j];
    }
    __m256 y = act == 0 ? gelu256(_mm256_load_ps(g)) : silu256(_mm256_load_ps(g));
    if (up) y = _mm256_mul_ps(y, _mm256_load_ps(u));
    _mm256_store_ps(o, y);
    for (int64_t j = i; j < i1; ++j) out[j] = o[j - i];
  }
}

}  // namespace

// Vector GELU-tanh (activation 0) or SiLU (2), optionally gated by `up`, over [i0, i1).
// False when this CPU has neither AVX2 nor AVX-512 or the activation has no vector form.
bool activation_simd(int isa, int activation, const float *gate, const float *up, float *out, int64_t i0, int64_t i1) {
  if (isa == 0 || (activation != 0 && activation != 2)) return false;
  if (isa == 2) act_avx512(activation, gate, up, out, i0, i1);
  else act_avx2(activation, gate, up, out, i0, i1);
  return true;
}

}  // namespace nt

#else

namespace nt {
bool activation_simd(int, int, const float *, const float *, float *, int64_t, int64_t) { return false; }
}  // namespace nt

#endif
