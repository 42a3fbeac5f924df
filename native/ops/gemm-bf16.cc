// The bf16 compute mode's AVX512_BF16 GEMM (policy in gemm-bf16.h): W packed once at load into
// k-pair panels [N/32][K2][32][2], A rounded to bf16 pairs while it is packed per call into row
// panels [M/MR][K2][MR] (one 32-bit pair per row and k pair), and an MR x 32 micro-kernel of
// vdpbf16ps: per k pair, 2 W loads and MR pair broadcasts feed 2 * MR instructions that each add
// 16 columns' two products to f32 accumulators. MR is 8, or the power of two that covers M
// below that (decode steps: no work on padding rows). Tests: test/native/test-bf16.cc; speed:
// bench/gemm-bf16.cc.
//
// Blocking as gemm-packed.cc: a work item is up to 4 W panels x 16 A panels (at K = 768, a W
// panel is 48 KB and an A panel 12 KB: ~0.4 MB, in L2).
#include <algorithm>
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

constexpr int64_t kNR = 32;
constexpr int64_t kPanelsPerItemN = 4;
constexpr int64_t kPanelsPerItemM = 16;

#ifdef NT_X86
// 16 floats rounded to bf16 (bf16_from_f32 exactly), narrowed to 8 pairs (even k in the low half).
__attribute__((target("avx512f"))) inline __m256i round_pairs16(__m512 x) { return _mm512_cvtepi32_epi16(bf16_bits512(x)); }

// Row panel p of A: dst[k2 * MR + i] = bf16 pair (A[m, 2k2], A[m, 2k2 + 1]) of row m = p * MR + i,
// zero past M and K.
__attribute__((target("avx512f"))) void pack_a_panel(const float *A, int64_t M, int64_t K, int64_t MR, int64_t p, uint32_t *dst) {
  const int64_t K2 = (K + 1) / 2;
  alignas(32) uint32_t pairs[8];
  for (int64_t i = 0; i < MR; ++i) {
    const int64_t m = p * MR + i;
    if (m >= M) {
      for (int64_t k2 = 0; k2 < K2; ++k2) dst[k2 * MR + i] = 0;
      continue;
    }
    const float *src = A + m * K;
    for (int64_t k = 0; k < K; k += 16) {
      const int64_t n = std::min<int64_t>(16, K - k);
      const __mmask16 mask = n == 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
      _mm256_store_si256(reinterpret_cast<__m256i *>(pairs), round_pairs16(_mm512_maskz_loadu_ps(mask, src + k)));
      const int64_t n2 = (n + 1) / 2;
      for (int64_t j = 0; j < n2; ++j) dst[(k / 2 + j) * MR + i] = pairs[j];
    }
  }
}

// C[mr, nr] = A_panel[K2][MR] · W_panel[K2][32] (+ bias); only the first mr rows, nr columns stored.
template <int MR>
__attribute__((target("avx512f,avx512bf16"))) void kernel_pairs(const uint32_t *ap, const uint16_t *wp, int64_t K2, float *c, int64_t ldc,
                                                               int64_t mr, int64_t nr, const float *bias) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k2 = 0; k2 < K2; ++k2) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(wp + k2 * 2 * kNR);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(wp + k2 * 2 * kNR + kNR);
    const uint32_t *a = ap + k2 * MR;
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, w0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, w1);
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
#endif

}  // namespace

size_t gemm_bf16_pairs_elems(int64_t N, int64_t K) { return static_cast<size_t>((N + kNR - 1) / kNR * kNR * ((K + 1) / 2) * 2); }

void gemm_pack_weights_bf16_pairs(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wp) {
  const int64_t panels = (N + kNR - 1) / kNR, K2 = (K + 1) / 2;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t k2 = 0; k2 < K2; ++k2)
      for (int64_t j = 0; j < kNR; ++j)
        for (int64_t e = 0; e < 2; ++e) {
          const int64_t n = p * kNR + j, k = 2 * k2 + e;
          Wp[((p * K2 + k2) * kNR + j) * 2 + e] = n < N && k < K ? W[n * K + k] : uint16_t(0);
        }
}

void gemm_bf16_pairs(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias, float *C) {
#ifdef NT_X86
  if (M <= 0 || N <= 0) return;
  const int64_t K2 = (K + 1) / 2;
  const int64_t MR = M >= 8 ? 8 : M > 2 ? 4 : M;
  const auto kernel = MR == 8 ? kernel_pairs<8> : MR == 4 ? kernel_pairs<4> : MR == 2 ? kernel_pairs<2> : kernel_pairs<1>;
  const int64_t mp = (M + MR - 1) / MR, np = (N + kNR - 1) / kNR;
  // A as pair panels [mp][K2][MR]; the buffer lives with the calling thread and only grows.
  thread_local std::vector<uint32_t> ap;
  if (ap.size() < static_cast<size_t>(mp * K2 * MR)) ap.resize(static_cast<size_t>(mp * K2 * MR));
  uint32_t *const apd = ap.data();
  pool.parallel_for(mp, [&](int64_t p) { pack_a_panel(A, M, K, MR, p, apd + p * K2 * MR); });
  const int64_t items_m = (mp + kPanelsPerItemM - 1) / kPanelsPerItemM, items_n = (np + kPanelsPerItemN - 1) / kPanelsPerItemN;
  pool.parallel_for(items_m * items_n, [&](int64_t item) {
    const int64_t in = item / items_m, im = item % items_m;
    const int64_t n0 = in * kPanelsPerItemN, n1 = std::min(np, n0 + kPanelsPerItemN);
    const int64_t m0 = im * kPanelsPerItemM, m1 = std::min(mp, m0 + kPanelsPerItemM);
    for (int64_t pn = n0; pn < n1; ++pn) {
      const uint16_t *wp = Wp + pn * K2 * 2 * kNR;
      const int64_t col = pn * kNR, nr = std::min(kNR, N - col);
      for (int64_t pm = m0; pm < m1; ++pm) {
        const int64_t row = pm * MR;
        kernel(apd + pm * K2 * MR, wp, K2, C + row * N + col, N, std::min(MR, M - row), nr, bias ? bias + col : nullptr);
      }
    }
  });
#else
  (void)pool, (void)A, (void)M, (void)K, (void)Wp, (void)N, (void)bias, (void)C;
#endif
}

}  // namespace nt
