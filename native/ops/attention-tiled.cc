// AVX-512 fused causal attention for prefill (T >= 8 queries): 8 query rows at a time against
// keys transposed into 16-key panels, so q·k and p·v are register-blocked outer products (16
// FMAs per 2 vector loads) instead of one horizontal dot product per (query, key). Same math
// as attention.cc's row path (softmax over the visible keys, masked weights exactly zero);
// checked against it in test/native/test-ops.cc and against HF by the whole-model tests.
//
// Two kernels share the block driver: F32Kernel (exact f32) and, for compute bf16 on CPUs with
// AVX512_BF16, Bf16Kernel, whose two products are vdpbf16ps over bf16 pairs: q and k paired along
// the head dimension, the normalized weights and v paired along the keys (attention.cc states
// the policy; test/native/test-bf16.cc checks it).
#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "ops/bf16.h"
#include "ops/cpu-features.h"
#include "ops/ops.h"
#include "ops/simd-math.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace nt {

namespace {

constexpr int64_t kTileRows = 8;    // query rows per register tile
constexpr int64_t kPanel = 16;      // keys per K^T panel (one zmm of scores)

inline __mmask16 lane_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1);
}

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
    for (int i = 0; i < 8; ++i) {  // constant indices keep the accumulators in registers
      if (i >= rows) break;
      const __m512 s = _mm512_set1_ps(inv[i]);
      _mm512_mask_storeu_ps(zr[i] + c, m0, _mm512_mul_ps(a0[i], s));
      if (m1) _mm512_mask_storeu_ps(zr[i] + c + 16, m1, _mm512_mul_ps(a1[i], s));
    }
  }
}

// The exact f32 kernel: K^T in f32 panels [panels][D][16], v read in place.
struct F32Kernel {
  std::vector<float> kt;

  void pack(const float *k0, const float *, int64_t nk, int64_t kstride, int64_t D, int64_t panels) {
    kt.resize(static_cast<size_t>(panels * D * kPanel));
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t j = 0; j < kPanel; ++j) {
        const int64_t key = p * kPanel + j;
        float *dst = kt.data() + p * D * kPanel + j;
        if (key < nk) {
          const float *src = k0 + key * kstride;
          for (int64_t d = 0; d < D; ++d) dst[d * kPanel] = src[d];
        } else {
          for (int64_t d = 0; d < D; ++d) dst[d * kPanel] = 0.0f;
        }
      }
  }
  void scores(const float *const *qr, int64_t D, int64_t pa, int64_t pb, float scale, float *sc, int64_t ld) {
    tile_scores(qr, kt.data(), D, pa, pb, scale, sc, ld);
  }
  void apply(const float *sc, int64_t ld, int64_t ja, int64_t jb, const float *v0, int64_t kstride, int64_t D, const float *inv, float *const *zr,
             int64_t rows) {
    tile_apply(sc, ld, ja, jb, v0, kstride, D, inv, zr, rows);
  }
};

// Query rows [t0, t1) of one (batch, head) item.
template <class Kernel>
__attribute__((target("avx512f"))) void attention_block(const AttentionShape &s, int64_t item, int64_t t0, int64_t t1, const float *q,
                                                       const float *k, const float *v, float *z, Kernel &kern, std::vector<float> &scores) {
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
  kern.pack(k0, v0, nk, kstride, D, panels);
  scores.resize(static_cast<size_t>(kTileRows * ld));
  float *sc = scores.data();

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
    kern.scores(qr, D, pa, pb, s.scale, sc, ld);
    for (int64_t i = 0; i < kTileRows; ++i) {
      const int64_t t = r0 + i;
      const int64_t lo = i < rows ? lo_of(t) - base : 1, hi = i < rows ? s.q0 + t - base : 0;
      const float sum = row_softmax_unnormalized(sc + i * ld, pa * kPanel, pb * kPanel, lo, hi);
      inv[i] = lo <= hi ? 1.0f / sum : 0.0f;  // a row with no visible key gets z = 0
    }
    kern.apply(sc, ld, ja, jb, v0, kstride, D, inv, zr, rows);
  }
}

