// The machine's memory bandwidth, STREAM-like: a read-only sum (what batch-1 decode does to the
// weights) and a triad (a = b + s * c), over arrays far larger than the caches, on T threads.
// Built and run by bench/decode.ts; by hand:
//   g++ -std=c++17 -O3 -march=native bench/membw.cc -o /tmp/membw -lpthread && /tmp/membw 2 1024
// Prints one JSON line: {"threads", "mib", "read_gbs", "triad_gbs"} (best of the repetitions,
// 1 GB = 1e9 bytes; the triad counts 3 arrays moved, as STREAM, without write-allocate traffic).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

typedef float v16 __attribute__((vector_size(64)));  // one 512-bit register (or two 256-bit ones)

// Sums n floats (n a multiple of 128) with 8 independent accumulators, so the loads, not the
// adds' latency, bound the loop.
float read_sum(const float *p, size_t n) {
  v16 acc[8] = {};
  for (size_t i = 0; i < n; i += 128)
    for (int j = 0; j < 8; ++j) {
      v16 x;
      __builtin_memcpy(&x, p + i + 16 * j, sizeof x);
      acc[j] += x;
    }
  v16 s = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
  float t = 0;
  for (int j = 0; j < 16; ++j) t += s[j];
  return t;
}

void triad(float *a, const float *b, const float *c, size_t n, float s) {
  for (size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

// Runs fn(thread, begin, end) on `threads` threads over [0, n) in 128-float aligned chunks.
template <class F>
void parallel(int threads, size_t n, F fn) {
  std::vector<std::thread> pool;
  const size_t chunk = (n / threads) / 128 * 128;
  for (int t = 0; t < threads; ++t) {
    const size_t b = chunk * t, e = t == threads - 1 ? n : chunk * (t + 1);
    pool.emplace_back([=] { fn(t, b, e); });
  }
  for (std::thread &th : pool) th.join();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char **argv) {
  const int threads = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2;
  const size_t mib = argc > 2 ? static_cast<size_t>(std::max(64, std::atoi(argv[2]))) : 1024;
  const int reps = argc > 3 ? std::max(1, std::atoi(argv[3])) : 5;
  const size_t n = mib * 1024 * 1024 / sizeof(float) / 128 * 128;
  float *a = static_cast<float *>(std::aligned_alloc(64, n * sizeof(float)));
  float *b = static_cast<float *>(std::aligned_alloc(64, n * sizeof(float)));
  float *c = static_cast<float *>(std::aligned_alloc(64, n * sizeof(float)));
  if (!a || !b || !c) {
    std::fprintf(stderr, "out of memory\n");
    return 1;
  }
  // First touch on the threads that use each chunk (one NUMA node here, but the habit is free).
  parallel(threads, n, [&](int, size_t s, size_t e) {
    for (size_t i = s; i < e; ++i) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
  });
  std::vector<float> sums(static_cast<size_t>(threads));
  double best_read = 1e30, best_triad = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    parallel(threads, n, [&](int t, size_t s, size_t e) { sums[static_cast<size_t>(t)] += read_sum(b + s, e - s); });
    best_read = std::min(best_read, seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    parallel(threads, n, [&](int, size_t s, size_t e) { triad(a + s, b + s, c + s, e - s, 3.0f); });
    best_triad = std::min(best_triad, seconds_since(t0));
  }
  float check = 0;
  for (float s : sums) check += s;
  const double bytes = static_cast<double>(n) * sizeof(float);
  std::printf("{\"threads\": %d, \"mib\": %zu, \"read_gbs\": %.2f, \"triad_gbs\": %.2f, \"check\": %g}\n", threads, mib, bytes / best_read / 1e9,
              3 * bytes / best_triad / 1e9, static_cast<double>(check + a[n / 2]));
  std::free(a);
  std::free(b);
  std::free(c);
  return 0;
}
