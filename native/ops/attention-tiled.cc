// AVX-512 fused causal attention for prefill (T >= 8 queries): 8 query rows at a time against
// keys transposed into 16-key panels, so q·k and p·v are register-blocked outer products (16
// FMAs per 2 vector loads) instead of one horizontal dot product per (query, key). Same math
// as attention.cc's row path (softmax over the visible keys, masked weights exactly zero);
// checked against it in test/native/test-ops.cc and against HF by the whole-model tests.
#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "ops/ops.h"
#include "ops/simd-math.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace nt {

namespace {

constexpr int64_t kBlockRows = 64;  // query rows per work item (one K^T packing)
constexpr int64_t kTileRows = 8;    // query rows per register tile
constexpr int64_t kPanel = 16;      // keys per K^T panel (one zmm of scores)

inline __mmask16 lane_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1);
}

struct Scratch {
  std::vector<float> kt;      // [panels][D][16] keys of the block, transposed, zero-padded
  std::vector<float> scores;  // [8][panels * 16] one tile's scores, then its weights
};

// scores[i][p*16 + j] = scale * q_i · key(p*16 + j) for the tile's 8 rows and panels [pa, pb).
__attribute__((target("avx512f"))) void tile_scores(const float *const *qr, const float *kt, int64_t D, int64_t pa, int64_t pb,
                                                   float scale, float *sc, int64_t ld) {
  const __m512 vs = _mm512_set1_ps(scale);
  int64_t p = pa;
  for (; p + 2 <= pb; p += 2) {  // two panels: 16 FMAs per 2 loads + 8 broadcasts
    __m512 a0[8], a1[8];
    for (int i = 0; i < 8; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
    const float *k0 = kt + p * D * kPanel, *k1 = k0 + D * kPanel;
    for (int64_t d = 0; d < D; ++d) {
      const __m512 w0 = _mm512_loadu_ps(k0 + d * kPanel), w1 = _mm512_loadu_ps(k1 + d * kPanel);
      for (int i = 0; i < 8; ++i) {
        const __m512 qv = _mm512_set1_ps(qr[i][d]);
        a0[i] = _mm512_fmadd_ps(qv, w0, a0[i]);
        a1[i] = _mm512_fmadd_ps(qv, w1, a1[i]);
      }
    }
    for (int i = 0; i < 8; ++i) {
      _mm512_storeu_ps(sc + i * ld + p * kPanel, _mm512_mul_ps(a0[i], vs));
      _mm512_storeu_ps(sc + i * ld + (p + 1) * kPanel, _mm512_mul_ps(a1[i], vs));
    }
  }
  for (; p < pb; ++p) {
    __m512 a0[8];
    for (int i = 0; i < 8; ++i) a0[i] = _mm512_setzero_ps();
    const float *k0 = kt + p * D * kPanel;
    for (int64_t d = 0; d < D; ++d) {
      const __m512 w0 = _mm512_loadu_ps(k0 + d * kPanel);
      for (int i = 0; i < 8; ++i) a0[i] = _mm512_fmadd_ps(_mm512_set1_ps(qr[i][d]), w0, a0[i]);
    }
    for (int i = 0; i < 8; ++i) _mm512_storeu_ps(sc + i * ld + p * kPanel, _mm512_mul_ps(a0[i], vs));
  }
}

// Lanes of the 16 columns starting at c that lie in [lo, hi].
__attribute__((target("avx512f"))) inline __mmask16 visible_lanes(int64_t c, int64_t lo, int64_t hi) {
  const int64_t a = std::max<int64_t>(lo - c, 0), b = std::min<int64_t>(hi - c + 1, 16);
  return a >= b ? static_cast<__mmask16>(0) : static_cast<__mmask16>(lane_mask(b) & ~lane_mask(a));
}

// In place over columns [c0, c1) of one score row: exp(s - max) on the visible columns
// [lo, hi], exactly 0 elsewhere. Returns the sum of the weights.
__attribute__((target("avx512f"))) float row_softmax_unnormalized(float *row, int64_t c0, int64_t c1, int64_t lo, int64_t hi) {
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c = c0; c < c1; c += 16) mx = _mm512_mask_max_ps(mx, visible_lanes(c, lo, hi), mx, _mm512_loadu_ps(row + c));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t c = c0; c < c1; c += 16) {
    const __m512 e = _mm512_maskz_mov_ps(visible_lanes(c, lo, hi), simd::exp512(_mm512_sub_ps(_mm512_loadu_ps(row + c), m)));
    _mm512_storeu_ps(row + c, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// z_i[0, D) = inv_i * sum_{j in [ja, jb]} w[i][j] * v(j) for the tile's rows; 32 columns of z
// at a time so the 8x2 accumulators and two value vectors fit in registers.
__attribute__((target("avx512f"))) void tile_apply(const float *w, int64_t ld, int64_t ja, int64_t jb, const float *v0, int64_t vstride,
                                                  int64_t D, const float *inv, float *const *zr, int64_t rows) {
  for (int64_t c = 0; c < D; c += 32) {
    const __mmask16 m0 = lane_mask(D - c), m1 = lane_mask(D - c - 16);
    __m512 a0[8], a1[8];
    for (int i = 0; i < 8; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
    for (int64_t j = ja; j <= jb; ++j) {
      const float *vr = v0 + j * vstride + c;
      const __m512 x0 = _mm512_maskz_loadu_ps(m0, vr), x1 = _mm512_maskz_loadu_ps(m1, vr + 16);
      for (int i = 0; i < 8; ++i) {
        const __m512 pw = _mm512_set1_ps(w[i * ld + j]);
        a0[i] = _mm512_fmadd_ps(pw, x0, a0[i]);
        a1[i] = _mm512_fmadd_ps(pw, x1, a1[i]);
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      const __m512 s = _mm512_set1_ps(inv[i]);
      _mm512_mask_storeu_ps(zr[i] + c, m0, _mm512_mul_ps(a0[i], s));
      if (m1) _mm512_mask_storeu_ps(zr[i] + c + 16, m1, _mm512_mul_ps(a1[i], s));
    }
  }
}

// Query rows [t0, t1) of one (batch, head) item.
__attribute__((target("avx512f"))) void attention_block(const AttentionShape &s, int64_t item, int64_t t0, int64_t t1, const float *q,
                                                       const float *k, const float *v, float *z, Scratch &scr) {
  const int64_t T = s.T, H = s.H, G = s.G, D = s.D;
  const int64_t b = item / H, h = item % H, g = h / (H / G);
  const int64_t pad = s.pad ? s.pad[b] : 0;
  auto lo_of = [&](int64_t t) { return s.window > 0 ? std::max<int64_t>(pad, s.q0 + t - s.window + 1) : pad; };
  // Keys [base, base + nk) cover every row of the block: lo grows with t, hi = q0 + t.
  const int64_t base = lo_of(t0), last = s.q0 + t1 - 1;
  if (base > last) {  // every query of the block is padding
    for (int64_t t = t0; t < t1; ++t) std::fill_n(z + ((b * T + t) * H + h) * D, D, 0.0f);
    return;
  }
  const int64_t nk = last - base + 1, panels = (nk + kPanel - 1) / kPanel, ld = panels * kPanel;
  const int64_t kstride = G * D;                            // floats between consecutive keys
  const float *k0 = k + ((b * s.S + base) * G + g) * D;     // key `base` of this head's group
  const float *v0 = v + ((b * s.S + base) * G + g) * D;
  scr.kt.resize(static_cast<size_t>(panels * D * kPanel));
  scr.scores.resize(static_cast<size_t>(kTileRows * ld));
  float *kt = scr.kt.data(), *sc = scr.scores.data();
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t j = 0; j < kPanel; ++j) {
      const int64_t key = p * kPanel + j;
      float *dst = kt + p * D * kPanel + j;
      if (key < nk) {
        const float *src = k0 + key * kstride;
        for (int64_t d = 0; d < D; ++d) dst[d * kPanel] = src[d];
      } else {
        for (int64_t d = 0; d < D; ++d) dst[d * kPanel] = 0.0f;
      }
    }

  for (int64_t r0 = t0; r0 < t1; r0 += kTileRows) {
    const int64_t rows = std::min(kTileRows, t1 - r0);
    const float *qr[kTileRows];
    float *zr[kTileRows];
    float inv[kTileRows];
    for (int64_t i = 0; i < kTileRows; ++i) {
      const int64_t t = r0 + std::min(i, rows - 1);  // missing rows repeat the last (never stored)
      qr[i] = q + ((b * T + t) * H + h) * D;
      zr[i] = z + ((b * T + t) * H + h) * D;
    }
    // Columns (relative to base) any row of the tile can see.
    const int64_t ja = std::max<int64_t>(0, lo_of(r0) - base), jb = s.q0 + r0 + rows - 1 - base;
    if (ja > jb) {
      for (int64_t i = 0; i < rows; ++i) std::fill_n(zr[i], D, 0.0f);
      continue;
    }
    const int64_t pa = ja / kPanel, pb = jb / kPanel + 1;
    tile_scores(qr, kt, D, pa, pb, s.scale, sc, ld);
    for (int64_t i = 0; i < kTileRows; ++i) {
      const int64_t t = r0 + i;
      const int64_t lo = i < rows ? lo_of(t) - base : 1, hi = i < rows ? s.q0 + t - base : 0;
      const float sum = row_softmax_unnormalized(sc + i * ld, pa * kPanel, pb * kPanel, lo, hi);
      inv[i] = lo <= hi ? 1.0f / sum : 0.0f;  // a row with no visible key gets z = 0
    }
    tile_apply(sc, ld, ja, jb, v0, kstride, D, inv, zr, rows);
  }
}

}  // namespace

bool attention_f32_tiled_avx512(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z) {
  if (s.T < kTileRows) return false;  // decode steps: the row path needs no K^T packing
  const int64_t blocks = (s.T + kBlockRows - 1) / kBlockRows, items = s.B * s.H;
  // Later query blocks see more keys: hand them out first so both threads finish together.
  pool.parallel_for(blocks * items, [&](int64_t u) {
    thread_local Scratch scr;
    const int64_t blk = blocks - 1 - u / items, item = u % items;
    attention_block(s, item, blk * kBlockRows, std::min(s.T, (blk + 1) * kBlockRows), q, k, v, z, scr);
  });
  return true;
}

}  // namespace nt

#else

namespace nt {
bool attention_f32_tiled_avx512(ThreadPool &, const AttentionShape &, const float *, const float *, const float *, float *) { return false; }
}  // namespace nt

#endif
