// CPU causal attention (GQA, sliding windows, left padding, KV cache): a fused path that
// streams one query row at a time and an instrumented path that materializes scores and
// pattern for hooks. Reference: HF eager_attention_forward; checked by the whole-model tests.
//
// Compute bf16 (AttentionShape::bf16; the policy of PyTorch's bf16 attention with f32 softmax):
// the scores are scale * bf16(q) . bf16(k) and z = bf16(w) . bf16(v) with w the normalized
// softmax weights (the pattern), every product exact and every sum, the softmax and the outputs
// f32. The paths (tiled vdpbf16ps, AVX-512 rows, scalar, instrumented) sum in different orders,
// so a weight within f32 noise of a bf16 rounding boundary may round differently between them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/bf16.h"
#include "ops/cpu-features.h"
#include "ops/fma-tile.h"
#include "ops/ops.h"

namespace nt {

namespace {

// x, or x rounded to bf16 under compute bf16.
inline float operand(float x, bool bf16) { return bf16 ? bf16_round(x) : x; }

inline float dot(const float *a, const float *b, int64_t n, bool bf16) {
  float acc[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += operand(a[i + u], bf16) * operand(b[i + u], bf16);
  float s = 0;
  for (; i < n; ++i) s += operand(a[i], bf16) * operand(b[i], bf16);
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
        p[j] = dot(qr, key_row(s, k, b, j, g), D, s.bf16) * s.scale;
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
        const float w = operand(p[j] * inv, s.bf16);
        const float *vr = key_row(s, v, b, j, g);
        for (int64_t d = 0; d < D; ++d) acc[d] += w * operand(vr[d], s.bf16);
      }
      std::copy(acc.begin(), acc.end(), zr);
    }
  });
}

// The instrumented path: a [T x D] x [D x KV] product per (row, head) for the scores and a
// [T x KV] x [KV x D] one for the pattern's apply, both over fma_tile (fma-tile.h) on operands
// packed into 32-column panels, each row tile visiting only the key blocks its rows can see
// (scores) or hold nonzero weights for (apply); queries split kChunk at a time across threads.
namespace {

constexpr int64_t kCols = 32;
constexpr int64_t kChunk = 128;

// The keys [lo, hi] row tile [t0, t0 + mr) sees between them (lo > hi: none sees any).
inline void tile_keys(const AttentionShape &s, int64_t b, int64_t t0, int64_t mr, int64_t *lo, int64_t *hi) {
  *lo = s.KV;
  *hi = -1;
  for (int64_t t = t0; t < t0 + mr; ++t) {
    int64_t l, h;
    key_range(s, b, t, &l, &h);
    if (l > h) continue;
    *lo = std::min(*lo, l);
    *hi = std::max(*hi, h);
  }
}

// First and last nonzero entries of row[0, n) (first > last when none); NaN counts as nonzero.
inline void nonzero_span(const float *row, int64_t n, int64_t *first, int64_t *last) {
  auto any = [&](int64_t j0) {  // any nonzero in row[j0, j0 + 16)
    bool nz = false;
    for (int u = 0; u < 16; ++u) nz |= row[j0 + u] != 0.0f;
    return nz;
  };
  int64_t j = 0;
  while (j + 16 <= n && !any(j)) j += 16;
  while (j < n && row[j] == 0.0f) ++j;
  *first = j;
  if (j == n) {
    *last = -1;
    return;
  }
  int64_t e = n;
  while (e - 16 > j && !any(e - 16)) e -= 16;
  while (e > j && row[e - 1] == 0.0f) --e;
  *last = e - 1;
}

}  // namespace

void attention_scores_f32(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, float *scores) {
  const int64_t T = s.T, H = s.H, D = s.D, KV = s.KV, group = H / s.G, MR = fma_tile_rows();
  const int64_t chunks = (T + kChunk - 1) / kChunk;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  pool.parallel_for(s.B * H * chunks, [&](int64_t it) {
    const int64_t item = it / chunks, t0 = it % chunks * kChunk, t1 = std::min(T, t0 + kChunk);
    const int64_t b = item / H, h = item % H, g = h / group;
    // k^T for the keys this chunk sees, as panels [block][D][32] from block p0 on.
    int64_t lo, hi;
    tile_keys(s, b, t0, t1 - t0, &lo, &hi);
    const int64_t p0 = lo / kCols, p1 = hi < lo ? p0 : hi / kCols + 1;
    thread_local std::vector<float> kp;
    kp.resize(static_cast<size_t>((p1 - p0) * D * kCols));
    for (int64_t j = p0 * kCols; j < std::min(KV, p1 * kCols); ++j) {
      const float *kr = key_row(s, k, b, j, g);
      float *dst = kp.data() + (j / kCols - p0) * D * kCols + j % kCols;
      for (int64_t d = 0; d < D; ++d) dst[d * kCols] = operand(kr[d], s.bf16);
    }
    // Under compute bf16 the chunk's queries, rounded: [t1 - t0][D].
    thread_local std::vector<float> qb;
    const float *qa = q + ((b * T + t0) * H + h) * D;
    int64_t lda = H * D;
    if (s.bf16) {
      qb.resize(static_cast<size_t>((t1 - t0) * D));
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t d = 0; d < D; ++d) qb[static_cast<size_t>((t - t0) * D + d)] = bf16_round(qa[(t - t0) * lda + d]);
      qa = qb.data();
      lda = D;
    }
    for (int64_t i = t0; i < t1; i += MR) {
      const int64_t mr = std::min(MR, t1 - i);
      int64_t tlo, thi;
      tile_keys(s, b, i, mr, &tlo, &thi);
      if (tlo <= thi)
        for (int64_t p = tlo / kCols; p <= thi / kCols; ++p) {
          FmaTile t{qa + (i - t0) * lda, lda, 1, kp.data() + (p - p0) * D * kCols, kCols, D, scores + (item * T + i) * KV + p * kCols, KV,
                    mr, std::min(kCols, KV - p * kCols), s.scale, false};
          fma_tile(t);
        }
      for (int64_t r = i; r < i + mr; ++r) {
        float *row = scores + (item * T + r) * KV;
        int64_t l, u;
        key_range(s, b, r, &l, &u);
        if (l > u) l = u = KV;  // a padding query: all masked
        std::fill(row, row + l, neg_inf);
        std::fill(row + std::min(KV, u + 1), row + KV, neg_inf);
      }
    }
  });
}

