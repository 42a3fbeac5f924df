// The backward ops' shared micro-kernel (fma-tile.h): per step t, one or two vectors of W's row t
// and MR broadcasts of A's column t feed MR x 32 accumulators (the forward packed GEMM's kernel
// shape: 16 FMAs per 2 loads and 8 broadcasts with AVX-512). Tests: test/native/test-backward.cc.
#include "ops/fma-tile.h"

#include <algorithm>

#include "ops/cpu-features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define NT_X86 1
#endif

namespace nt {

namespace {

void tile_scalar(const FmaTile &t) {
  for (int64_t r = 0; r < t.mr; ++r) {
    float acc[32] = {0};
    const float *a = t.a + r * t.ars;
    for (int64_t k = 0; k < t.n; ++k) {
      const float av = a[k * t.acs];
      const float *w = t.w + k * t.ldw;
      for (int64_t j = 0; j < t.nr; ++j) acc[j] += av * w[j];
    }
    float *c = t.c + r * t.ldc;
    for (int64_t j = 0; j < t.nr; ++j) c[j] = t.alpha * acc[j] + (t.accumulate ? c[j] : 0.0f);
  }
}

#ifdef NT_X86
inline __mmask16 lanes16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1);
}

// Rows past mr repeat row mr - 1 (read, never stored).
template <bool Unit>
__attribute__((target("avx512f"))) void tile_avx512(const FmaTile &t) {
  const __mmask16 m0 = lanes16(t.nr), m1 = lanes16(t.nr - 16);
  const float *ap[8];
  for (int i = 0; i < 8; ++i) ap[i] = t.a + std::min<int64_t>(i, t.mr - 1) * t.ars;
  __m512 acc[8][2];
  // Fully unrolled (GCC at -O2 otherwise keeps the accumulators in memory).
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  const int64_t acs = Unit ? 1 : t.acs, n = t.n, ldw = t.ldw;
  const float *w = t.w;
  for (int64_t k = 0; k < n; ++k, w += ldw) {
    const __m512 w0 = _mm512_maskz_loadu_ps(m0, w), w1 = _mm512_maskz_loadu_ps(m1, w + 16);
    const int64_t o = k * acs;
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m512 av = _mm512_set1_ps(ap[i][o]);
      acc[i][0] = _mm512_fmadd_ps(av, w0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, w1, acc[i][1]);
    }
  }
  const __m512 alpha = _mm512_set1_ps(t.alpha);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    if (i >= t.mr) break;
    float *c = t.c + i * t.ldc;
    __m512 v0 = _mm512_mul_ps(alpha, acc[i][0]), v1 = _mm512_mul_ps(alpha, acc[i][1]);
    if (t.accumulate) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, c));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
  }
}

__attribute__((target("avx2,fma"))) inline __m256i lanes8(int64_t n) {
  const int32_t k = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(8, n)));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 16 ymm registers: 6 rows x 16 columns (a 32-column tile takes two calls).
template <bool Unit>
__attribute__((target("avx2,fma"))) void tile_avx2(const FmaTile &t, int64_t col, int64_t nr) {
  const __m256i m0 = lanes8(nr), m1 = lanes8(nr - 8);
  const float *ap[6];
  for (int i = 0; i < 6; ++i) ap[i] = t.a + std::min<int64_t>(i, t.mr - 1) * t.ars;
  __m256 acc[6][2];
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  const int64_t acs = Unit ? 1 : t.acs, n = t.n, ldw = t.ldw;
  const float *w = t.w + col;
  for (int64_t k = 0; k < n; ++k, w += ldw) {
    const __m256 w0 = _mm256_maskload_ps(w, m0), w1 = _mm256_maskload_ps(w + 8, m1);
    const int64_t o = k * acs;
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
      const __m256 av = _mm256_broadcast_ss(ap[i] + o);
      acc[i][0] = _mm256_fmadd_ps(av, w0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, w1, acc[i][1]);
    }
  }
  const __m256 alpha = _mm256_set1_ps(t.alpha);
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) {
    if (i >= t.mr) break;
    float *c = t.c + i * t.ldc + col;
    __m256 v0 = _mm256_mul_ps(alpha, acc[i][0]), v1 = _mm256_mul_ps(alpha, acc[i][1]);
    if (t.accumulate) {
      v0 = _mm256_add_ps(v0, _mm256_maskload_ps(c, m0));
      v1 = _mm256_add_ps(v1, _mm256_maskload_ps(c + 8, m1));
    }
    _mm256_maskstore_ps(c, m0, v0);
    _mm256_maskstore_ps(c + 8, m1, v1);
  }
}
#endif

}  // namespace

int64_t fma_tile_rows() {
  switch (cpu_isa()) {
    case Isa::Avx512: return 8;
    case Isa::Avx2: return 6;
    case Isa::Scalar: break;
  }
  return 4;
}

void fma_tile(const FmaTile &t) {
  if (t.mr <= 0 || t.nr <= 0) return;
#ifdef NT_X86
  switch (cpu_isa()) {
    case Isa::Avx512:
      if (t.acs == 1) tile_avx512<true>(t);
      else tile_avx512<false>(t);
      return;
    case Isa::Avx2:
      for (int64_t col = 0; col < t.nr; col += 16) {
        if (t.acs == 1) tile_avx2<true>(t, col, std::min<int64_t>(16, t.nr - col));
        else tile_avx2<false>(t, col, std::min<int64_t>(16, t.nr - col));
      }
      return;
    case Isa::Scalar: break;
  }
#endif
  tile_scalar(t);
}

}  // namespace nt
