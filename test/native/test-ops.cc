// Native tests of the CPU ops: every GEMM micro-kernel against a double-precision reference
// on awkward shapes, the fused attention against the instrumented path, and the thread pool.
#include <atomic>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "ops/ops.h"

static std::vector<float> randn(size_t n, std::mt19937 &rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

static void test_gemm(nt::ThreadPool &pool) {
  std::mt19937 rng(7);
  const int64_t sizes[] = {1, 3, 4, 5, 16, 17, 63, 130};
  for (const char *kernel : {"scalar", "avx2", "avx512"}) {
    if (!nt::gemm_select_kernel(kernel)) {
      std::printf("test-ops: skipping GEMM kernel %s (this CPU lacks it)\n", kernel);
      continue;
    }
    for (int64_t M : sizes)
      for (int64_t K : {1, 7, 16, 33, 200})
        for (int64_t N : {1, 5, 17, 70}) {
          std::vector<float> A = randn(M * K, rng), W = randn(N * K, rng), bias = randn(N, rng), C(M * N);
          nt::gemm_f32(pool, A.data(), M, K, W.data(), N, bias.data(), C.data());
          double worst = 0;
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              double ref = bias[n], mag = std::fabs(bias[n]);
              for (int64_t k = 0; k < K; ++k) {
                ref += static_cast<double>(A[m * K + k]) * W[n * K + k];
                mag += std::fabs(static_cast<double>(A[m * K + k]) * W[n * K + k]);
              }
              worst = std::max(worst, std::fabs(C[m * N + n] - ref) / (mag + 1e-30));
            }
          // f32 accumulation: error bounded by ~K * eps relative to sum |a*w|.
          CHECK(worst < 1e-6 * (1 + K / 16.0), "kernel %s M=%ld K=%ld N=%ld worst %g", kernel, long(M), long(K), long(N), worst);
        }
  }
  nt::gemm_select_kernel("avx512") || nt::gemm_select_kernel("avx2") || nt::gemm_select_kernel("scalar");
}

// The packed-weight GEMM (the path models use) against a double reference, at this CPU's ISA
// (NEUROTAP_CPU=avx2 runs the AVX2 kernel).
static void test_gemm_packed(nt::ThreadPool &pool) {
  if (!nt::gemm_packing_available()) {
    std::printf("test-ops: skipping packed GEMM (no AVX2 or AVX-512)\n");
    return;
  }
  std::mt19937 rng(9);
  for (int64_t M : {1, 2, 3, 4, 5, 8, 13, 100})  // 1-4: the narrow row panels of decode steps
    for (int64_t K : {1, 7, 64, 300})
      for (int64_t N : {1, 17, 32, 33, 100}) {
        std::vector<float> A = randn(M * K, rng), W = randn(N * K, rng), bias = randn(N, rng), C(M * N, -7.0f);
        std::vector<float> Wp(nt::gemm_packed_floats(N, K));
        nt::gemm_pack_weights(W.data(), N, K, Wp.data());
        nt::gemm_f32_packed(pool, A.data(), M, K, Wp.data(), N, (M + N) % 2 ? bias.data() : nullptr, C.data());
        double worst = 0;
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double ref = (M + N) % 2 ? bias[n] : 0.0, mag = std::fabs(ref);
            for (int64_t k = 0; k < K; ++k) {
              ref += static_cast<double>(A[m * K + k]) * W[n * K + k];
              mag += std::fabs(static_cast<double>(A[m * K + k]) * W[n * K + k]);
            }
            worst = std::max(worst, std::fabs(C[m * N + n] - ref) / (mag + 1e-30));
          }
        CHECK(worst < 1e-6 * (1 + K / 16.0), "packed M=%ld K=%ld N=%ld worst %g", long(M), long(K), long(N), worst);
      }
}

static void test_attention_paths(nt::ThreadPool &pool) {
  std::mt19937 rng(11);
  for (int window : {0, 3}) {
    nt::AttentionShape s{2, 9, 4, 2, 8, /*S=*/9, /*KV=*/9, /*q0=*/0, 0.35f, window, nullptr};
    const int64_t nq = s.B * s.T * s.H * s.D, nk = s.B * s.T * s.G * s.D;
    std::vector<float> q = randn(nq, rng), k = randn(nk, rng), v = randn(nk, rng);
    std::vector<float> z1(nq), z2(nq), pattern(s.B * s.H * s.T * s.T);
    nt::attention_f32(pool, s, q.data(), k.data(), v.data(), z1.data());
    nt::attention_scores_f32(pool, s, q.data(), k.data(), pattern.data());
    nt::softmax_rows_f32(pool, pattern.data(), s.B * s.H * s.T, s.T);
    nt::attention_apply_f32(pool, s, pattern.data(), v.data(), z2.data());
    double worst = 0;
    for (int64_t i = 0; i < nq; ++i) worst = std::max(worst, static_cast<double>(std::fabs(z1[i] - z2[i])));
    CHECK(worst < 1e-6, "fused vs instrumented attention differ by %g (window %d)", worst, window);
    // Masked entries are exactly zero; rows sum to one.
    for (int64_t r = 0; r < s.B * s.H * s.T; ++r) {
      const int64_t t = r % s.T;
      double sum = 0;
      for (int64_t j = 0; j < s.T; ++j) {
        const float p = pattern[r * s.T + j];
        const bool visible = j <= t && (window == 0 || t - j < window);
        if (!visible) CHECK(p == 0.0f, "masked pattern entry is %g", p);
        sum += p;
      }
      CHECK(std::fabs(sum - 1.0) < 1e-6, "pattern row sums to %g", sum);
    }
  }
}

