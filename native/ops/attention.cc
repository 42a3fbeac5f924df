// CPU causal attention (GQA, sliding windows, left padding, KV cache): a fused path that
// streams one query row at a time and an instrumented path that materializes scores and
// pattern for hooks. Reference: HF eager_attention_forward; checked by the whole-model tests.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu-features.h"
#include "ops/ops.h"

namespace nt {

namespace {

inline float dot(const float *a, const float *b, int64_t n) {
  float acc[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int u = 0; u < 8; ++u) s += acc[u];
  return s;
}

// Visible keys [lo, hi] of query t in row b; empty when lo > hi (a padding query).
inline void key_range(const AttentionShape &s, int64_t b, int64_t t, int64_t *lo, int64_t *hi) {
  const int64_t i = s.q0 + t;
  *hi = i;
  *lo = s.pad ? s.pad[b] : 0;
  if (s.window > 0) *lo = std::max<int64_t>(*lo, i - s.window + 1);
}

inline const float *key_row(const AttentionShape &s, const float *k, int64_t b, int64_t j, int64_t g) {
  return k + ((b * s.S + j) * s.G + g) * s.D;
}

}  // namespace

// AVX-512 / AVX2 versions of the fused path (attention-simd.cc); false when this CPU has neither.
bool attention_f32_simd(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z, int isa);
// AVX-512 tiled prefill path (attention-tiled.cc); false for T < 8 or without AVX-512.
bool attention_f32_tiled_avx512(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z);

void attention_f32(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z) {
  const Isa isa = cpu_isa();
  if (isa == Isa::Avx512 && attention_f32_tiled_avx512(pool, s, q, k, v, z)) return;
  if (attention_f32_simd(pool, s, q, k, v, z, static_cast<int>(isa))) return;
  const int64_t T = s.T, H = s.H, D = s.D, group = H / s.G;
  // One item per (batch, head): its keys and values are reused across all T queries.
  pool.parallel_for(s.B * H, [&](int64_t item) {
    const int64_t b = item / H, h = item % H, g = h / group;
    std::vector<float> p(static_cast<size_t>(s.KV));
    std::vector<float> acc(static_cast<size_t>(D));
    for (int64_t t = 0; t < T; ++t) {
      const float *qr = q + ((b * T + t) * H + h) * D;
      float *zr = z + ((b * T + t) * H + h) * D;
      int64_t lo, hi;
      key_range(s, b, t, &lo, &hi);
      if (lo > hi) {
        std::fill(zr, zr + D, 0.0f);
        continue;
      }
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = lo; j <= hi; ++j) {
        p[j] = dot(qr, key_row(s, k, b, j, g), D) * s.scale;
        mx = std::max(mx, p[j]);
      }
      float sum = 0;
      for (int64_t j = lo; j <= hi; ++j) {
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      const float inv = 1.0f / sum;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = lo; j <= hi; ++j) {
        const float w = p[j] * inv;
        const float *vr = key_row(s, v, b, j, g);
        for (int64_t d = 0; d < D; ++d) acc[d] += w * vr[d];
      }
      std::copy(acc.begin(), acc.end(), zr);
    }
  });
}

void attention_scores_f32(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, float *scores) {
  const int64_t T = s.T, H = s.H, D = s.D, group = H / s.G;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  pool.parallel_for(s.B * H, [&](int64_t item) {
    const int64_t b = item / H, h = item % H, g = h / group;
    for (int64_t t = 0; t < T; ++t) {
      float *row = scores + (item * T + t) * s.KV;
      const float *qr = q + ((b * T + t) * H + h) * D;
      int64_t lo, hi;
      key_range(s, b, t, &lo, &hi);
      for (int64_t j = 0; j < s.KV; ++j) row[j] = (j < lo || j > hi) ? neg_inf : dot(qr, key_row(s, k, b, j, g), D) * s.scale;
    }
  });
}

void softmax_rows_f32(ThreadPool &pool, float *x, int64_t rows, int64_t n) {
  const int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
  pool.parallel_for((rows + per - 1) / per, [&](int64_t it) {
    const int64_t r1 = std::min(rows, (it + 1) * per);
    for (int64_t r = it * per; r < r1; ++r) {
      float *row = x + r * n;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
      if (mx == -std::numeric_limits<float>::infinity()) {  // fully masked: TL maps NaN to 0
        std::fill(row, row + n, 0.0f);
        continue;
      }
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        row[j] = std::exp(row[j] - mx);
        sum += row[j];
      }
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j < n; ++j) row[j] *= inv;
    }
  });
}

void attention_apply_f32(ThreadPool &pool, const AttentionShape &s, const float *pattern, const float *v, float *z) {
  const int64_t T = s.T, H = s.H, D = s.D, group = H / s.G;
  pool.parallel_for(s.B * H, [&](int64_t item) {
    const int64_t b = item / H, h = item % H, g = h / group;
    std::vector<float> acc(static_cast<size_t>(D));
    for (int64_t t = 0; t < T; ++t) {
      const float *row = pattern + (item * T + t) * s.KV;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < s.KV; ++j) {
        const float w = row[j];
        if (w == 0.0f) continue;
        const float *vr = key_row(s, v, b, j, g);
        for (int64_t d = 0; d < D; ++d) acc[d] += w * vr[d];
      }
      std::copy(acc.begin(), acc.end(), z + ((b * T + t) * H + h) * D);
    }
  });
}

}  // namespace nt
