// Times the CUDA backend's backward ops at seq 1024 (GPT-2 small; Llama 3 8B's GQA, D = 128;
// Gemma 2's D = 256 with a sliding window) next to the instrumented forward they mirror, and
// gemm_backward next to gemm, through the backend ABI (libneurotap_cuda.so from
// $NEUROTAP_BACKEND_DIR, default build/Release). One JSON line per op. Build and run on a GPU:
//   g++ -std=c++17 -O2 -Inative bench/gpu/backward-ops.cc native/engine/*.cc native/io/*.cc native/ops/*.cc \
//     -o /tmp/backward-ops -lpthread -ldl && /tmp/backward-ops [--small]
// --small: 64 positions and small GEMMs (a smoke run, e.g. on the CPU emulator of test/cuda-emu).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"

namespace {

using BE = std::shared_ptr<nt::Backend>;

// The best of `reps` runs after one warm-up, in milliseconds of wall time with the stream
// synchronized: the device's time for the op.
double best_ms(const BE &be, int reps, const std::function<void()> &fn) {
  fn();
  be->check(be->api().synchronize(be->ctx()), "synchronize");
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    be->check(be->api().synchronize(be->ctx()), "synchronize");
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

nt::DeviceBuffer filled(const BE &be, size_t floats, float value) {
  std::vector<float> h(floats, value);
  return nt::DeviceBuffer::upload(be, h.data(), floats * sizeof(float));
}

void report(const char *op, const std::string &shape, double ms, double flops) {
  std::printf("{\"bench\":\"cuda-backward\",\"op\":\"%s\",\"shape\":\"%s\",\"ms\":%.4f,\"tflops\":%.3f}\n", op, shape.c_str(), ms,
              flops / (ms * 1e-3) / 1e12);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char **argv) {
  const bool small = argc > 1 && !std::strcmp(argv[1], "--small");
  const int reps = small ? 1 : 10;
  const char *dir = std::getenv("NEUROTAP_BACKEND_DIR");
  BE be;
  try {
    be = nt::Backend::load("cuda", dir ? dir : "build/Release", 0, 2);
  } catch (const nt::EngineError &e) {
    std::printf("backward-ops: skipped: %s\n", e.what());
    return 0;
  }
  std::printf("backward-ops: %s\n", be->device_name().c_str());
  const auto &a = be->api();
  struct Attn { const char *name; int64_t T, H, G, D; int window; };
  const int64_t T = small ? 64 : 1024;
  for (const Attn g : {Attn{"gpt2", T, 12, 12, 64, 0}, Attn{"llama3-8b", T, 32, 8, 128, 0}, Attn{"gemma2", T, 8, 4, 256, small ? 16 : 256}}) {
    const int64_t B = 1, rows = B * g.H * g.T;
    const nt::DeviceBuffer q = filled(be, B * g.T * g.H * g.D, 0.01f), k = filled(be, B * g.T * g.G * g.D, 0.02f), v = filled(be, k.bytes() / 4, 0.5f),
                           z = filled(be, q.bytes() / 4, 0.0f), p = filled(be, rows * g.T, 0.0f), dp = filled(be, rows * g.T, 0.001f),
                           dq = filled(be, q.bytes() / 4, 0.0f), dk = filled(be, k.bytes() / 4, 0.0f), dv = filled(be, k.bytes() / 4, 0.0f);
    const nt_attention_shape s{B, g.T, g.H, g.G, g.D, g.T, g.T, 0, 1.0f / std::sqrt(static_cast<float>(g.D)), g.window, nullptr};
    const std::string shape = std::string(g.name) + " T=" + std::to_string(g.T) + " H=" + std::to_string(g.H) + " G=" + std::to_string(g.G) +
                              " D=" + std::to_string(g.D);
    const double mm = 2.0 * rows * g.T * g.D;  // one [T, T] x D product per head
    report("attention_scores", shape, best_ms(be, reps, [&] { be->check(a.attention_scores(be->ctx(), &s, q.f32(), k.f32(), p.f32()), "scores"); }), mm);
    report("softmax_rows", shape, best_ms(be, reps, [&] { be->check(a.softmax_rows(be->ctx(), p.f32(), rows, g.T), "softmax"); }), 0);
    report("attention_apply", shape, best_ms(be, reps, [&] { be->check(a.attention_apply(be->ctx(), &s, p.f32(), v.f32(), z.f32()), "apply"); }), mm);
    report("attention_apply_backward", shape, best_ms(be, reps, [&] {
      be->check(a.attention_apply_backward(be->ctx(), &s, p.f32(), v.f32(), z.f32(), dp.f32(), dv.f32()), "apply_backward");
    }), 2 * mm);
    report("softmax_rows_backward", shape, best_ms(be, reps, [&] {
      be->check(a.softmax_rows_backward(be->ctx(), p.f32(), dp.f32(), rows, g.T, dp.f32()), "softmax_backward");
    }), 0);
    report("attention_scores_backward", shape, best_ms(be, reps, [&] {
      be->check(a.attention_scores_backward(be->ctx(), &s, q.f32(), k.f32(), dp.f32(), dq.f32(), dk.f32()), "scores_backward");
    }), 2 * mm);  // the causal half is skipped: the figure counts the full products
  }
  struct Mat { const char *name; int64_t M, N, K; };
  const int64_t M = small ? 16 : 1024;
  for (const Mat g : {Mat{"gpt2 mlp out", M, 768, 3072}, Mat{"llama3-8b down", M, 4096, 14336}}) {
    const int64_t n = small ? std::min<int64_t>(g.N, 256) : g.N, kk = small ? std::min<int64_t>(g.K, 512) : g.K;
    const nt::DeviceBuffer dc = filled(be, g.M * n, 0.001f), w = filled(be, n * kk, 0.02f), da = filled(be, g.M * kk, 0.0f);
    const std::string shape = std::string(g.name) + " M=" + std::to_string(g.M) + " N=" + std::to_string(n) + " K=" + std::to_string(kk) + " f32";
    const double flops = 2.0 * g.M * n * kk;
    report("gemm", shape, best_ms(be, reps, [&] { be->check(a.gemm(be->ctx(), da.f32(), g.M, kk, w.data(), NT_F32, n, nullptr, dc.f32()), "gemm"); }), flops);
    report("gemm_backward", shape, best_ms(be, reps, [&] {
      be->check(a.gemm_backward(be->ctx(), dc.f32(), g.M, n, w.data(), NT_F32, kk, da.f32()), "gemm_backward");
    }), flops);
  }
  return 0;
}