// The compute-bf16 kernel. K^T as bf16 pairs [panels][D2][16] (pair d2 of a key: its dims 2 d2
// and 2 d2 + 1, the even one in the low half), v as pairs of consecutive keys [nk2][D]; per tile
// the q rows as pairs [8][D2] and the normalized weights as pairs [8][ld / 2].
struct Bf16Kernel {
  std::vector<uint32_t> kt, vp, qp, wp;

  // Row x[0, n) rounded into n2 = ceil(n / 2) pairs (a missing odd element is 0).
  __attribute__((target("avx512f"))) static void row_pairs(const float *x, int64_t n, uint32_t *dst) {
    alignas(32) uint32_t pairs[8];
    for (int64_t c = 0; c < n; c += 16) {
      const __m256i p = _mm512_cvtepi32_epi16(bf16_bits512(_mm512_maskz_loadu_ps(lane_mask(n - c), x + c)));
      _mm256_store_si256(reinterpret_cast<__m256i *>(pairs), p);
      std::copy_n(pairs, std::min<int64_t>(8, (n - c + 1) / 2), dst + c / 2);
    }
  }

  __attribute__((target("avx512f"))) void pack(const float *k0, const float *v0, int64_t nk, int64_t kstride, int64_t D, int64_t panels) {
    const int64_t D2 = (D + 1) / 2, nk2 = (nk + 1) / 2;
    kt.resize(static_cast<size_t>(panels * D2 * kPanel));
    qp.resize(static_cast<size_t>(std::max<int64_t>(kTileRows * D2, D2)));
    uint32_t *row = qp.data();  // scratch for one key's pairs until the first tile
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t j = 0; j < kPanel; ++j) {
        const int64_t key = p * kPanel + j;
        uint32_t *dst = kt.data() + p * D2 * kPanel + j;
        if (key < nk) row_pairs(k0 + key * kstride, D, row);
        for (int64_t d2 = 0; d2 < D2; ++d2) dst[d2 * kPanel] = key < nk ? row[d2] : 0u;
      }
    vp.resize(static_cast<size_t>(nk2 * D));
    for (int64_t m = 0; m < nk2; ++m) {
      const float *a = v0 + 2 * m * kstride, *b = 2 * m + 1 < nk ? a + kstride : nullptr;
      for (int64_t c = 0; c < D; c += 16) {
        const __mmask16 mask = lane_mask(D - c);
        const __m512i lo = bf16_bits512(_mm512_maskz_loadu_ps(mask, a + c));
        const __m512i hi = b ? _mm512_slli_epi32(bf16_bits512(_mm512_maskz_loadu_ps(mask, b + c)), 16) : _mm512_setzero_si512();
        _mm512_mask_storeu_epi32(vp.data() + m * D + c, mask, _mm512_or_si512(lo, hi));
      }
    }
  }

  __attribute__((target("avx512f,avx512bf16"))) void scores(const float *const *qr, int64_t D, int64_t pa, int64_t pb, float scale, float *sc,
                                                           int64_t ld) {
    const int64_t D2 = (D + 1) / 2;
    for (int i = 0; i < kTileRows; ++i) row_pairs(qr[i], D, qp.data() + i * D2);
    const __m512 vs = _mm512_set1_ps(scale);
    for (int64_t p = pa; p < pb; p += 2) {  // two panels (the second may be past pb: then unused)
      const bool two = p + 1 < pb;
      __m512 a0[8], a1[8];
      for (int i = 0; i < 8; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
      const uint32_t *k0 = kt.data() + p * D2 * kPanel, *k1 = two ? k0 + D2 * kPanel : k0, *qa = qp.data();
      for (int64_t d2 = 0; d2 < D2; ++d2) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(k0 + d2 * kPanel), w1 = (__m512bh)_mm512_loadu_si512(k1 + d2 * kPanel);
        for (int i = 0; i < 8; ++i) {
          const __m512bh qv = (__m512bh)_mm512_set1_epi32(static_cast<int>(qa[i * D2 + d2]));
          a0[i] = _mm512_dpbf16_ps(a0[i], qv, w0);
          a1[i] = _mm512_dpbf16_ps(a1[i], qv, w1);
        }
      }
      for (int i = 0; i < 8; ++i) {
        _mm512_storeu_ps(sc + i * ld + p * kPanel, _mm512_mul_ps(a0[i], vs));
        if (two) _mm512_storeu_ps(sc + i * ld + (p + 1) * kPanel, _mm512_mul_ps(a1[i], vs));
      }
    }
  }

  // z_i = sum over key pairs m in [ja / 2, jb / 2] of bf16(w_i) . bf16(v), w_i = weights * inv_i
  // (a weight past jb counts as 0).
  __attribute__((target("avx512f,avx512bf16"))) void apply(const float *sc, int64_t ld, int64_t ja, int64_t jb, const float *, int64_t, int64_t D,
                                                          const float *inv, float *const *zr, int64_t rows) {
    const int64_t ma = ja / 2, mb = jb / 2, L2 = ld / 2;
    wp.resize(static_cast<size_t>(kTileRows * L2));
    for (int64_t i = 0; i < kTileRows; ++i) {
      const __m512 s = _mm512_set1_ps(inv[i]);
      for (int64_t c = 2 * ma; c <= jb; c += 16) {
        const __m512 w = _mm512_mul_ps(_mm512_maskz_loadu_ps(lane_mask(jb + 1 - c), sc + i * ld + c), s);
        const __m256i p = _mm512_cvtepi32_epi16(bf16_bits512(w));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(wp.data() + i * L2 + c / 2), p);
      }
    }
    const uint32_t *w = wp.data(), *v = vp.data();
    for (int64_t c = 0; c < D; c += 32) {
      const __mmask16 m0 = lane_mask(D - c), m1 = lane_mask(D - c - 16);
      __m512 a0[8], a1[8];
      for (int i = 0; i < 8; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
      for (int64_t m = ma; m <= mb; ++m) {
        const uint32_t *vr = v + m * D + c;
        const __m512bh x0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, vr), x1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, vr + 16);
        for (int i = 0; i < 8; ++i) {
          const __m512bh pw = (__m512bh)_mm512_set1_epi32(static_cast<int>(w[i * L2 + m]));
          a0[i] = _mm512_dpbf16_ps(a0[i], pw, x0);
          a1[i] = _mm512_dpbf16_ps(a1[i], pw, x1);
        }
      }
      for (int i = 0; i < 8; ++i) {  // constant indices keep the accumulators in registers
        if (i >= rows) break;
        _mm512_mask_storeu_ps(zr[i] + c, m0, a0[i]);
        if (m1) _mm512_mask_storeu_ps(zr[i] + c + 16, m1, a1[i]);
      }
    }
  }
};

