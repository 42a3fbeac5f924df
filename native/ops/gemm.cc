// CPU GEMM C = A · W^T (+ bias), with AVX-512 and AVX2/FMA micro-kernels chosen at run time
// by CPU features and a portable scalar path. Checked through the whole-model HF tests.
//
// Each micro-kernel computes an MR x NR tile of dot products, vectorized along K (both A and
// W rows are contiguous in K). Work items are (64-row block of A) x (64-row block of W): a W
// block (64 * K * 4 bytes, 192 KB at K = 768) stays in L2 while A rows stream past it.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ops/cpu-features.h"
#include "ops/ops.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define NT_X86 1
#endif

namespace nt {

namespace {

constexpr int64_t kBlockM = 64;
constexpr int64_t kBlockN = 64;

// Pointers to the MR rows of A and NR rows of W of one tile, plus where to store it.
// Rows past the matrix edge repeat the last valid row; their results are discarded.
struct Tile {
  const float *a[4];
  const float *w[4];
};

using TileKernel = void (*)(const Tile &t, int64_t K, float out[4][4]);

void tile_scalar(const Tile &t, int64_t K, float out[4][4]) {
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      float acc[8] = {0};
      int64_t k = 0;
      for (; k + 8 <= K; k += 8)
        for (int u = 0; u < 8; ++u) acc[u] += t.a[i][k + u] * t.w[j][k + u];
      float s = 0;
      for (; k < K; ++k) s += t.a[i][k] * t.w[j][k];
      for (int u = 0; u < 8; ++u) s += acc[u];
      out[i][j] = s;
    }
}

#ifdef NT_X86
__attribute__((target("avx512f"))) void tile_avx512(const Tile &t, int64_t K, float out[4][4]) {
  __m512 acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 a0 = _mm512_loadu_ps(t.a[0] + k), a1 = _mm512_loadu_ps(t.a[1] + k);
    __m512 a2 = _mm512_loadu_ps(t.a[2] + k), a3 = _mm512_loadu_ps(t.a[3] + k);
    for (int j = 0; j < 4; ++j) {
      __m512 w = _mm512_loadu_ps(t.w[j] + k);
      acc[0][j] = _mm512_fmadd_ps(a0, w, acc[0][j]);
      acc[1][j] = _mm512_fmadd_ps(a1, w, acc[1][j]);
      acc[2][j] = _mm512_fmadd_ps(a2, w, acc[2][j]);
      acc[3][j] = _mm512_fmadd_ps(a3, w, acc[3][j]);
    }
  }
  if (k < K) {  // masked tail: lanes past K load as zero
    __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 a[4];
    for (int i = 0; i < 4; ++i) a[i] = _mm512_maskz_loadu_ps(m, t.a[i] + k);
    for (int j = 0; j < 4; ++j) {
      __m512 w = _mm512_maskz_loadu_ps(m, t.w[j] + k);
      for (int i = 0; i < 4; ++i) acc[i][j] = _mm512_fmadd_ps(a[i], w, acc[i][j]);
    }
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// 16 ymm registers: a 4x4 tile would spill, so AVX2 does two 2x4 half tiles.
__attribute__((target("avx2,fma"))) void tile_avx2(const Tile &t, int64_t K, float out[4][4]) {
  const int64_t K8 = K & ~int64_t(7);
  for (int h = 0; h < 4; h += 2) {
    __m256 acc[2][4];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm256_setzero_ps();
    const float *a0p = t.a[h], *a1p = t.a[h + 1];
    for (int64_t k = 0; k < K8; k += 8) {
      __m256 a0 = _mm256_loadu_ps(a0p + k), a1 = _mm256_loadu_ps(a1p + k);
      for (int j = 0; j < 4; ++j) {
        __m256 w = _mm256_loadu_ps(t.w[j] + k);
        acc[0][j] = _mm256_fmadd_ps(a0, w, acc[0][j]);
        acc[1][j] = _mm256_fmadd_ps(a1, w, acc[1][j]);
      }
    }
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 4; ++j) {
        float s = hsum256(acc[i][j]);
        for (int64_t k = K8; k < K; ++k) s += t.a[h + i][k] * t.w[j][k];
        out[h + i][j] = s;
      }
  }
}
#endif

bool cpu_has(const char *isa) {
#ifdef NT_X86
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return std::strcmp(isa, "scalar") == 0;
}

TileKernel kernel_named(const char *name) {
  if (!cpu_has(name)) return nullptr;
#ifdef NT_X86
  if (std::strcmp(name, "avx512") == 0) return tile_avx512;
  if (std::strcmp(name, "avx2") == 0) return tile_avx2;
#endif
  return tile_scalar;
}

// The best kernel this CPU runs; NEUROTAP_GEMM_KERNEL=scalar|avx2|avx512 caps the choice.
TileKernel pick_kernel() {
  const char *forced = std::getenv("NEUROTAP_GEMM_KERNEL");
  if (forced) {
    if (TileKernel k = kernel_named(forced)) return k;
  }
  // Otherwise the best the CPU (and the NEUROTAP_CPU cap) allows.
  switch (cpu_isa()) {
    case Isa::Avx512: return kernel_named("avx512");
    case Isa::Avx2: return kernel_named("avx2");
    case Isa::Scalar: break;
  }
  return tile_scalar;
}

std::atomic<TileKernel> g_kernel{pick_kernel()};

}  // namespace

bool gemm_select_kernel(const char *name) {
  TileKernel k = kernel_named(name);
  if (!k) return false;
  g_kernel.store(k);
  return true;
}

const char *gemm_kernel_name() {
  TileKernel k = g_kernel.load();
#ifdef NT_X86
  if (k == tile_avx512) return "avx512";
  if (k == tile_avx2) return "avx2";
#endif
  return "scalar";
}

void gemm_f32(ThreadPool &pool, const float *A, int64_t M, int64_t K, const float *W, int64_t N, const float *bias, float *C) {
  const TileKernel kernel = g_kernel.load(std::memory_order_relaxed);
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) C[m * N + n] = bias ? bias[n] : 0.0f;
    return;
  }
  const int64_t mb = (M + kBlockM - 1) / kBlockM;
  const int64_t nb = (N + kBlockN - 1) / kBlockN;
  pool.parallel_for(mb * nb, [&](int64_t item) {
    // n-major order: consecutive items share a W block.
    const int64_t bn = item / mb, bm = item % mb;
    const int64_t m0 = bm * kBlockM, m1 = std::min(M, m0 + kBlockM);
    const int64_t n0 = bn * kBlockN, n1 = std::min(N, n0 + kBlockN);
    float out[4][4];
    Tile t;
    for (int64_t m = m0; m < m1; m += 4) {
      for (int i = 0; i < 4; ++i) t.a[i] = A + std::min(m + i, M - 1) * K;
      for (int64_t n = n0; n < n1; n += 4) {
        for (int j = 0; j < 4; ++j) t.w[j] = W + std::min(n + j, N - 1) * K;
        kernel(t, K, out);
        const int64_t mi = std::min<int64_t>(4, m1 - m), nj = std::min<int64_t>(4, n1 - n);
        for (int64_t i = 0; i < mi; ++i) {
          float *c = C + (m + i) * N + n;
          for (int64_t j = 0; j < nj; ++j) c[j] = out[i][j] + (bias ? bias[n + j] : 0.0f);
        }
      }
    }
  });
}

}  // namespace nt