// The KV-cache path: the last query run alone against a strided key store equals the last
// row of the full run; a left-padded row equals the unpadded sequence. Exactly when both runs
// take the same path (T < 8: row path; T >= 8 with AVX-512: tiled), else to f32 rounding.
static void test_attention_cache_and_padding(nt::ThreadPool &pool) {
  std::mt19937 rng(13);
  for (const int64_t T : {7, 12}) {
    const int64_t H = 4, G = 2, D = 8, cap = 16;
    nt::AttentionShape full{1, T, H, G, D, T, T, 0, 0.4f, 0, nullptr};
    std::vector<float> q = randn(T * H * D, rng), k = randn(T * G * D, rng), v = randn(T * G * D, rng), z(T * H * D);
    nt::attention_f32(pool, full, q.data(), k.data(), v.data(), z.data());
    std::vector<float> kc(cap * G * D, 99.0f), vc(cap * G * D, 99.0f), z1(H * D);
    std::copy(k.begin(), k.end(), kc.begin());
    std::copy(v.begin(), v.end(), vc.begin());
    nt::AttentionShape step{1, 1, H, G, D, cap, T, T - 1, 0.4f, 0, nullptr};
    nt::attention_f32(pool, step, q.data() + (T - 1) * H * D, kc.data(), vc.data(), z1.data());
    double worst = 0;
    for (int64_t i = 0; i < H * D; ++i) worst = std::max(worst, static_cast<double>(std::fabs(z1[i] - z[(T - 1) * H * D + i])));
    CHECK(worst <= (T < 8 ? 0.0 : 1e-6), "T=%ld: cached step differs from the full run by %g", long(T), worst);

    const int32_t pad = 3;
    std::vector<float> qp(pad * H * D, 5.0f), kp(pad * G * D, -7.0f), vp(pad * G * D, 11.0f), zp((T + pad) * H * D);
    qp.insert(qp.end(), q.begin(), q.end());
    kp.insert(kp.end(), k.begin(), k.end());
    vp.insert(vp.end(), v.begin(), v.end());
    nt::AttentionShape padded{1, T + pad, H, G, D, T + pad, T + pad, 0, 0.4f, 0, &pad};
    nt::attention_f32(pool, padded, qp.data(), kp.data(), vp.data(), zp.data());
    worst = 0;
    for (int64_t i = 0; i < T * H * D; ++i) worst = std::max(worst, static_cast<double>(std::fabs(zp[pad * H * D + i] - z[i])));
    CHECK(worst <= (T >= 8 ? 0.0 : 1e-6), "T=%ld: left-padded attention differs from unpadded by %g", long(T), worst);
    for (int64_t i = 0; i < pad * H * D; ++i) CHECK(zp[i] == 0.0f, "padding query produced %g", zp[i]);
  }
}

