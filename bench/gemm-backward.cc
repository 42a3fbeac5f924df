// Times the CPU GEMM backward (dA = dC · W) against the forward packed GEMM of the same shape, on
// GPT-2-small shapes, for f32 and bf16 packed weights. Build and run (bench/RESULTS.md):
//   g++ -std=c++17 -O3 -Inative bench/gemm-backward.cc native/ops/gemm*.cc native/ops/fma-tile.cc native/ops/thread-pool.cc native/ops/cpu-features.cc -o /tmp/gemm-backward -lpthread && T=1 /tmp/gemm-backward
#include <algorithm>
#include <array>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "ops/ops.h"

// Best of 5 runs in process CPU time (all threads), which a busy machine's other processes
// disturb far less than wall time; with T=1 it is the kernel's time.
static double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static double best_ms(const std::function<void()> &fn) {
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const double t0 = cpu_ms();
    fn();
    best = std::min(best, cpu_ms() - t0);
  }
  return best;
}

int main() {
  nt::ThreadPool pool(std::atoi(std::getenv("T") ? std::getenv("T") : "2"));
  const std::vector<std::array<int64_t, 2>> nk{{768, 768}, {3072, 768}, {768, 3072}, {2304, 768}, {50257, 768}};
  for (int64_t M : {128, 1024})
    for (auto [N, K] : nk) {
      std::vector<float> A(M * K, 0.5f), W(N * K, 0.25f), C(M * N, 0.1f), dA(M * K), Wp(nt::gemm_packed_floats(N, K));
      std::vector<uint16_t> Wb(N * K, 0x3e80), Wbp(nt::gemm_packed_floats(N, K));
      nt::gemm_pack_weights(W.data(), N, K, Wp.data());
      nt::gemm_pack_weights_bf16(Wb.data(), N, K, Wbp.data());
      const double fwd = best_ms([&] { nt::gemm_f32_packed(pool, A.data(), M, K, Wp.data(), N, nullptr, C.data()); });
      const double bwd = best_ms([&] { nt::gemm_backward_f32_packed(pool, C.data(), M, N, Wp.data(), K, dA.data()); });
      const double fwd16 = best_ms([&] { nt::gemm_bf16_packed(pool, A.data(), M, K, Wbp.data(), N, nullptr, C.data()); });
      const double bwd16 = best_ms([&] { nt::gemm_backward_bf16_packed(pool, C.data(), M, N, Wbp.data(), K, dA.data()); });
      const double plain = best_ms([&] { nt::gemm_backward_f32(pool, C.data(), M, N, W.data(), K, dA.data()); });
      std::printf("M=%4ld N=%5ld K=%4ld  f32: fwd %7.2f ms bwd %7.2f ms (x%.2f)  bf16: fwd %7.2f bwd %7.2f (x%.2f)  plain-f32 bwd %7.2f ms\n",
                  long(M), long(N), long(K), fwd, bwd, bwd / fwd, fwd16, bwd16, bwd16 / fwd16, plain);
    }
}
