// The GEMMs of the bf16 compute mode (loadModel's compute: 'bf16'). Numeric policy, the same on
// every path: C[M, N] = bf16(A)[M, K] · W[N, K]^T (+ bias), A rounded to bf16 (nearest even) at
// the GEMM's input, W bf16, products and sums in f32, C f32. W is laid out once at load for the
// kernel cpu_bf16_isa() picks:
//   panels (gemm-packed.cc, gemm_bf16_packed_round): [N/32][K][32], the f32 kernels on rounded A
//   pairs  (gemm-bf16.cc, vdpbf16ps): [N/32][K2][32][2], K2 = ceil(K/2): the k pair (2k2, 2k2+1)
//          of a column is one 32-bit lane
//   amx    (gemm-amx.cc, TDPBF16PS): [N/32][KT][2][16][16][2], KT = ceil(K/32): per 32 columns and
//          32 k, two 1 KB B tiles (columns 0-15, 16-31) of 16 k pairs x 16 columns
// Zero padding fills every layout past N and K. Tests: test/native/test-bf16.cc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/thread-pool.h"

namespace nt {

// Rounded-A GEMM on the bf16 panels of gemm_pack_weights_bf16 (AVX2 or AVX-512 FMA kernels).
void gemm_bf16_packed_round(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias,
                            float *C);

// vdpbf16ps (AVX512_BF16); gemm_bf16_pairs needs cpu_bf16_isa() >= Avx512Bf16.
size_t gemm_bf16_pairs_elems(int64_t N, int64_t K);
void gemm_pack_weights_bf16_pairs(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wp);
void gemm_bf16_pairs(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias, float *C);

// AMX; gemm_bf16_amx needs cpu_bf16_isa() == Amx. gemm_bf16_amx_emulated runs the same blocking
// and tile sequence with the tile instructions emulated in scalar code (TDPBF16PS's order: per k
// pair, even then odd product, each an f32 fused add), for tests on CPUs without AMX.
size_t gemm_bf16_amx_elems(int64_t N, int64_t K);
void gemm_pack_weights_bf16_amx(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wp);
void gemm_bf16_amx(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias, float *C);
void gemm_bf16_amx_emulated(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias,
                            float *C);

// Backward over these layouts (gemm-backward.cc): dA[M, K] = dC[M, N] · W, in f32 (dC is not
// rounded; the bf16 weights widen exactly).
void gemm_backward_bf16_pairs(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const uint16_t *Wp, int64_t K, float *dA);
void gemm_backward_bf16_amx(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const uint16_t *Wp, int64_t K, float *dA);

}  // namespace nt
