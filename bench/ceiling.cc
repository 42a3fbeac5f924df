// The machine's ceilings, measured: f32 FMA peak (512- and 256-bit), bf16 dot-product peak
// (AVX512_BF16 vdpbf16ps, AMX tdpbf16ps) and read bandwidth, each on 1..T threads; one JSON line.
//
//   g++ -std=c++17 -O3 -pthread bench/ceiling.cc -o ceiling && ./ceiling [--threads 2] [--seconds 0.15]
//
// Built without -march: every loop carries its own target attribute and runs only where CPUID
// (and, for AMX, Linux's permission) says it can; otherwise its entry is {"skipped": "reason"}.
// Each figure is the best of 5 trials of about --seconds each (the best trial is the one least
// disturbed by other processes); the threads start together and the
// wall time until the last one ends counts. Benchmark scripts build it through bench/common.ts.
#include <cpuid.h>
#include <immintrin.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---- CPU features (CPUID, plus the OS having enabled the register state via XGETBV) ----

struct Features {
  bool fma = false, avx2 = false, avx512f = false, avx512bf16 = false, amx_tile = false, amx_bf16 = false;
  bool os_avx = false, os_avx512 = false, os_amx = false;
};

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

Features detect() {
  Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.fma = c & (1u << 12);
  const bool osxsave = c & (1u << 27);
  if (osxsave) {
    const uint64_t x = xgetbv0();
    f.os_avx = (x & 0x6) == 0x6;                 // XMM, YMM
    f.os_avx512 = f.os_avx && (x & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
    f.os_amx = (x & 0x60000) == 0x60000;          // XTILECFG, XTILEDATA
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.amx_bf16 = d & (1u << 22);
    f.amx_tile = d & (1u << 24);
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = a & (1u << 5);
  return f;
}

// Linux hands out the AMX tile data state only on request (arch_prctl ARCH_REQ_XCOMP_PERM).
bool request_amx(std::string& why) {
  constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
    why = std::string("arch_prctl(ARCH_REQ_XCOMP_PERM) refused: ") + std::strerror(errno);
    return false;
  }
  return true;
}

// ---- Kernels: each runs `iters` iterations and returns a value that depends on every result ----

constexpr int kAcc = 12;  // independent chains: covers 4-cycle latency x 2 FMA pipes with room

__attribute__((target("avx512f"))) float fma512(long iters) {
  __m512 acc[kAcc];
  for (int k = 0; k < kAcc; ++k) acc[k] = _mm512_set1_ps(1.0f + k * 1e-3f);
  const __m512 b = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < kAcc; ++k) acc[k] = _mm512_fmadd_ps(acc[k], b, c);
  __m512 s = acc[0];
  for (int k = 1; k < kAcc; ++k) s = _mm512_add_ps(s, acc[k]);
  float o[16];
  _mm512_storeu_ps(o, s);
  return o[0] + o[15];
}

__attribute__((target("avx2,fma"))) float fma256(long iters) {
  __m256 acc[kAcc];
  for (int k = 0; k < kAcc; ++k) acc[k] = _mm256_set1_ps(1.0f + k * 1e-3f);
  const __m256 b = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < kAcc; ++k) acc[k] = _mm256_fmadd_ps(acc[k], b, c);
  __m256 s = acc[0];
  for (int k = 1; k < kAcc; ++k) s = _mm256_add_ps(s, acc[k]);
  float o[8];
  _mm256_storeu_ps(o, s);
  return o[0] + o[7];
}

// vdpbf16ps: 16 lanes x 2 bf16 products accumulated in f32 = 64 FLOP per instruction.
__attribute__((target("avx512f,avx512bf16"))) float dpbf16_512(long iters) {
  __m512 acc[kAcc];
  for (int k = 0; k < kAcc; ++k) acc[k] = _mm512_set1_ps(k * 1e-3f);
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(2e-3f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  for (long i = 0; i < iters; ++i)
    for (int k = 0; k < kAcc; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
  __m512 s = acc[0];
  for (int k = 1; k < kAcc; ++k) s = _mm512_add_ps(s, acc[k]);
  float o[16];
  _mm512_storeu_ps(o, s);
  return o[0] + o[15];
}

// AMX: tdpbf16ps on 16x32 bf16 A and B tiles into a 16x16 f32 tile = 16*16*32*2 = 16384 FLOP.
// Four accumulators (tmm0-3) over two A (tmm4-5) and two B (tmm6-7) tiles.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

__attribute__((target("amx-tile,amx-bf16"))) float amx_bf16(long iters) {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
  alignas(64) static thread_local uint16_t ab[16 * 32];
  alignas(64) static thread_local float out[16 * 16];
  for (auto& x : ab) x = 0x3c00;  // bf16 0.0078125
  _tile_loadd(4, ab, 64);
  _tile_loadd(5, ab, 64);
  _tile_loadd(6, ab, 64);
  _tile_loadd(7, ab, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (long i = 0; i < iters; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  float s = 0;
  _tile_stored(0, out, 64);
  s += out[0];
  _tile_stored(3, out, 64);
  s += out[255];
  _tile_release();
  return s;
}

// Read bandwidth: sums a buffer far larger than the caches (each thread its own slice).
__attribute__((target("avx2"))) float sum_avx2(const float* p, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
  }
  float o[8];
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return o[0] + o[7];
}

// ---- Timing ----

using Clock = std::chrono::steady_clock;
volatile float g_sink;

// Runs work(thread index) on `threads` threads started together; returns wall seconds.
double run_threads(int threads, const std::function<float(int)>& work) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  std::vector<float> sinks(threads);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      sinks[t] = work(t);
    });
  while (ready.load() < threads) {
  }
  const auto t0 = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  for (float x : sinks) g_sink = g_sink + x;
  return s;
}