// Query rows per work item (each packs its keys once): 256, or 64 where that leaves fewer than
// 8 items per thread.
int64_t block_rows(const ThreadPool &pool, const AttentionShape &s) {
  const int64_t big = (s.T + 255) / 256 * s.B * s.H;
  return big >= 8 * pool.size() ? 256 : 64;
}

template <class Kernel>
void attention_tiled(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z) {
  const int64_t rows = block_rows(pool, s), blocks = (s.T + rows - 1) / rows, items = s.B * s.H;
  // Later query blocks see more keys: hand them out first so both threads finish together.
  pool.parallel_for(blocks * items, [&](int64_t u) {
    thread_local Kernel kern;
    thread_local std::vector<float> scores;
    const int64_t blk = blocks - 1 - u / items, item = u % items;
    attention_block(s, item, blk * rows, std::min(s.T, (blk + 1) * rows), q, k, v, z, kern, scores);
  });
}

}  // namespace

bool attention_f32_tiled_avx512(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z) {
  if (s.T < kTileRows) return false;  // decode steps: the row path needs no K^T packing
  if (s.bf16) {
    if (cpu_bf16_isa() == Bf16Isa::None) return false;  // the rounded row path (attention.cc)
    attention_tiled<Bf16Kernel>(pool, s, q, k, v, z);
  } else {
    attention_tiled<F32Kernel>(pool, s, q, k, v, z);
  }
  return true;
}

}  // namespace nt

#else

namespace nt {
bool attention_f32_tiled_avx512(ThreadPool &, const AttentionShape &, const float *, const float *, const float *, float *) { return false; }
}  // namespace nt

#endif
