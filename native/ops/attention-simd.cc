// AVX-512 and AVX2/FMA versions of the fused attention's inner loops (q·k dot products and the
// weighted sum of values), selected at run time by attention.cc. Same math as the scalar path:
// checked against it in test/native/test-ops.cc and against HF by the whole-model tests.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/bf16.h"
#include "ops/ops.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace nt {

namespace {

__attribute__((target("avx512f"))) inline float dot512(const float *a, const float *b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

__attribute__((target("avx512f"))) inline void axpy512(float *y, float w, const float *x, int64_t n) {
  const __m512 vw = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vw, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(vw, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

// The compute-bf16 versions: both operands of every product rounded to bf16 (products of bf16
// values are exact in f32), the weight w included.
__attribute__((target("avx512f"))) inline float dot512_bf16(const float *a, const float *b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    acc = _mm512_fmadd_ps(bf16_round512(_mm512_maskz_loadu_ps(m, a + i)), bf16_round512(_mm512_maskz_loadu_ps(m, b + i)), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

__attribute__((target("avx512f"))) inline void axpy512_bf16(float *y, float w, const float *x, int64_t n) {
  const __m512 vw = _mm512_set1_ps(bf16_round(w));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(vw, bf16_round512(_mm512_maskz_loadu_ps(m, x + i)), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

__attribute__((target("avx2,fma"))) inline float dot256(const float *a, const float *b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  const __m256 s8 = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  float r = _mm_cvtss_f32(s);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

__attribute__((target("avx2,fma"))) inline void axpy256(float *y, float w, const float *x, int64_t n) {
  const __m256 vw = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += w * x[i];
}

// One (batch, head) item of the fused attention: all T query rows against the visible keys.
#define NT_ATTENTION_ITEM(NAME, TARGET, DOT, AXPY)                                                                  \
  TARGET void NAME(const AttentionShape &s, int64_t item, const float *q, const float *k, const float *v, float *z, \
                   float *p) {                                                                                      \
    const int64_t T = s.T, H = s.H, D = s.D, group = H / s.G;                                                       \
    const int64_t b = item / H, h = item % H, g = h / group;                                                        \
    for (int64_t t = 0; t < T; ++t) {                                                                               \
      const float *qr = q + ((b * T + t) * H + h) * D;                                                             \
      float *zr = z + ((b * T + t) * H + h) * D;                                                                   \
      const int64_t hi = s.q0 + t;                                                                                 \
      int64_t lo = s.pad ? s.pad[b] : 0;                                                                           \
      if (s.window > 0) lo = std::max<int64_t>(lo, hi - s.window + 1);                                             \
      std::fill(zr, zr + D, 0.0f);                                                                                 \
      if (lo > hi) continue;                                                                                       \
      float mx = -std::numeric_limits<float>::infinity();                                                          \
      for (int64_t j = lo; j <= hi; ++j) {                                                                         \
        p[j] = DOT(qr, k + ((b * s.S + j) * s.G + g) * D, D) * s.scale;                                           \
        mx = std::max(mx, p[j]);                                                                                   \
      }                                                                                                            \
      float sum = 0;                                                                                               \
      for (int64_t j = lo; j <= hi; ++j) {                                                                         \
        p[j] = std::exp(p[j] - mx);                                                                                \
        sum += p[j];                                                                                               \
      }                                                                                                            \
      const float inv = 1.0f / sum;                                                                                \
      for (int64_t j = lo; j <= hi; ++j) AXPY(zr, p[j] * inv, v + ((b * s.S + j) * s.G + g) * D, D);             \
    }                                                                                                              \
  }

NT_ATTENTION_ITEM(attention_item_avx512, __attribute__((target("avx512f"))), dot512, axpy512)
NT_ATTENTION_ITEM(attention_item_avx2, __attribute__((target("avx2,fma"))), dot256, axpy256)
NT_ATTENTION_ITEM(attention_item_avx512_bf16, __attribute__((target("avx512f"))), dot512_bf16, axpy512_bf16)

}  // namespace

bool attention_f32_simd(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z, int isa) {
  if (isa == 0 || (s.bf16 && isa != 2)) return false;  // compute bf16 without AVX-512: the scalar path
  pool.parallel_for(s.B * s.H, [&](int64_t item) {
    std::vector<float> p(static_cast<size_t>(s.KV));
    if (s.bf16) attention_item_avx512_bf16(s, item, q, k, v, z, p.data());
    else if (isa == 2) attention_item_avx512(s, item, q, k, v, z, p.data());
    else attention_item_avx2(s, item, q, k, v, z, p.data());
  });
  return true;
}

}  // namespace nt

#else

namespace nt {
bool attention_f32_simd(ThreadPool &, const AttentionShape &, const float *, const float *, const float *, float *, int) { return false; }
}  // namespace nt

#endif