void attention_apply_f32(ThreadPool &pool, const AttentionShape &s, const float *pattern, const float *v, float *z) {
  const int64_t T = s.T, H = s.H, D = s.D, KV = s.KV, group = H / s.G, MR = fma_tile_rows();
  const int64_t chunks = (T + kChunk - 1) / kChunk, dpanels = (D + kCols - 1) / kCols;
  pool.parallel_for(s.B * H * chunks, [&](int64_t it) {
    const int64_t item = it / chunks, t0 = it % chunks * kChunk, t1 = std::min(T, t0 + kChunk);
    const int64_t b = item / H, h = item % H, g = h / group;
    const float *pat = pattern + item * T * KV;
    // Each row's nonzero weights (an edited pattern may have them anywhere), their union [lo, hi].
    thread_local std::vector<int64_t> span;
    span.resize(static_cast<size_t>(2 * (t1 - t0)));
    int64_t lo = KV, hi = -1;
    for (int64_t t = t0; t < t1; ++t) {
      int64_t *sp = span.data() + 2 * (t - t0);
      nonzero_span(pat + t * KV, KV, sp, sp + 1);
      if (sp[0] <= sp[1]) lo = std::min(lo, sp[0]), hi = std::max(hi, sp[1]);
    }
    // v[lo..hi] as panels [D / 32][hi - lo + 1][32].
    const int64_t n = std::max<int64_t>(0, hi - lo + 1);
    thread_local std::vector<float> vp;
    vp.resize(static_cast<size_t>(dpanels * n * kCols));
    for (int64_t j = lo; j <= hi; ++j) {
      const float *vr = key_row(s, v, b, j, g);
      for (int64_t p = 0; p < dpanels; ++p)
        std::transform(vr + p * kCols, vr + std::min(D, (p + 1) * kCols), vp.data() + (p * n + j - lo) * kCols,
                       [&](float x) { return operand(x, s.bf16); });
    }
    // Under compute bf16 the chunk's pattern rows, rounded: [t1 - t0][KV] (only [lo, hi] is read).
    thread_local std::vector<float> pb;
    if (s.bf16 && lo <= hi) {
      pb.resize(static_cast<size_t>((t1 - t0) * KV));
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t j = lo; j <= hi; ++j) pb[static_cast<size_t>((t - t0) * KV + j)] = bf16_round(pat[t * KV + j]);
    }
    auto pattern_row = [&](int64_t t) { return s.bf16 ? pb.data() + (t - t0) * KV : pat + t * KV; };
    for (int64_t i = t0; i < t1; i += MR) {
      const int64_t mr = std::min(MR, t1 - i);
      int64_t jlo = KV, jhi = -1;
      for (int64_t r = 0; r < mr; ++r) {
        const int64_t *sp = span.data() + 2 * (i + r - t0);
        if (sp[0] <= sp[1]) jlo = std::min(jlo, sp[0]), jhi = std::max(jhi, sp[1]);
      }
      float *zr = z + ((b * T + i) * H + h) * D;
      if (jlo > jhi) {
        for (int64_t r = 0; r < mr; ++r) std::fill_n(zr + r * H * D, D, 0.0f);
        continue;
      }
      for (int64_t p = 0; p < dpanels; ++p) {
        FmaTile t{pattern_row(i) + jlo, KV, 1, vp.data() + (p * n + jlo - lo) * kCols, kCols, jhi - jlo + 1, zr + p * kCols, H * D, mr,
                  std::min(kCols, D - p * kCols), 1.0f, false};
        fma_tile(t);
      }
    }
  });
}

// AVX-512 / AVX2 softmax of rows [r0, r1) (elementwise-simd.cc); false when this CPU has neither.
bool softmax_rows_simd(int isa, float *x, int64_t n, int64_t r0, int64_t r1);

void softmax_rows_f32(ThreadPool &pool, float *x, int64_t rows, int64_t n) {
  const int isa = static_cast<int>(cpu_isa());
  const int64_t per = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
  pool.parallel_for((rows + per - 1) / per, [&](int64_t it) {
    const int64_t r1 = std::min(rows, (it + 1) * per);
    if (softmax_rows_simd(isa, x, n, it * per, r1)) return;
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

}  // namespace nt
