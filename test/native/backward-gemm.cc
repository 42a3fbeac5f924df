// gemm_backward cases: dA = dC · W for every weight form the forward gemm takes on the CPU (plain
// f32 and bf16, the packed f32 and bf16 panels of pack_weight), against a double reference and
// finite differences of the forward gemm, at shapes off every block size (M off the row tile,
// K off the 32-column block, N past the 256-row chunk).
#include <cstring>

#include "backward.h"
#include "io/safetensors.h"

namespace bwd {

namespace {

struct Weight {
  const char *name;
  const void *ptr;
  nt_dtype dtype;
};

void gemm_case(Cpu &c, int64_t M, int64_t N, int64_t K, uint32_t seed) {
  const std::vector<float> A = randn(M * K, seed), W = randn(N * K, seed + 1), dC = randn(M * N, seed + 2);
  // bf16 weights: the reference uses the widened values (the op computes in f32 on them).
  std::vector<uint16_t> Wb(W.size());
  std::vector<float> Wbw(W.size());
  for (size_t i = 0; i < W.size(); ++i) Wb[i] = nt::f32_to_bf16(W[i]), Wbw[i] = nt::bf16_to_f32(Wb[i]);
  std::vector<Weight> forms{{"f32", W.data(), NT_F32}, {"bf16", Wb.data(), NT_BF16}};
  std::vector<void *> packed;
  for (int i = 0; i < 2; ++i) {
    if (!c.api->pack_weight) break;
    nt_dtype pd = NT_F32;
    void *p = c.api->pack_weight(c.be, forms[i].ptr, forms[i].dtype, N, K, &pd);
    if (!p) continue;  // no packing without AVX2
    packed.push_back(p);
    forms.push_back({i == 0 ? "packed f32" : "packed bf16", p, pd});
  }
  for (const Weight &w : forms) {
    const bool bf16 = std::strstr(w.name, "bf16") != nullptr;
    const std::vector<float> &Wr = bf16 ? Wbw : W;
    const std::string name = std::string("gemm_backward ") + w.name + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                             std::to_string(K);
    std::vector<float> dA(M * K, 1e30f);  // written, not accumulated into
    c.ok(c.api->gemm_backward(c.be, dC.data(), M, N, w.ptr, w.dtype, K, dA.data()), name);
    std::vector<double> ref(M * K, 0.0);
    double mag = 0;  // the largest sum of |products| (what float32 rounding is relative to)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        double s = 0, a = 0;
        for (int64_t n = 0; n < N; ++n) s += static_cast<double>(dC[m * N + n]) * Wr[n * K + k], a += std::fabs(dC[m * N + n] * Wr[n * K + k]);
        ref[m * K + k] = s;
        mag = std::max(mag, a);
      }
    // float32 sums of N products in another order: within ~N * 2^-24 of sum |products| at worst,
    // in practice ~sqrt(N) ulp; 1e-6 * (1 + N / 16) as the forward GEMM test (test-ops.cc).
    check_close(name, dA, ref, 1e-6 * (1 + N / 16.0), mag);
    // The forward gemm's VJP: L(A) = sum dC * (A · W^T), perturbing A.
    check_fd(name + " fd", to_double(A), [&](const std::vector<double> &a) {
      double L = 0;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += a[m * K + k] * Wr[n * K + k];
          L += dC[m * N + n] * s;
        }
      return L;
    }, dA, 12, seed);
    // And against the forward gemm itself on this weight form: <dC, gemm(A)> = <dA, A> (f32 sums).
    std::vector<float> C(M * N);
    c.ok(c.api->gemm(c.be, A.data(), M, K, w.ptr, w.dtype, N, nullptr, C.data()), name + " forward");
    double lhs = 0, rhs = 0, size = 0;
    for (int64_t i = 0; i < M * N; ++i) lhs += static_cast<double>(dC[i]) * C[i], size += std::fabs(static_cast<double>(dC[i]) * C[i]);
    for (int64_t i = 0; i < M * K; ++i) rhs += static_cast<double>(dA[i]) * A[i];
    CHECK(std::fabs(lhs - rhs) <= 1e-5 * (size + 1), "%s: <dC, gemm(A)> %.8g vs <dA, A> %.8g", name.c_str(), lhs, rhs);
  }
  for (void *p : packed) c.api->free(c.be, p);
}

}  // namespace

void gemm_cases(Cpu &c) {
  uint32_t seed = 100;
  for (int64_t M : {1, 5, 13, 70})
    for (int64_t N : {1, 17, 33, 300})
      for (int64_t K : {1, 7, 45, 64})
        gemm_case(c, M, N, K, seed += 3);
  // A GPT-2-sized block (rows past one 128-row group, K past several column blocks).
  gemm_case(c, 131, 96, 200, 999);
}

}  // namespace bwd
