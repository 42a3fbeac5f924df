// Times the CPU attention backward ops (attention_apply_backward, softmax_rows_backward,
// attention_scores_backward) against the instrumented forward (attention_scores, softmax_rows,
// attention_apply) at GPT-2-small's geometry (H = 12, D = 64) and a GQA one. Build and run:
//   g++ -std=c++17 -O3 -Inative bench/attention-backward.cc native/ops/attention*.cc native/ops/fma-tile.cc native/ops/elementwise-simd.cc native/ops/elementwise-backward.cc native/ops/thread-pool.cc native/ops/cpu-features.cc -o /tmp/attn-bwd -lpthread && T=1 /tmp/attn-bwd
#include <algorithm>
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
  struct G { int64_t B, T, H, G, D; int window; };
  for (const G g : {G{1, 1024, 12, 12, 64, 0}, G{4, 256, 12, 12, 64, 0}, G{1, 1024, 32, 8, 128, 0}, G{1, 1024, 8, 4, 256, 256}}) {
    nt::AttentionShape s{g.B, g.T, g.H, g.G, g.D, g.T, g.T, 0, 0.125f, g.window, nullptr};
    std::vector<float> q(g.B * g.T * g.H * g.D, 0.01f), k(g.B * g.T * g.G * g.D, 0.02f), v(k.size(), 0.5f), z(q.size());
    std::vector<float> p(g.B * g.H * g.T * g.T), dp(p.size()), dq(q.size()), dk(k.size()), dv(v.size());
    const double fwd = best_ms([&] {
      nt::attention_scores_f32(pool, s, q.data(), k.data(), p.data());
      nt::softmax_rows_f32(pool, p.data(), g.B * g.H * g.T, g.T);
      nt::attention_apply_f32(pool, s, p.data(), v.data(), z.data());
    });
    const double apply = best_ms([&] { nt::attention_apply_backward_f32(pool, s, p.data(), v.data(), z.data(), dp.data(), dv.data()); });
    const double soft = best_ms([&] { nt::softmax_rows_backward_f32(pool, p.data(), dp.data(), g.B * g.H * g.T, g.T, dp.data()); });
    const double scores = best_ms([&] { nt::attention_scores_backward_f32(pool, s, q.data(), k.data(), dp.data(), dq.data(), dk.data()); });
    std::printf("B=%ld T=%ld H=%ld G=%ld D=%ld window=%d: forward %.1f ms; backward apply %.1f + softmax %.1f + scores %.1f = %.1f ms (x%.2f)\n",
                long(g.B), long(g.T), long(g.H), long(g.G), long(g.D), g.window, fwd, apply, soft, scores, apply + soft + scores,
                (apply + soft + scores) / fwd);
  }
}
