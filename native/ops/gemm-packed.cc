// CPU GEMM on weights packed once at load: C[M, N] = A[M, K] · W[N, K]^T (+ bias). W is stored
// as panels of 32 output columns, k-major ([N/32][K][32], zero-padded), so the micro-kernel
// broadcasts one A value against two (AVX-512) or four (AVX2) vectors of W per k with no
// horizontal sums. bf16 weights use the same layout with 16-bit elements and are widened to f32
// in the kernel (exact), so dtype 'bf16' computes in f32 on half the weight memory. A is packed
// per call into row panels ([M/MR][K][MR]), rounded to bf16 there for compute 'bf16' on CPUs
// without AVX512_BF16 (gemm_bf16_packed_round; its vdpbf16ps twin is gemm-bf16.cc). Tests:
// test/native/test-ops.cc (every ISA against a double reference), whole-model HF tests.
//
// Blocking: a work item is up to 4 W panels x 16 A panels. At K = 768 a W panel is 96 KB and
// an A panel 24 KB (AVX-512, MR = 8), so an item's working set (~0.8 MB) stays in L2 while the
// 8x32 kernel does 16 FMAs per 2 W loads and 8 broadcasts.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ops/bf16.h"
#include "ops/cpu-features.h"
#include "ops/ops.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define NT_X86 1
#endif

namespace nt {

namespace {

constexpr int64_t kNR = 32;
constexpr int64_t kPanelsPerItemN = 4;
constexpr int64_t kPanelsPerItemM = 16;

#ifdef NT_X86
// 16 (AVX-512) or 8 (AVX2) packed weights as f32: bf16 is the top half of an f32.
__attribute__((target("avx512f"))) inline __m512 load16(const float *p) { return _mm512_loadu_ps(p); }
__attribute__((target("avx512f"))) inline __m512 load16(const uint16_t *p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))), 16));
}
__attribute__((target("avx2,fma"))) inline __m256 load8(const float *p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))), 16));
}

// C[mr, nr] (+)= A_panel[K][R] · W_panel[K][32]; only the first mr rows and nr columns are stored.
// R = 8 normally; 1, 2 or 4 for the few rows of a decode step, which would otherwise spend 7/8
// of the FMAs on padding rows and fall short of streaming the weights.
template <int R, typename Wt>
__attribute__((target("avx512f"))) void kernel_avx512(const float *ap, const Wt *wp, int64_t K, float *c, int64_t ldc, int64_t mr,
                                                     int64_t nr, const float *bias) {
  __m512 acc[R][2];
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w0 = load16(wp + k * kNR), w1 = load16(wp + k * kNR + 16);
    const float *a = ap + k * R;
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(av, w0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, w1, acc[i][1]);
    }
  }
  const __mmask16 m0 = nr >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << nr) - 1);
  const __mmask16 m1 = nr >= 32 ? static_cast<__mmask16>(0xFFFF) : nr > 16 ? static_cast<__mmask16>((1u << (nr - 16)) - 1) : 0;
  const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 b1 = bias && m1 ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
  for (int64_t i = 0; i < mr; ++i) {
    _mm512_mask_storeu_ps(c + i * ldc, m0, _mm512_add_ps(acc[i][0], b0));
    if (m1) _mm512_mask_storeu_ps(c + i * ldc + 16, m1, _mm512_add_ps(acc[i][1], b1));
  }
}

// AVX2 (16 ymm registers): 6 rows x 16 columns per call, so a 32-wide panel takes two calls.
template <typename Wt>
__attribute__((target("avx2,fma"))) void kernel_avx2(const float *ap, const Wt *wp, int64_t K, float *c, int64_t ldc, int64_t mr,
                                                    int64_t nr, const float *bias) {
  __m256 acc[6][2];
  for (int i = 0; i < 6; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = load8(wp + k * kNR), w1 = load8(wp + k * kNR + 8);
    const float *a = ap + k * 6;
    for (int i = 0; i < 6; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(av, w0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, w1, acc[i][1]);
    }
  }
  alignas(32) float tmp[16];
  for (int64_t i = 0; i < mr; ++i) {
    _mm256_store_ps(tmp, acc[i][0]);
    _mm256_store_ps(tmp + 8, acc[i][1]);
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] = tmp[j] + (bias ? bias[j] : 0.0f);
  }
}
#endif

}  // namespace

bool gemm_packing_available() { return cpu_isa() != Isa::Scalar; }

size_t gemm_packed_floats(int64_t N, int64_t K) { return static_cast<size_t>((N + kNR - 1) / kNR * kNR * K); }