// GFLOP/s of a kernel with `flops_per_iter` per iteration: calibrated to ~`seconds` per trial, best of 5.
double peak(const std::function<float(long)>& kernel, double flops_per_iter, int threads, double seconds) {
  long iters = 1 << 16;
  for (;;) {  // calibrate on one thread
    const auto t0 = Clock::now();
    g_sink = kernel(iters);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s > 0.02) {
      iters = long(iters * seconds / s) + 1;
      break;
    }
    iters *= 4;
  }
  double best = 1e30;
  for (int trial = 0; trial < 5; ++trial) best = std::min(best, run_threads(threads, [&](int) { return kernel(iters); }));
  return flops_per_iter * double(iters) * threads / best / 1e9;
}

double bandwidth(const float* buf, size_t n, int threads) {
  double best = 1e30;
  const size_t per = n / threads / 32 * 32;
  for (int trial = 0; trial < 5; ++trial)
    best = std::min(best, run_threads(threads, [&](int t) { return sum_avx2(buf + t * per, per); }));
  return double(per) * threads * sizeof(float) / best / 1e9;
}

std::string number(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", x);
  return b;
}

std::string skipped(const std::string& why) {
  std::string s = "{\"skipped\":\"";
  for (char ch : why) s += (ch == '"' || ch == '\\') ? ' ' : ch;
  return s + "\"}";
}

// {"1": x, "2": y, ...} over 1..threads
std::string per_threads(int threads, const std::function<double(int)>& f) {
  std::string s = "{";
  for (int t = 1; t <= threads; ++t) s += (t > 1 ? "," : "") + ("\"" + std::to_string(t) + "\":" + number(f(t)));
  return s + "}";
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  double seconds = 0.15;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--seconds")) seconds = std::max(0.01, std::atof(argv[i + 1]));
  }
  const Features f = detect();
  std::string out = "{\"threads\":" + std::to_string(threads);

  out += ",\"fp32_fma_512\":";
  if (f.avx512f && f.os_avx512)
    out += per_threads(threads, [&](int t) { return peak(fma512, kAcc * 16 * 2, t, seconds); });
  else
    out += skipped(f.avx512f ? "the OS has not enabled the AVX-512 state" : "no AVX-512F");

  out += ",\"fp32_fma_256\":";
  if (f.fma && f.avx2 && f.os_avx)
    out += per_threads(threads, [&](int t) { return peak(fma256, kAcc * 8 * 2, t, seconds); });
  else
    out += skipped("no AVX2 + FMA");

  out += ",\"bf16_avx512\":";
  if (f.avx512bf16 && f.os_avx512)
    out += per_threads(threads, [&](int t) { return peak(dpbf16_512, kAcc * 64, t, seconds); });
  else
    out += skipped(f.avx512bf16 ? "the OS has not enabled the AVX-512 state" : "no AVX512_BF16 (vdpbf16ps)");

  out += ",\"bf16_amx\":";
  std::string why;
  if (!f.amx_tile || !f.amx_bf16)
    out += skipped("no AMX-TILE/AMX-BF16");
  else if (!f.os_amx)
    out += skipped("the OS has not enabled the AMX tile state");
  else if (!request_amx(why))
    out += skipped(why);
  else
    out += per_threads(threads, [&](int t) { return peak(amx_bf16, 4 * 16384.0, t, seconds); });

  out += ",\"read_gbs\":";
  if (f.avx2 && f.os_avx) {
    const size_t n = size_t(256) << 20;  // 1 GiB of floats
    auto* buf = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    if (!buf) {
      out += skipped("could not allocate 1 GiB");
    } else {
      for (size_t i = 0; i < n; ++i) buf[i] = 1.0f;  // fault the pages in before timing
      out += per_threads(threads, [&](int t) { return bandwidth(buf, n, t); });
      std::free(buf);
    }
  } else {
    out += skipped("no AVX2");
  }
  // This process's CPU seconds, so that a caller can tell what other processes used meanwhile.
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  std::printf("%s,\"cpu_seconds\":%.3f}\n", out.c_str(), cpu);
  return 0;
}
