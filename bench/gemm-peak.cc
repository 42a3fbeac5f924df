// Measures the CPU GEMM kernels' GFLOP/s on GPT-2-small shapes (row-major dot kernel vs packed
// weights), to compare with the machine's arithmetic ceiling. Build and run (bench/RESULTS.md):
//   g++ -std=c++17 -O3 -Inative bench/gemm-peak.cc native/ops/gemm.cc native/ops/gemm-packed.cc \
//     native/ops/thread-pool.cc native/ops/cpu-features.cc -o /tmp/gemm-peak -lpthread && T=2 /tmp/gemm-peak
#include <chrono>
#include <cstdio>
#include <vector>
#include <random>
#include <cstdlib>
#include "ops/ops.h"
int main() {
  nt::ThreadPool pool(std::atoi(std::getenv("T") ? std::getenv("T") : "2"));
  for (auto [M, K, N] : std::vector<std::array<int64_t,3>>{{1024,768,768},{1024,768,3072},{1024,3072,768},{1024,768,50257}}) {
    std::vector<float> A(M*K, 0.5f), W(N*K, 0.25f), C(M*N), Wp(nt::gemm_packed_floats(N,K));
    nt::gemm_pack_weights(W.data(), N, K, Wp.data());
    for (int variant = 0; variant < 2; ++variant) {
      double best = 1e9;
      for (int r = 0; r < 3; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        if (variant) nt::gemm_f32_packed(pool, A.data(), M, K, Wp.data(), N, nullptr, C.data());
        else nt::gemm_f32(pool, A.data(), M, K, W.data(), N, nullptr, C.data());
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::min(best, s);
      }
      std::printf("%s M=%ld K=%ld N=%ld: %.1f GFLOP/s\n", variant ? "packed" : "dot   ", (long)M, (long)K, (long)N, 2.0*M*K*N/best/1e9);
    }
  }
}
