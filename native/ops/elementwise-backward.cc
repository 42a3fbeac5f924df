// CPU backward (vector-Jacobian products) of the norms, activations, soft-capping and row
// softmax, with the formulas of backend-abi.h's ABI 3 section. Row statistics accumulate in
// double as the forward norms do; GELU-tanh and SiLU have AVX-512 / AVX2 paths. Tests: test/native/test-backward.cc (double reference and
// central finite differences of the forward ops).
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/config.h"
#include "ops/cpu-features.h"
#include "ops/ops.h"
#include "ops/simd-math.h"

namespace nt {

namespace {

constexpr int64_t kChunk = 16384;  // floats per pool item (~64 KB), as the forward elementwise ops

template <class F>
void for_chunks(ThreadPool &pool, int64_t n, F fn) {
  pool.parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c) { fn(c * kChunk, std::min(n, (c + 1) * kChunk)); });
}

template <class F>
void for_rows(ThreadPool &pool, int64_t rows, int64_t d, F fn) {
  const int64_t per = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, d));
  pool.parallel_for((rows + per - 1) / per, [&](int64_t it) {
    for (int64_t r = it * per, r1 = std::min(rows, (it + 1) * per); r < r1; ++r) fn(r);
  });
}

inline double row_mean(const float *x, int64_t d, bool layer_norm) {
  if (!layer_norm) return 0.0;
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += x[i];
  return s / static_cast<double>(d);
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;

// f(x) and f'(x) for each activation, as the forward computes f.
inline void act_value_grad(Activation act, float x, float *f, float *df) {
  switch (act) {
    case Activation::GeluTanh: {
      const float u = kSqrt2OverPi * (x + 0.044715f * x * x * x);
      const float t = std::tanh(u);
      *f = 0.5f * x * (1.0f + t);
      *df = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
      return;
    }
    case Activation::GeluErf: {
      const float cdf = 0.5f * (1.0f + std::erf(x * 0.7071067811865476f));
      *f = x * cdf;
      *df = cdf + x * 0.3989422804014327f * std::exp(-0.5f * x * x);
      return;
    }
    case Activation::Silu: {
      const float sig = 1.0f / (1.0f + std::exp(-x));
      *f = x * sig;
      *df = sig * (1.0f + x * (1.0f - sig));
      return;
    }
    case Activation::Relu:
      // torch's threshold_backward: no gradient where the output is 0 (x <= 0).
      *f = x > 0.0f ? x : 0.0f;
      *df = x > 0.0f ? 1.0f : 0.0f;
      return;
  }
  *f = *df = 0.0f;
}


#if defined(__x86_64__) || defined(_M_X64)
// Vector GELU (tanh form) and SiLU derivatives over simd-math.h's exp, for i in [i0, i1):
// g = dy * (up or 1) * f'(x) into g (when non-null) and dy * f(x) into fo (when non-null).
// Both are logistic: s = 1 / (1 + exp(-z)) with z = 2u (GELU, u = sqrt(2/pi)(x + 0.044715x^3))
// or z = x (SiLU); then GELU f = x s, f' = s + 2 x s (1 - s) u'(x); SiLU f = x s, f' = s (1 + x (1 - s)).
__attribute__((target("avx512f"))) void act_grad_avx512(bool gelu, const float *x, const float *dy, const float *up, float *g, float *fo,
                                                       int64_t i0, int64_t i1) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = i0; i < i1; i += 16) {
    const __mmask16 m = i1 - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (i1 - i)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i), d = _mm512_maskz_loadu_ps(m, dy + i);
    __m512 z = xv, du = one;
    if (gelu) {
      const __m512 x2 = _mm512_mul_ps(xv, xv);
      z = _mm512_mul_ps(_mm512_set1_ps(2.0f * kSqrt2OverPi), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), _mm512_mul_ps(x2, xv), xv));
      du = _mm512_mul_ps(_mm512_set1_ps(2.0f * kSqrt2OverPi), _mm512_fmadd_ps(_mm512_set1_ps(3.0f * 0.044715f), x2, one));
    }
    const __m512 sg = _mm512_div_ps(one, _mm512_add_ps(one, simd::exp512(_mm512_sub_ps(_mm512_setzero_ps(), z))));
    const __m512 xs1 = _mm512_mul_ps(_mm512_mul_ps(xv, sg), _mm512_sub_ps(one, sg));  // x s (1 - s)
    const __m512 df = gelu ? _mm512_fmadd_ps(xs1, du, sg) : _mm512_add_ps(sg, xs1);
    if (g) {
      const __m512 scale = up ? _mm512_mul_ps(d, _mm512_maskz_loadu_ps(m, up + i)) : d;
      _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(scale, df));
    }
    if (fo) _mm512_mask_storeu_ps(fo + i, m, _mm512_mul_ps(d, _mm512_mul_ps(xv, sg)));
  }
}

