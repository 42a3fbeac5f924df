// AVX-512 and AVX2/FMA GELU (tanh form) and SiLU over a vectorized exp, chosen at run time by
// elementwise.cc, and softmax rows (attention.cc's softmax_rows_f32). gelu_tanh(x) = 0.5x(1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi)(x +
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

// Softmax of rows [r0, r1) of length n (softmax_rows_f32's semantics): the max ignores NaN
// (as std::max does), exp(d) is 0 below the vector exp's range (-inf included: the clamped
// polynomial alone would give ~4e-39, libm gives 0 or a denormal), a NaN or inf - inf
// difference stays NaN, and a row whose max is -inf becomes 0.
__attribute__((target("avx512f"))) void softmax_avx512(float *x, int64_t n, int64_t r0, int64_t r1) {
  const float neg_inf = -__builtin_inff();
  for (int64_t r = r0; r < r1; ++r) {
    float *row = x + r * n;
    __m512 mv = _mm512_set1_ps(neg_inf);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
      mv = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(neg_inf), m, row + j), mv);  // NaN lanes keep mv
    }
    const float mx = _mm512_reduce_max_ps(mv);
    if (mx == neg_inf) {
      for (int64_t j = 0; j < n; ++j) row[j] = 0.0f;
      continue;
    }
    const __m512 mxv = _mm512_set1_ps(mx);
    __m512 sv = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
      const __m512 xv = _mm512_maskz_loadu_ps(m, row + j);
      const __m512 d = _mm512_sub_ps(xv, mxv);
      __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, _mm512_set1_ps(simd::kExpLo), _CMP_GE_OQ), exp512(d));
      e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q), d);
      _mm512_mask_storeu_ps(row + j, m, e);
      sv = _mm512_add_ps(sv, _mm512_maskz_mov_ps(m, e));
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sv));
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
      _mm512_mask_storeu_ps(row + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), inv));
    }
  }
}

__attribute__((target("avx2,fma"))) inline float hmax256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// exp(x - mx), 0 below the vector exp's range (-inf included), NaN kept.
__attribute__((target("avx2,fma"))) inline __m256 softmax_exp256(__m256 x, __m256 mx) {
  const __m256 d = _mm256_sub_ps(x, mx);
  const __m256 e = _mm256_and_ps(_mm256_cmp_ps(d, _mm256_set1_ps(simd::kExpLo), _CMP_GE_OQ), exp256(d));
  return _mm256_blendv_ps(e, d, _mm256_cmp_ps(d, d, _CMP_UNORD_Q));
}

__attribute__((target("avx2,fma"))) void softmax_avx2(float *x, int64_t n, int64_t r0, int64_t r1) {
  const float neg_inf = -__builtin_inff();
  const __m256 ninf = _mm256_set1_ps(neg_inf);
  const int64_t n8 = n & ~int64_t{7};
  for (int64_t r = r0; r < r1; ++r) {
    float *row = x + r * n;
    __m256 mv = ninf;
    for (int64_t j = 0; j < n8; j += 8) mv = _mm256_max_ps(_mm256_loadu_ps(row + j), mv);  // NaN lanes keep mv
    float mx = hmax256(mv);
    for (int64_t j = n8; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
    if (mx == neg_inf) {
      for (int64_t j = 0; j < n; ++j) row[j] = 0.0f;
      continue;
    }
    const __m256 mxv = _mm256_set1_ps(mx);
    __m256 sv = _mm256_setzero_ps();
    for (int64_t j = 0; j < n8; j += 8) {
      const __m256 e = softmax_exp256(_mm256_loadu_ps(row + j), mxv);
      _mm256_storeu_ps(row + j, e);
      sv = _mm256_add_ps(sv, e);
    }
    float sum = hsum256(sv);
    if (n8 < n) {  // tail through a padded lane buffer
      alignas(32) float t[8];
      for (int u = 0; u < 8; ++u) t[u] = n8 + u < n ? row[n8 + u] : neg_inf;
      _mm256_store_ps(t, softmax_exp256(_mm256_load_ps(t), mxv));
      for (int64_t j = n8; j < n; ++j) row[j] = t[j - n8], sum += t[j - n8];
    }
    const float inv = 1.0f / sum;
    const __m256 iv = _mm256_set1_ps(inv);
    for (int64_t j = 0; j < n8; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), iv));
    for (int64_t j = n8; j < n; ++j) row[j] *= inv;
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

// Vector softmax of rows [r0, r1) of x (rows of n); false when this CPU has neither AVX2 nor AVX-512.
bool softmax_rows_simd(int isa, float *x, int64_t n, int64_t r0, int64_t r1) {
  if (isa == 0) return false;
  if (isa == 2) softmax_avx512(x, n, r0, r1);
  else softmax_avx2(x, n, r0, r1);
  return true;
}

}  // namespace nt

#else

namespace nt {
bool activation_simd(int, int, const float *, const float *, float *, int64_t, int64_t) { return false; }
bool softmax_rows_simd(int, float *, int64_t, int64_t, int64_t) { return false; }
}  // namespace nt

#endif
