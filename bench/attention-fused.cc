// Times the fused attention forward (attention_f32, the path without pattern hooks) in exact f32
// and under compute bf16, at GPT-2-small's geometry (H = 12, D = 64), T = 128 and 1024, and a
// Llama GQA window case; best of 7 by wall clock. Build and run:
//   g++ -std=c++17 -O3 -Inative bench/attention-fused.cc native/ops/attention*.cc native/ops/fma-tile.cc native/ops/elementwise-simd.cc native/ops/elementwise-backward.cc native/ops/thread-pool.cc native/ops/cpu-features.cc -o /tmp/attn-fused -lpthread && T=2 /tmp/attn-fused
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "ops/cpu-features.h"
#include "ops/ops.h"

static double best_ms(const std::function<void()> &fn) {
  double best = 1e30;
  for (int r = 0; r < 7; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int main() {
  nt::ThreadPool pool(std::atoi(std::getenv("T") ? std::getenv("T") : "2"));
  std::printf("bf16 attention kernel: %s\n", nt::cpu_bf16_isa() != nt::Bf16Isa::None ? "vdpbf16ps" : "f32 FMAs on rounded operands");
  struct G { int64_t B, T, H, G, D; int window; };
  for (const G g : {G{1, 128, 12, 12, 64, 0}, G{8, 128, 12, 12, 64, 0}, G{1, 1024, 12, 12, 64, 0}, G{1, 1024, 32, 8, 128, 256}}) {
    std::vector<float> q(g.B * g.T * g.H * g.D), k(g.B * g.T * g.G * g.D), v(k.size()), z(q.size());
    for (size_t i = 0; i < q.size(); ++i) q[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
    for (size_t i = 0; i < k.size(); ++i) k[i] = 0.02f * static_cast<float>(i % 89) - 0.8f, v[i] = 0.5f - 0.01f * static_cast<float>(i % 61);
    double ms[2];
    for (int bf16 = 0; bf16 < 2; ++bf16) {
      nt::AttentionShape s{g.B, g.T, g.H, g.G, g.D, g.T, g.T, 0, 0.125f, g.window, nullptr, bf16 == 1};
      ms[bf16] = best_ms([&] { nt::attention_f32(pool, s, q.data(), k.data(), v.data(), z.data()); });
    }
    // Causal q.k and p.v: 2 * 2 * D FLOPs per visible (query, key) pair.
    double pairs = 0;
    for (int64_t t = 0; t < g.T; ++t) pairs += g.window > 0 ? std::min<int64_t>(t + 1, g.window) : t + 1;
    const double gflop = 4.0 * g.D * pairs * g.B * g.H * 1e-9;
    std::printf("B=%ld T=%ld H=%ld G=%ld D=%ld window=%d: f32 %.2f ms (%.0f GFLOP/s), bf16 %.2f ms (%.0f GFLOP/s)\n", long(g.B), long(g.T), long(g.H),
                long(g.G), long(g.D), g.window, ms[0], gflop / ms[0] * 1e3, ms[1], gflop / ms[1] * 1e3);
  }
}
