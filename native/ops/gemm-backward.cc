// CPU GEMM backward for the activations: dA[M, K] = dC[M, N] · W[N, K], for W plain f32 [N, K],
// in the packed f32 / bf16 panels of gemm-packed.cc ([N/32][K][32]), or in the bf16 compute
// mode's k-pair and AMX layouts (gemm-bf16.h; f32 arithmetic over the bf16 weights). Tests:
// test/native/test-backward.cc (double reference, finite differences); bench/gemm-backward.cc.
//
// A work item is (a group of rows) x (a few blocks of 32 columns of dA). It walks N in chunks of
// 256; per column block, the chunk's [256 x 32] tile of W (for packed weights, a transpose of 8
// contiguous 32 x 32 panel blocks, bf16 widened) goes into a 32 KB thread-local buffer that stays
// in L1 while the group's row blocks stream dC past it through fma_tile; dA accumulates across
// chunks.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/fma-tile.h"
#include "ops/gemm-bf16.h"
#include "ops/ops.h"

namespace nt {

namespace {

constexpr int64_t kCols = 32;    // dA columns per item (= the packed panel width)
constexpr int64_t kChunk = 256;  // W rows per buffered tile

inline float widen(float x) { return x; }
inline float widen(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// buf[n - n0][j] = W[n, k0 + j] for n in [n0, n1), zero past K. Plain: W is [N, K] row-major.
void tile_plain(const float *W, int64_t K, int64_t n0, int64_t n1, int64_t k0, float *buf) {
  const int64_t kc = std::min(kCols, K - k0);
  for (int64_t n = n0; n < n1; ++n) {
    float *dst = buf + (n - n0) * kCols;
    std::memcpy(dst, W + n * K + k0, static_cast<size_t>(kc) * sizeof(float));
    for (int64_t j = kc; j < kCols; ++j) dst[j] = 0.0f;
  }
}

// Packed: the element (n, k) is at ((n / 32) * K + k) * 32 + n % 32, so rows k0 .. k0+31 of a
// panel are one contiguous 32 x 32 block; n0 is a multiple of 32.
template <typename Wt>
void tile_packed(const Wt *Wp, int64_t K, int64_t n0, int64_t n1, int64_t k0, float *buf) {
  const int64_t kc = std::min(kCols, K - k0);
  for (int64_t p0 = n0; p0 < n1; p0 += kCols) {
    const Wt *src = Wp + ((p0 / kCols) * K + k0) * kCols;
    const int64_t jn = std::min(kCols, n1 - p0);
    float *dst = buf + (p0 - n0) * kCols;
    // Read along the panel's contiguous rows, write down buf's columns (both stay in L1).
    for (int64_t k = 0; k < kCols; ++k) {
      const Wt *row = src + k * kCols;
      if (k < kc)
        for (int64_t j = 0; j < jn; ++j) dst[j * kCols + k] = widen(row[j]);
      else
        for (int64_t j = 0; j < jn; ++j) dst[j * kCols + k] = 0.0f;
    }
  }
}

// The bf16 compute layouts: `at(p, j, k)` is the index of element (32 p + j, k); n0 is a
// multiple of 32. Element by element (these layouts only serve compute 'bf16' models' backward).
template <typename At>
void tile_indexed(const uint16_t *Wp, At at, int64_t K, int64_t n0, int64_t n1, int64_t k0, float *buf) {
  const int64_t kc = std::min(kCols, K - k0);
  for (int64_t p0 = n0; p0 < n1; p0 += kCols) {
    const int64_t jn = std::min(kCols, n1 - p0), p = p0 / kCols;
    float *dst = buf + (p0 - n0) * kCols;
    for (int64_t j = 0; j < jn; ++j)
      for (int64_t k = 0; k < kCols; ++k) dst[j * kCols + k] = k < kc ? widen(Wp[at(p, j, k0 + k)]) : 0.0f;
  }
}

template <typename Tile>
void gemm_backward(ThreadPool &pool, const float *dC, int64_t M, int64_t N, int64_t K, float *dA, Tile fill) {
  if (M <= 0 || K <= 0) return;
  if (N <= 0) {
    std::fill(dA, dA + M * K, 0.0f);
    return;
  }
  const int64_t MR = fma_tile_rows();
  const int64_t kb = (K + kCols - 1) / kCols;
  // Items: (up to 16 tiles of rows) x (up to 8 column blocks). Within an item the [rows x 256]
  // block of dC (128 KB at 128 rows) stays in L2 across the column blocks, so dC is read from
  // memory about K / 256 times rather than K / 32; the column blocks per item shrink until the
  // pool has about 4 items per thread.
  const int64_t group_rows = 16 * MR, ng = (M + group_rows - 1) / group_rows;
  int64_t per = 8;
  while (per > 1 && ng * ((kb + per - 1) / per) < 4 * pool.size()) per /= 2;
  const int64_t nkb = (kb + per - 1) / per;
  pool.parallel_for(ng * nkb, [&](int64_t item) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(kChunk * kCols));
    const int64_t g = item % ng, b0 = (item / ng) * per, b1 = std::min(kb, b0 + per);
    const int64_t m0 = g * group_rows, m1 = std::min(M, m0 + group_rows);
    for (int64_t n0 = 0; n0 < N; n0 += kChunk) {
      const int64_t n1 = std::min(N, n0 + kChunk);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t k0 = b * kCols, nr = std::min(kCols, K - k0);
        fill(n0, n1, k0, buf.data());
        for (int64_t m = m0; m < m1; m += MR) {
          FmaTile t{dC + m * N + n0, N, 1, buf.data(), kCols, n1 - n0, dA + m * K + k0, K, std::min(MR, m1 - m), nr, 1.0f, n0 > 0};
          fma_tile(t);
        }
      }
    }
  });
}

}  // namespace