// The same with AVX2 (8 lanes); returns where the scalar tail starts.
__attribute__((target("avx2,fma"))) int64_t act_grad_avx2(bool gelu, const float *x, const float *dy, const float *up, float *g, float *fo,
                                                         int64_t i0, int64_t i1) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), d = _mm256_loadu_ps(dy + i);
    __m256 z = xv, du = one;
    if (gelu) {
      const __m256 x2 = _mm256_mul_ps(xv, xv);
      z = _mm256_mul_ps(_mm256_set1_ps(2.0f * kSqrt2OverPi), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), _mm256_mul_ps(x2, xv), xv));
      du = _mm256_mul_ps(_mm256_set1_ps(2.0f * kSqrt2OverPi), _mm256_fmadd_ps(_mm256_set1_ps(3.0f * 0.044715f), x2, one));
    }
    const __m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, simd::exp256(_mm256_sub_ps(_mm256_setzero_ps(), z))));
    const __m256 xs1 = _mm256_mul_ps(_mm256_mul_ps(xv, sg), _mm256_sub_ps(one, sg));
    const __m256 df = gelu ? _mm256_fmadd_ps(xs1, du, sg) : _mm256_add_ps(sg, xs1);
    if (g) _mm256_storeu_ps(g + i, _mm256_mul_ps(up ? _mm256_mul_ps(d, _mm256_loadu_ps(up + i)) : d, df));
    if (fo) _mm256_storeu_ps(fo + i, _mm256_mul_ps(d, _mm256_mul_ps(xv, sg)));
  }
  return i;
}
#endif

// Vector path for GELU-tanh and SiLU; returns where the scalar loop must continue (i1 when done).
int64_t act_grad_simd(Activation act, const float *x, const float *dy, const float *up, float *g, float *fo, int64_t i0, int64_t i1) {
#if defined(__x86_64__) || defined(_M_X64)
  if (act != Activation::GeluTanh && act != Activation::Silu) return i0;
  const bool gelu = act == Activation::GeluTanh;
  switch (cpu_isa()) {
    case Isa::Avx512: act_grad_avx512(gelu, x, dy, up, g, fo, i0, i1); return i1;
    case Isa::Avx2: return act_grad_avx2(gelu, x, dy, up, g, fo, i0, i1);
    case Isa::Scalar: break;
  }
#endif
  (void)act, (void)x, (void)dy, (void)up, (void)g, (void)fo, (void)i1;
  return i0;
}

}  // namespace

void norm_scale_backward_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, bool layer_norm, const float *scale, const float *dn,
                             float *dscale) {
  for_rows(pool, M, d, [&](int64_t r) {
    const float *xr = x + r * d, *g = dn + r * d;
    const double mean = row_mean(xr, d, layer_norm);
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += static_cast<double>(g[i]) * (xr[i] - mean);
    const double sc = scale[r];
    dscale[r] = static_cast<float>(-s / (sc * sc));
  });
}

void norm_backward_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, bool layer_norm, float eps, const float *scale, const float *dn,
                       const float *dscale, float *dx) {
  for_rows(pool, M, d, [&](int64_t r) {
    const float *xr = x + r * d, *g = dn + r * d;
    float *o = dx + r * d;
    const double mean = row_mean(xr, d, layer_norm);
    double gmean = 0;
    if (layer_norm) {
      for (int64_t i = 0; i < d; ++i) gmean += g[i];
      gmean /= static_cast<double>(d);
    }
    // The scale's own gradient: dscale * d s / d x = dscale * xc / (d * s), s recomputed from x.
    double coef = 0;
    if (dscale) {
      double ms = 0;
      for (int64_t i = 0; i < d; ++i) ms += (xr[i] - mean) * (xr[i] - mean);
      const double s = std::sqrt(ms / static_cast<double>(d) + static_cast<double>(eps));
      coef = dscale[r] / (static_cast<double>(d) * s);
    }
    const double inv = 1.0 / scale[r];
    for (int64_t i = 0; i < d; ++i) o[i] = static_cast<float>((g[i] - gmean) * inv + coef * (xr[i] - mean));
  });
}

void activation_backward_f32(ThreadPool &pool, int activation, const float *x, const float *dy, int64_t n, float *dx) {
  const Activation act = static_cast<Activation>(activation);
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = act_grad_simd(act, x, dy, nullptr, dx, nullptr, i0, i1); i < i1; ++i) {
      float f, df;
      act_value_grad(act, x[i], &f, &df);
      dx[i] = dy[i] * df;
    }
  });
}

void gated_act_backward_f32(ThreadPool &pool, int activation, const float *gate, const float *up, const float *dout, int64_t n, float *dgate,
                            float *dup) {
  const Activation act = static_cast<Activation>(activation);
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = act_grad_simd(act, gate, dout, up, dgate, dup, i0, i1); i < i1; ++i) {
      float f, df;
      act_value_grad(act, gate[i], &f, &df);
      if (dgate) dgate[i] = dout[i] * up[i] * df;
      dup[i] = dout[i] * f;
    }
  });
}

void softcap_backward_f32(ThreadPool &pool, const float *y, const float *dy, int64_t n, float cap, float *dx) {
  const float inv = 1.0f / cap;
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float t = y[i] * inv;
      dx[i] = y[i] == -std::numeric_limits<float>::infinity() ? 0.0f : dy[i] * (1.0f - t * t);
    }
  });
}

void softmax_rows_backward_f32(ThreadPool &pool, const float *p, const float *dp, int64_t rows, int64_t n, float *dx) {
  for_rows(pool, rows, n, [&](int64_t r) {
    const float *pr = p + r * n, *g = dp + r * n;
    float *o = dx + r * n;
    double s = 0;
    for (int64_t j = 0; j < n; ++j)
      if (pr[j] != 0.0f) s += static_cast<double>(pr[j]) * g[j];
    const float sf = static_cast<float>(s);
    // Entries with p = 0 (masked keys) get exactly 0 whatever dp holds there.
    for (int64_t j = 0; j < n; ++j) o[j] = pr[j] != 0.0f ? pr[j] * (g[j] - sf) : 0.0f;
  });
}

}  // namespace nt
