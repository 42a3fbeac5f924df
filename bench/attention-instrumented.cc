// Times the instrumented attention forward (attention_scores, softmax_rows, attention_apply: what
// hooks on the pattern and the backward's block recompute run) at GPT-2-small's geometry
// (H = 12, D = 64), T = 128 and 1024, and a GQA window case. Build and run:
//   g++ -std=c++17 -O3 -Inative bench/attention-instrumented.cc native/ops/attention*.cc native/ops/fma-tile.cc native/ops/elementwise-simd.cc native/ops/elementwise-backward.cc native/ops/thread-pool.cc native/ops/cpu-features.cc -o /tmp/attn-inst -lpthread && T=2 /tmp/attn-inst
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <vector>

#include "ops/ops.h"

// Best of 5 runs in process CPU time (all threads).
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
  struct G { int64_t B, T, H, G, D; int window; };
  for (const G g : {G{1, 128, 12, 12, 64, 0}, G{1, 1024, 12, 12, 64, 0}, G{1, 1024, 32, 8, 128, 256}}) {
    nt::AttentionShape s{g.B, g.T, g.H, g.G, g.D, g.T, g.T, 0, 0.125f, g.window, nullptr};
    std::vector<float> q(g.B * g.T * g.H * g.D), k(g.B * g.T * g.G * g.D), v(k.size()), z(q.size());
    for (size_t i = 0; i < q.size(); ++i) q[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
    for (size_t i = 0; i < k.size(); ++i) k[i] = 0.02f * static_cast<float>(i % 89) - 0.8f, v[i] = 0.5f - 0.01f * static_cast<float>(i % 61);
    std::vector<float> p(g.B * g.H * g.T * g.T);
    const double scores = best_ms([&] { nt::attention_scores_f32(pool, s, q.data(), k.data(), p.data()); });
    const double soft = best_ms([&] {
      nt::attention_scores_f32(pool, s, q.data(), k.data(), p.data());
      nt::softmax_rows_f32(pool, p.data(), g.B * g.H * g.T, g.T);
    }) - scores;
    const double apply = best_ms([&] { nt::attention_apply_f32(pool, s, p.data(), v.data(), z.data()); });
    std::printf("B=%ld T=%ld H=%ld G=%ld D=%ld window=%d: scores %.2f + softmax %.2f + apply %.2f = %.2f ms\n", long(g.B), long(g.T),
                long(g.H), long(g.G), long(g.D), g.window, scores, soft, apply, scores + soft + apply);
  }
}