void gemm_backward_f32(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const float *W, int64_t K, float *dA) {
  gemm_backward(pool, dC, M, N, K, dA, [&](int64_t n0, int64_t n1, int64_t k0, float *buf) { tile_plain(W, K, n0, n1, k0, buf); });
}
void gemm_backward_f32_packed(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const float *Wp, int64_t K, float *dA) {
  gemm_backward(pool, dC, M, N, K, dA, [&](int64_t n0, int64_t n1, int64_t k0, float *buf) { tile_packed(Wp, K, n0, n1, k0, buf); });
}
void gemm_backward_bf16_packed(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const uint16_t *Wp, int64_t K, float *dA) {
  gemm_backward(pool, dC, M, N, K, dA, [&](int64_t n0, int64_t n1, int64_t k0, float *buf) { tile_packed(Wp, K, n0, n1, k0, buf); });
}

void gemm_backward_bf16_pairs(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const uint16_t *Wp, int64_t K, float *dA) {
  const int64_t K2 = (K + 1) / 2;
  const auto at = [K2](int64_t p, int64_t j, int64_t k) { return ((p * K2 + k / 2) * kCols + j) * 2 + k % 2; };
  gemm_backward(pool, dC, M, N, K, dA, [&](int64_t n0, int64_t n1, int64_t k0, float *buf) { tile_indexed(Wp, at, K, n0, n1, k0, buf); });
}
void gemm_backward_bf16_amx(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const uint16_t *Wp, int64_t K, float *dA) {
  const int64_t KT = (K + 31) / 32;
  const auto at = [KT](int64_t p, int64_t j, int64_t k) {
    return (((p * KT + k / 32) * 2 + j / 16) * 16 + (k % 32) / 2) * 32 + (j % 16) * 2 + k % 2;
  };
  gemm_backward(pool, dC, M, N, K, dA, [&](int64_t n0, int64_t n1, int64_t k0, float *buf) { tile_indexed(Wp, at, K, n0, n1, k0, buf); });
}

}  // namespace nt