namespace {

template <typename Wt>
void pack_panels(const Wt *W, int64_t N, int64_t K, Wt *Wp) {
  const int64_t panels = (N + kNR - 1) / kNR;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < kNR; ++j) {
        const int64_t n = p * kNR + j;
        Wp[(p * K + k) * kNR + j] = n < N ? W[n * K + k] : Wt(0);
      }
}

// round_a: A rounded to bf16 (nearest even) as it is packed; products and sums stay f32.
template <typename Wt>
void gemm_packed(ThreadPool &pool, const float *A, int64_t M, int64_t K, const Wt *Wp, int64_t N, const float *bias, float *C,
                 bool round_a) {
#ifdef NT_X86
  const bool wide = cpu_isa() == Isa::Avx512;
  if (M <= 0) return;
  const int64_t MR = !wide ? 6 : M >= 5 ? 8 : M >= 3 ? 4 : M;
  const int64_t mp = (M + MR - 1) / MR, np = (N + kNR - 1) / kNR;
  // A in row panels: [mp][K][MR], zero-padded past M. The buffer lives with the calling (forward)
  // thread and only grows: a fresh 12 MB vector per MLP GEMM cost a memset and page faults.
  // (Lambdas below run on pool threads, which have their own thread_local: they use `apd`.)
  thread_local std::vector<float> ap;
  if (ap.size() < static_cast<size_t>(mp * K * MR)) ap.resize(static_cast<size_t>(mp * K * MR));
  float *const apd = ap.data();
  pool.parallel_for(mp, [&](int64_t p) {
    float *dst = apd + p * K * MR;
    for (int64_t i = 0; i < MR; ++i) {
      const int64_t m = p * MR + i;
      if (m < M) {
        const float *src = A + m * K;
        if (round_a)
          for (int64_t k = 0; k < K; ++k) dst[k * MR + i] = bf16_round(src[k]);
        else
          for (int64_t k = 0; k < K; ++k) dst[k * MR + i] = src[k];
      } else {
        for (int64_t k = 0; k < K; ++k) dst[k * MR + i] = 0.0f;
      }
    }
  });
  const int64_t items_m = (mp + kPanelsPerItemM - 1) / kPanelsPerItemM, items_n = (np + kPanelsPerItemN - 1) / kPanelsPerItemN;
  pool.parallel_for(items_m * items_n, [&](int64_t item) {
    const int64_t in = item / items_m, im = item % items_m;
    const int64_t n0 = in * kPanelsPerItemN, n1 = std::min(np, n0 + kPanelsPerItemN);
    const int64_t m0 = im * kPanelsPerItemM, m1 = std::min(mp, m0 + kPanelsPerItemM);
    for (int64_t pn = n0; pn < n1; ++pn) {
      const Wt *wp = Wp + pn * K * kNR;
      const int64_t col = pn * kNR, nr = std::min(kNR, N - col);
      for (int64_t pm = m0; pm < m1; ++pm) {
        const int64_t row = pm * MR, mr = std::min(MR, M - row);
        const float *a = apd + pm * K * MR;
        float *c = C + row * N + col;
        const float *b = bias ? bias + col : nullptr;
        if (wide) {
          switch (MR) {
            case 1: kernel_avx512<1>(a, wp, K, c, N, mr, nr, b); break;
            case 2: kernel_avx512<2>(a, wp, K, c, N, mr, nr, b); break;
            case 4: kernel_avx512<4>(a, wp, K, c, N, mr, nr, b); break;
            default: kernel_avx512<8>(a, wp, K, c, N, mr, nr, b); break;
          }
        } else {
          kernel_avx2(a, wp, K, c, N, mr, std::min<int64_t>(16, nr), b);
          if (nr > 16) kernel_avx2(a, wp + 16, K, c + 16, N, mr, nr - 16, b ? b + 16 : nullptr);
        }
      }
    }
  });
#else
  (void)pool, (void)A, (void)M, (void)K, (void)Wp, (void)N, (void)bias, (void)C, (void)round_a;
#endif
}

}  // namespace

void gemm_pack_weights(const float *W, int64_t N, int64_t K, float *Wp) { pack_panels(W, N, K, Wp); }
void gemm_pack_weights_bf16(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wp) { pack_panels(W, N, K, Wp); }

void gemm_f32_packed(ThreadPool &pool, const float *A, int64_t M, int64_t K, const float *Wp, int64_t N, const float *bias, float *C) {
  gemm_packed(pool, A, M, K, Wp, N, bias, C, false);
}
void gemm_bf16_packed(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias, float *C) {
  gemm_packed(pool, A, M, K, Wp, N, bias, C, false);
}
void gemm_bf16_packed_round(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias,
                            float *C) {
  gemm_packed(pool, A, M, K, Wp, N, bias, C, true);
}

}  // namespace nt
