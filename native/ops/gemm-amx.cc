// The bf16 compute mode's AMX GEMM (policy in gemm-bf16.h): W packed once at load into B tiles
// ([N/32][KT][2][16][16][2]: per 32 columns and 32 k, two 1 KB tiles of 16 k pairs x 16 columns),
// A rounded to bf16 per call into a zero-padded row-major [M32][KT * 32] buffer read as A tiles,
// and a 32 x 32 block of C in four f32 tiles: per 32 k, 2 A + 2 B tile loads feed 4 TDPBF16PS.
// The block is written once over a tile interface, so the same code runs on the AMX unit
// (TilesAmx) and on a scalar emulation of it (TilesEmulated: the tests' window into the layout
// and blocking on CPUs without AMX). Tests: test/native/test-bf16.cc.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/bf16.h"
#include "ops/cpu-features.h"
#include "ops/gemm-bf16.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define NT_X86 1
#endif

namespace nt {

namespace {

constexpr int64_t kNR = 32;  // columns per panel (two B tiles)
constexpr int64_t kKT = 32;  // k per tile (16 pairs)
constexpr int64_t kMB = 32;  // rows per block (two A tiles)
constexpr int64_t kPanelsPerItemN = 4;
constexpr int64_t kBlocksPerItemM = 8;

// One tile register: 16 rows of 64 bytes.
struct TileReg {
  alignas(64) unsigned char row[16][64];
};

// TDPBF16PS and the tile moves in scalar code, as the instruction set reference defines them:
// C.fp32[m][n] += A.bf16[m][2k] * B.bf16[k][2n], then += A.bf16[m][2k+1] * B.bf16[k][2n+1], for
// k = 0..15 in order, each an f32 add of the exact product; subnormal bf16 inputs and f32 results
// count as zero (the instruction's fixed DAZ / FTZ).
struct TilesEmulated {
  TileReg c[4], a[2], b[2];  // tmm0-3, tmm4-5, tmm6-7 of the hardware version
  void begin() {}
  void end() {}
  void zero_c() { std::memset(c, 0, sizeof c); }
  static void load(TileReg &t, const void *p, int64_t stride) {
    for (int r = 0; r < 16; ++r) std::memcpy(t.row[r], static_cast<const unsigned char *>(p) + r * stride, 64);
  }
  template <int I>
  void load_a(const void *p, int64_t stride) { load(a[I], p, stride); }
  template <int I>
  void load_b(const void *p, int64_t stride) { load(b[I], p, stride); }
  static float daz(const unsigned char *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return (v & 0x7F80u) ? f32_from_bf16(v) : 0.0f;
  }
  static float ftz(float x) { return std::fabs(x) < 1.17549435e-38f ? std::copysign(0.0f, x) : x; }
  static void dp(TileReg &cc, const TileReg &aa, const TileReg &bb) {
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) {
        float acc;
        std::memcpy(&acc, cc.row[m] + 4 * n, 4);
        for (int k = 0; k < 16; ++k) {
          acc = ftz(std::fma(daz(aa.row[m] + 4 * k), daz(bb.row[k] + 4 * n), acc));
          acc = ftz(std::fma(daz(aa.row[m] + 4 * k + 2), daz(bb.row[k] + 4 * n + 2), acc));
        }
        std::memcpy(cc.row[m] + 4 * n, &acc, 4);
      }
  }
  void dp4() {
    dp(c[0], a[0], b[0]);
    dp(c[1], a[0], b[1]);
    dp(c[2], a[1], b[0]);
    dp(c[3], a[1], b[1]);
  }
  // C tile i to the 32 x 32 block buf (row stride 32 floats): tile (i / 2, i % 2).
  void store_c(float *buf) {
    for (int i = 0; i < 4; ++i)
      for (int r = 0; r < 16; ++r) std::memcpy(buf + ((i / 2) * 16 + r) * 32 + (i % 2) * 16, c[i].row[r], 64);
  }
};

#ifdef NT_X86
// The same on the AMX unit: C in tmm0-3, A in tmm4-5, B in tmm6-7, every tile 16 rows x 64 bytes.
// (GCC's tile intrinsics take literal register numbers, hence one line per register.)
struct TilesAmx {
  struct alignas(64) Config {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
  };
  __attribute__((target("amx-tile"))) void begin() {
    Config cfg;
    for (int i = 0; i < 8; ++i) {
      cfg.colsb[i] = 64;
      cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
  }
  __attribute__((target("amx-tile"))) void end() { _tile_release(); }
  __attribute__((target("amx-tile"))) void zero_c() {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  template <int I>
  __attribute__((target("amx-tile"))) void load_a(const void *p, int64_t stride) {
    if constexpr (I == 0) _tile_loadd(4, p, stride);
    else _tile_loadd(5, p, stride);
  }
  template <int I>
  __attribute__((target("amx-tile"))) void load_b(const void *p, int64_t stride) {
    if constexpr (I == 0) _tile_loadd(6, p, stride);
    else _tile_loadd(7, p, stride);
  }
  __attribute__((target("amx-tile,amx-bf16"))) void dp4() {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  __attribute__((target("amx-tile"))) void store_c(float *buf) {
    _tile_stored(0, buf, 128);
    _tile_stored(1, buf + 16, 128);
    _tile_stored(2, buf + 16 * 32, 128);
    _tile_stored(3, buf + 16 * 32 + 16, 128);
  }
};
#endif

// buf[32][32] = A rows [32][KT * 32] (bf16, row stride lda) · one W panel (KT pairs of B tiles).
template <typename Tiles>
void amx_block(Tiles &tiles, const uint16_t *a, int64_t lda, const uint16_t *wp, int64_t KT, float *buf) {
  tiles.zero_c();
  for (int64_t t = 0; t < KT; ++t) {
    tiles.template load_a<0>(a + t * kKT, lda * 2);
    tiles.template load_a<1>(a + 16 * lda + t * kKT, lda * 2);
    tiles.template load_b<0>(wp + t * 1024, 64);
    tiles.template load_b<1>(wp + t * 1024 + 512, 64);
    tiles.dp4();
  }
  tiles.store_c(buf);
}

template <typename Tiles>
void gemm_amx(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias, float *C) {
  const int64_t KT = (K + kKT - 1) / kKT, lda = KT * kKT;
  const int64_t mb = (M + kMB - 1) / kMB, np = (N + kNR - 1) / kNR;
  // A rounded to bf16: [mb * 32][lda], zero past M and K. Lives with the calling thread, grows only.
  thread_local std::vector<uint16_t> ab;
  if (ab.size() < static_cast<size_t>(mb * kMB * lda)) ab.resize(static_cast<size_t>(mb * kMB * lda));
  uint16_t *const abd = ab.data();
  pool.parallel_for(mb, [&](int64_t b) {
    for (int64_t r = b * kMB; r < (b + 1) * kMB; ++r) {
      uint16_t *dst = abd + r * lda;
      const int64_t kn = r < M ? K : 0;
      for (int64_t k = 0; k < kn; ++k) dst[k] = bf16_from_f32(A[r * K + k]);
      std::fill(dst + kn, dst + lda, uint16_t(0));
    }
  });
  const int64_t items_m = (mb + kBlocksPerItemM - 1) / kBlocksPerItemM, items_n = (np + kPanelsPerItemN - 1) / kPanelsPerItemN;
  pool.parallel_for(items_m * items_n, [&](int64_t item) {
    const int64_t in = item / items_m, im = item % items_m;
    const int64_t n0 = in * kPanelsPerItemN, n1 = std::min(np, n0 + kPanelsPerItemN);
    const int64_t m0 = im * kBlocksPerItemM, m1 = std::min(mb, m0 + kBlocksPerItemM);
    alignas(64) float buf[kMB * kNR];
    Tiles tiles;
    tiles.begin();
    for (int64_t pn = n0; pn < n1; ++pn) {
      const int64_t col = pn * kNR, nr = std::min(kNR, N - col);
      for (int64_t pm = m0; pm < m1; ++pm) {
        amx_block(tiles, abd + pm * kMB * lda, lda, Wp + pn * KT * 1024, KT, buf);
        const int64_t row = pm * kMB, mr = std::min(kMB, M - row);
        for (int64_t i = 0; i < mr; ++i) {
          float *c = C + (row + i) * N + col;
          for (int64_t j = 0; j < nr; ++j) c[j] = buf[i * kNR + j] + (bias ? bias[col + j] : 0.0f);
        }
      }
    }
    tiles.end();
  });
}

}  // namespace

size_t gemm_bf16_amx_elems(int64_t N, int64_t K) { return static_cast<size_t>((N + kNR - 1) / kNR * ((K + kKT - 1) / kKT) * 1024); }

void gemm_pack_weights_bf16_amx(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wp) {
  const int64_t panels = (N + kNR - 1) / kNR, KT = (K + kKT - 1) / kKT;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t t = 0; t < KT; ++t)
      for (int64_t half = 0; half < 2; ++half)
        for (int64_t r = 0; r < 16; ++r)
          for (int64_t c = 0; c < 16; ++c)
            for (int64_t e = 0; e < 2; ++e) {
              const int64_t n = p * kNR + half * 16 + c, k = t * kKT + 2 * r + e;
              Wp[(((p * KT + t) * 2 + half) * 16 + r) * 32 + c * 2 + e] = n < N && k < K ? W[n * K + k] : uint16_t(0);
            }
}

void gemm_bf16_amx(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias, float *C) {
#ifdef NT_X86
  gemm_amx<TilesAmx>(pool, A, M, K, Wp, N, bias, C);
#else
  gemm_amx<TilesEmulated>(pool, A, M, K, Wp, N, bias, C);
#endif
}

void gemm_bf16_amx_emulated(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias,
                            float *C) {
  gemm_amx<TilesEmulated>(pool, A, M, K, Wp, N, bias, C);
}

}  // namespace nt