// Prefill shapes that take the tiled AVX-512 path (T >= 8; several 64-row blocks, partial
// 8-row tiles, 16-key panels cut by the diagonal, head dims not a multiple of 16, GQA,
// windows, left padding, queries after cached keys, 256-row blocks where there are enough of
// them): fused equals the instrumented path.
static void test_attention_tiled(nt::ThreadPool &pool) {
  std::mt19937 rng(17);
  struct Case { int64_t B, T, H, G, D, q0; int window; int32_t pad0, pad1; };
  const Case cases[] = {{1, 8, 2, 2, 64, 0, 0, 0, 0},  {2, 70, 4, 2, 24, 0, 0, 0, 5},  {1, 130, 2, 1, 80, 0, 7, 0, 0},
                        {2, 67, 3, 3, 64, 0, 0, 66, 2}, {1, 37, 4, 4, 32, 21, 0, 0, 0}, {1, 41, 2, 1, 256, 9, 13, 3, 0},
                        {2, 300, 8, 4, 64, 0, 0, 0, 11}, {1, 520, 8, 2, 48, 5, 100, 0, 0}};  // the last two: 256-row blocks
  for (const Case &c : cases) {
    const int64_t S = c.q0 + c.T;
    const int32_t pads[2] = {c.pad0, c.pad1};
    nt::AttentionShape s{c.B, c.T, c.H, c.G, c.D, S, S, c.q0, 0.3f, c.window, (c.pad0 || c.pad1) ? pads : nullptr};
    const int64_t nq = c.B * c.T * c.H * c.D;
    std::vector<float> q = randn(nq, rng), k = randn(c.B * S * c.G * c.D, rng), v = randn(c.B * S * c.G * c.D, rng);
    std::vector<float> z1(nq, 42.0f), z2(nq), pattern(c.B * c.H * c.T * S);
    nt::attention_f32(pool, s, q.data(), k.data(), v.data(), z1.data());
    nt::attention_scores_f32(pool, s, q.data(), k.data(), pattern.data());
    nt::softmax_rows_f32(pool, pattern.data(), c.B * c.H * c.T, S);
    nt::attention_apply_f32(pool, s, pattern.data(), v.data(), z2.data());
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < nq; ++i) {
      const double d = std::fabs(z1[i] - z2[i]);
      if (!(d <= worst)) worst = d, at = i;
    }
    // f32 dot products of length D summed in different orders: error grows with D.
    CHECK(worst < 1e-6 * (2 + c.D / 32.0), "tiled attention B=%ld T=%ld H=%ld G=%ld D=%ld q0=%ld window=%d: worst %g at %ld (%g vs %g)", long(c.B), long(c.T),
          long(c.H), long(c.G), long(c.D), long(c.q0), c.window, worst, long(at), z1[at], z2[at]);
  }
}

// Vector GELU/SiLU against libm (NEUROTAP_CPU=scalar gives the scalar path itself).
static void test_activations(nt::ThreadPool &pool) {
  std::vector<float> x(20001);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -30.0f + 60.0f * static_cast<float>(i) / static_cast<float>(x.size() - 1);
  x[0] = -100.0f;
  x[1] = 100.0f;
  x[2] = 0.0f;
  for (int which = 0; which < 2; ++which) {
    std::vector<float> y = x;
    if (which == 0) nt::gelu_tanh_f32(pool, y.data(), static_cast<int64_t>(y.size()));
    else nt::silu_f32(pool, y.data(), static_cast<int64_t>(y.size()));
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = x[i];
      const double ref = which == 0 ? 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))) : v / (1 + std::exp(-v));
      worst = std::max(worst, std::fabs(y[i] - ref) / std::max(1.0, std::fabs(ref)));
    }
    CHECK(worst < 2e-6, "%s worst error %g", which == 0 ? "gelu_tanh" : "silu", worst);
  }
}

// Soft-capping (Gemma 2) against libm: cap * tanh(x / cap), with -inf (masked scores) kept.
static void test_softcap(nt::ThreadPool &pool) {
  std::vector<float> x = {-1e30f, -200.0f, -5.0f, -0.25f, 0.0f, 0.5f, 3.0f, 49.0f, 1e6f, -std::numeric_limits<float>::infinity()};
  std::vector<float> y = x;
  nt::softcap_f32(pool, y.data(), static_cast<int64_t>(y.size()), 5.0f);
  for (size_t i = 0; i + 1 < x.size(); ++i) {
    const double ref = 5.0 * std::tanh(static_cast<double>(x[i]) / 5.0);
    CHECK(std::fabs(y[i] - ref) <= 1e-6 * 5.0, "softcap(%g) = %g, expected %g", double(x[i]), double(y[i]), ref);
  }
  CHECK(y.back() == -std::numeric_limits<float>::infinity(), "softcap must keep -inf, got %g", double(y.back()));
}

static void test_thread_pool() {
  for (int threads : {1, 2, 5}) {
    nt::ThreadPool pool(threads);
    for (int rep = 0; rep < 2000; ++rep) {
      const int64_t n = 1 + rep % 37;
      std::atomic<int64_t> sum{0};
      pool.parallel_for(n, [&](int64_t i) { sum += i + 1; });
      if (sum != n * (n + 1) / 2) {
        CHECK(false, "threads %d rep %d: sum %ld", threads, rep, long(sum.load()));
        break;
      }
    }
  }
}

int main() {
  nt::ThreadPool pool(3);
  test_gemm(pool);
  test_gemm_packed(pool);
  test_attention_paths(pool);
  test_attention_cache_and_padding(pool);
  test_attention_tiled(pool);
  test_activations(pool);
  test_softcap(pool);
  test_thread_pool();
  return report("test-ops");
}
