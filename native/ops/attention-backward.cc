// CPU backward of the instrumented attention path (attention_scores and attention_apply), with the
// formulas of backend-abi.h's ABI 3 section and the forward's mask (GQA, sliding window, left
// padding). Each product is a small GEMM per (row, head) or (row, kv group) over fma_tile, with the
// transposed operand read through strides. Tests: test/native/test-backward.cc.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/fma-tile.h"
#include "ops/ops.h"

namespace nt {

namespace {

constexpr int64_t kCols = 32;

// Visible keys [lo, hi] of query t in row b (as attention.cc); empty when lo > hi.
inline void key_range(const AttentionShape &s, int64_t b, int64_t t, int64_t *lo, int64_t *hi) {
  const int64_t i = s.q0 + t;
  *hi = i;
  *lo = s.pad ? s.pad[b] : 0;
  if (s.window > 0) *lo = std::max<int64_t>(*lo, i - s.window + 1);
}

// Row stride of the copies below: n + 16 floats, so that rows 4 KB apart (n a multiple of 1024)
// do not all fall in one L1 set when a tile walks down a column (the transposed operand of dv
// and dk: a[j, t] read as m[t * ld + j]).
inline int64_t padded(int64_t n) { return n + 16; }

// Queries per copy below: bounds the per-thread buffers at kRows x padded(KV) floats (1 MB at
// KV = 1024) whatever T is.
constexpr int64_t kRows = 256;

// m[t - t0, j] = ds[t, j] for t in [t0, t1) where query t sees key j, else 0 (row stride
// padded(KV)); with `masked` false, a plain copy (for the row padding).
void copy_scores(const AttentionShape &s, int64_t b, const float *ds, bool masked, int64_t t0, int64_t t1, float *m) {
  const int64_t ld = padded(s.KV);
  for (int64_t t = t0; t < t1; ++t) {
    int64_t lo = 0, hi = s.KV - 1;
    if (masked) key_range(s, b, t, &lo, &hi);
    float *row = m + (t - t0) * ld;
    const float *src = ds + t * s.KV;
    std::fill(row, row + s.KV, 0.0f);
    if (lo <= hi) std::memcpy(row + lo, src + lo, static_cast<size_t>(hi - lo + 1) * sizeof(float));
  }
}

}  // namespace

void attention_apply_backward_f32(ThreadPool &pool, const AttentionShape &s, const float *pattern, const float *v, const float *dz,
                                  float *dpattern, float *dv) {
  const int64_t T = s.T, H = s.H, G = s.G, D = s.D, KV = s.KV, group = H / G, MR = fma_tile_rows();
  // dpattern[b, h] [T, KV] = dz[b, :, h] [T, D] · v[b, :, g]^T: rows i, reduction d, columns j
  // from v laid out once per item as panels of 32 keys, [KV / 32][D][32] (each tile's operand
  // contiguous).
  pool.parallel_for(s.B * H, [&](int64_t item) {
    const int64_t b = item / H, h = item % H, g = h / group;
    thread_local std::vector<float> vp;
    const int64_t panels = (KV + kCols - 1) / kCols;
    vp.assign(static_cast<size_t>(panels * D * kCols), 0.0f);
    for (int64_t j = 0; j < KV; ++j) {
      const float *vr = v + ((b * s.S + j) * G + g) * D;
      float *dst = vp.data() + (j / kCols) * D * kCols + j % kCols;
      for (int64_t d = 0; d < D; ++d) dst[d * kCols] = vr[d];
    }
    for (int64_t j = 0; j < KV; j += kCols)
      for (int64_t i = 0; i < T; i += MR) {
        FmaTile t{dz + ((b * T + i) * H + h) * D, H * D, 1, vp.data() + (j / kCols) * D * kCols, kCols, D, dpattern + (item * T + i) * KV + j, KV,
                  std::min(MR, T - i), std::min(kCols, KV - j), 1.0f, false};
        fma_tile(t);
      }
  });
  // dv[b, :, g] [KV, D] = sum over h in g of pattern[b, h]^T [KV, T] · dz[b, :, h] [T, D], the
  // pattern read down its columns from row-padded copies of kRows queries at a time.
  pool.parallel_for(s.B * G, [&](int64_t item) {
    const int64_t b = item / G, g = item % G;
    thread_local std::vector<float> pt;
    pt.resize(static_cast<size_t>(std::min(T, kRows) * padded(KV)));
    for (int64_t h = g * group; h < (g + 1) * group; ++h)
      for (int64_t t0 = 0; t0 < T; t0 += kRows) {
        const int64_t t1 = std::min(T, t0 + kRows);
        copy_scores(s, b, pattern + (b * H + h) * T * KV, false, t0, t1, pt.data());
        for (int64_t j = 0; j < KV; j += MR)
          for (int64_t d = 0; d < D; d += kCols) {
            FmaTile t{pt.data() + j, 1, padded(KV), dz + ((b * T + t0) * H + h) * D + d, H * D, t1 - t0, dv + ((b * s.S + j) * G + g) * D + d,
                      G * D, std::min(MR, KV - j), std::min(kCols, D - d), 1.0f, h > g * group || t0 > 0};
            fma_tile(t);
          }
      }
    for (int64_t j = KV; j < s.S; ++j) std::fill_n(dv + ((b * s.S + j) * G + g) * D, D, 0.0f);
  });
}

void attention_scores_backward_f32(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *dscores,
                                   float *dq, float *dk) {
  const int64_t T = s.T, H = s.H, G = s.G, D = s.D, KV = s.KV, group = H / G, MR = fma_tile_rows();
  // dq[b, :, h] [T, D] = scale * masked(dscores[b, h]) [T, KV] · k[b, :, g] [KV, D]; each row block
  // reduces over the union of its rows' visible keys only.
  pool.parallel_for(s.B * H, [&](int64_t item) {
    const int64_t b = item / H, h = item % H, g = h / group;
    thread_local std::vector<float> m;
    m.resize(static_cast<size_t>(std::min(T, kRows) * padded(KV)));
    for (int64_t t0 = 0; t0 < T; t0 += kRows) {
      const int64_t t1 = std::min(T, t0 + kRows);
      copy_scores(s, b, dscores + item * T * KV, true, t0, t1, m.data());
      for (int64_t i = t0; i < t1; i += MR) {
        const int64_t mr = std::min(MR, t1 - i);
        int64_t lo = KV, hi = -1;
        for (int64_t r = 0; r < mr; ++r) {
          int64_t l, u;
          key_range(s, b, i + r, &l, &u);
          if (l <= u) lo = std::min(lo, l), hi = std::max(hi, u);
        }
        hi = std::min(hi, KV - 1);
        const int64_t n = std::max<int64_t>(0, hi - lo + 1);
        if (n == 0) lo = 0;
        for (int64_t d = 0; d < D; d += kCols) {
          FmaTile t{m.data() + (i - t0) * padded(KV) + lo, padded(KV), 1, k + ((b * s.S + lo) * G + g) * D + d, G * D, n,
                    dq + ((b * T + i) * H + h) * D + d, H * D, mr, std::min(kCols, D - d), s.scale, false};
          fma_tile(t);
        }
      }
    }
  });
  // dk[b, :, g] [KV, D] = scale * sum over h in g of masked(dscores[b, h])^T [KV, T] · q[b, :, h] [T, D];
  // each key block reduces over the queries that see any of its keys (a contiguous range: both
  // ends of a query's key range grow with t), kRows queries at a time.
  pool.parallel_for(s.B * G, [&](int64_t item) {
    const int64_t b = item / G, g = item % G;
    thread_local std::vector<float> m;
    m.resize(static_cast<size_t>(std::min(T, kRows) * padded(KV)));
    std::vector<int64_t> first((KV + MR - 1) / MR, T), last((KV + MR - 1) / MR, -1);
    for (int64_t t = 0; t < T; ++t) {
      int64_t l, u;
      key_range(s, b, t, &l, &u);
      u = std::min(u, KV - 1);
      for (int64_t jb = l / MR; l <= u && jb <= u / MR; ++jb) first[jb] = std::min(first[jb], t), last[jb] = t;
    }
    for (int64_t h = g * group; h < (g + 1) * group; ++h)
      for (int64_t t0 = 0; t0 < T; t0 += kRows) {
        const int64_t t1 = std::min(T, t0 + kRows);
        copy_scores(s, b, dscores + (b * H + h) * T * KV, true, t0, t1, m.data());
        for (int64_t j = 0; j < KV; j += MR) {
          const int64_t lo = std::max(t0, first[j / MR]), hi = std::min(t1 - 1, last[j / MR]);
          const int64_t n = std::max<int64_t>(0, hi - lo + 1), ts = n ? lo : t0;
          for (int64_t d = 0; d < D; d += kCols) {
            FmaTile t{m.data() + (ts - t0) * padded(KV) + j, 1, padded(KV), q + ((b * T + ts) * H + h) * D + d, H * D, n,
                      dk + ((b * s.S + j) * G + g) * D + d, G * D, std::min(MR, KV - j), std::min(kCols, D - d), s.scale,
                      h > g * group || t0 > 0};
            fma_tile(t);
          }
        }
      }
    for (int64_t j = KV; j < s.S; ++j) std::fill_n(dk + ((b * s.S + j) * G + g) * D, D, 0.0f);
  });
}

}  // namespace nt
