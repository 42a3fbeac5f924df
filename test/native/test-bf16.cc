// Native tests of the bf16 compute mode (ops/gemm-bf16.h): bf16 rounding against a double
// reference, each kernel (rounded-A panels, vdpbf16ps pairs, AMX on hardware and emulated)
// against a double reference on bf16-rounded inputs at GPT-2 / Llama shapes and odd M, N, K, the
// emulated AMX bit for bit against TDPBF16PS's order, the CPU backend's dispatch (pack,
// gemm, gemm_backward) at the NEUROTAP_CPU cap, and attention under compute bf16 (fused and
// instrumented paths against a double reference of the policy in ops/attention.cc). run.mjs runs
// it under each cap below: the tiled vdpbf16ps path (no cap), the rounded AVX-512 rows, scalar.
// run-with: NEUROTAP_CPU=,avx512,avx2,scalar
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "engine/backend.h"
#include "ops/bf16.h"
#include "ops/cpu-features.h"
#include "ops/gemm-bf16.h"
#include "ops/ops.h"

namespace {

std::vector<float> randn(size_t n, std::mt19937 &rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

std::vector<uint16_t> to_bf16(const std::vector<float> &v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = nt::bf16_from_f32(v[i]);
  return b;
}

// The nearest bf16 to x by double arithmetic (ties to the even mantissa), as an f32.
float bf16_nearest_reference(float x) {
  if (std::isnan(x) || std::isinf(x) || x == 0.0f) return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t lo_bits = u & 0xFFFF0000u, hi_bits = lo_bits + 0x10000u;  // the neighbours toward 0 and away from 0
  float lo, hi;
  std::memcpy(&lo, &lo_bits, 4);
  std::memcpy(&hi, &hi_bits, 4);
  // Past the largest finite bf16 the upper neighbour is infinity, at distance 2^128 for rounding.
  const double hv = (hi_bits & 0x7F800000u) == 0x7F800000u ? std::copysign(std::ldexp(1.0, 128), x) : hi;
  const double dl = std::fabs(static_cast<double>(x) - lo), dh = std::fabs(hv - x);
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo_bits >> 16) % 2 == 0 ? lo : hi;
}

void test_rounding() {
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits;
  std::vector<float> xs;
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = bits(rng);
    if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u;  // exact ties
    if (i % 4 == 1) u = (u & 0xFFFF0000u) | 0x7FFFu;  // just below a tie
    float f;
    std::memcpy(&f, &u, 4);
    xs.push_back(f);
  }
  for (float f : {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(), 1e-40f})
    xs.push_back(f);
  int bad = 0;
  for (float x : xs) {
    const float got = nt::bf16_round(x), want = bf16_nearest_reference(x);
    const bool same = std::isnan(x) ? std::isnan(got) : std::memcmp(&got, &want, 4) == 0;
    if (!same && bad++ < 5) CHECK(same, "bf16_round(%a) = %a, nearest even is %a", double(x), double(got), double(want));
  }
  CHECK(bad == 0, "%d of %zu values rounded wrongly", bad, xs.size());
}

using Gemm = std::function<void(const float *A, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias, float *C)>;

// C against sum_k bf16(A) * W in double (+ bias): within f32 accumulation error, relative to
// sum |products| per element. Returns the worst relative error.
double check_gemm(const char *name, const Gemm &gemm, int64_t M, int64_t K, int64_t N, std::mt19937 &rng, bool bias) {
  const std::vector<float> A = randn(M * K, rng), Wf = randn(N * K, rng, 1.0f / std::sqrt(float(K))), b = randn(N, rng);
  const std::vector<uint16_t> W = to_bf16(Wf);
  std::vector<float> C(M * N, 1e30f);
  gemm(A.data(), M, K, W.data(), N, bias ? b.data() : nullptr, C.data());
  double worst = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = bias ? b[n] : 0.0, mag = std::fabs(ref);
      for (int64_t k = 0; k < K; ++k) {
        const double p = static_cast<double>(nt::bf16_round(A[m * K + k])) * nt::f32_from_bf16(W[n * K + k]);
        ref += p;
        mag += std::fabs(p);
      }
      worst = std::max(worst, std::fabs(C[m * N + n] - ref) / (mag + 1e-30));
    }
  CHECK(worst < 1e-6 * (1 + K / 16.0), "%s M=%ld K=%ld N=%ld: worst relative error %g", name, long(M), long(K), long(N), worst);
  return worst;
}

// Shapes: odd edges around the 1 / 2 / 4 / 8 / 16 / 32 row and 16 / 32 column blocks and the 2 /
// 32 k blocks, then GPT-2 small (d 768, MLP 3072, a vocab tail of 50257 % 32 = 17 columns) and Llama-like (d 2048,
// MLP 5632) layers at a few rows.
struct Shape {
  int64_t M, K, N;
};
std::vector<Shape> edge_shapes() {
  std::vector<Shape> s;
  for (int64_t M : {1, 2, 3, 7, 17, 33})
    for (int64_t K : {1, 2, 3, 31, 33, 65})
      for (int64_t N : {1, 15, 17, 33, 47}) s.push_back({M, K, N});
  s.push_back({0, 5, 17});  // no rows: nothing to do (and nothing to divide by)
  return s;
}
const std::vector<Shape> kModelShapes = {{37, 768, 768}, {37, 768, 3072}, {21, 3072, 768}, {3, 768, 50257 % 1024}, {9, 2048, 5632}, {19, 5632, 2048}};
const std::vector<Shape> kEmulatedShapes = {{33, 768, 96}, {64, 96, 64}, {17, 2048, 40}};

void test_kernel(const char *name, const Gemm &gemm, const std::vector<Shape> &big) {
  std::mt19937 rng(17);
  int i = 0;
  for (const Shape &s : edge_shapes()) check_gemm(name, gemm, s.M, s.K, s.N, rng, ++i % 2 == 0);
  double worst = 0;
  for (const Shape &s : big) worst = std::max(worst, check_gemm(name, gemm, s.M, s.K, s.N, rng, true));
  std::printf("test-bf16: %s: worst error at model shapes %.3g of sum |a w|\n", name, worst);
}

// TDPBF16PS's own order: per k pair, the even then the odd product, each an f32 fused add of an
// exact product, from zero; then + bias. The emulated AMX GEMM must equal it bit for bit.
void test_amx_emulation_exact(nt::ThreadPool &pool) {
  std::mt19937 rng(19);
  for (const Shape &s : {Shape{1, 1, 1}, Shape{33, 65, 47}, Shape{40, 100, 70}, Shape{5, 768, 33}}) {
    const int64_t M = s.M, K = s.K, N = s.N;
    const std::vector<float> A = randn(M * K, rng), b = randn(N, rng);
    const std::vector<uint16_t> W = to_bf16(randn(N * K, rng));
    std::vector<uint16_t> Wp(nt::gemm_bf16_amx_elems(N, K));
    nt::gemm_pack_weights_bf16_amx(W.data(), N, K, Wp.data());
    std::vector<float> C(M * N);
    nt::gemm_bf16_amx_emulated(pool, A.data(), M, K, Wp.data(), N, b.data(), C.data());
    int64_t mismatches = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        float acc = 0.0f;
        for (int64_t k = 0; k < K; ++k) acc = std::fma(nt::bf16_round(A[m * K + k]), nt::f32_from_bf16(W[n * K + k]), acc);
        const float want = acc + b[n];
        if (std::memcmp(&want, &C[m * N + n], 4) != 0) ++mismatches;
      }
    CHECK(mismatches == 0, "emulated AMX M=%ld K=%ld N=%ld: %ld values differ from TDPBF16PS's order", long(M), long(K), long(N),
          long(mismatches));
  }
}

// Rounding inside each kernel: with W the identity, C = bf16(A) exactly (normal values; the
// hardware dot products treat subnormal bf16 inputs as zero).
void test_kernel_rounding(const char *name, const Gemm &gemm) {
  std::mt19937 rng(23);
  const int64_t M = 9, K = 67;
  std::vector<float> A = randn(M * K, rng);
  for (size_t i = 0; i < A.size(); i += 3) {  // ties and near-ties
    uint32_t u;
    std::memcpy(&u, &A[i], 4);
    u = (u & 0xFFFF0000u) | (i % 2 ? 0x8000u : 0x7FFFu);
    std::memcpy(&A[i], &u, 4);
  }
  std::vector<uint16_t> I(K * K, 0);
  for (int64_t k = 0; k < K; ++k) I[k * K + k] = nt::bf16_from_f32(1.0f);
  std::vector<float> C(M * K);
  gemm(A.data(), M, K, I.data(), K, nullptr, C.data());
  int64_t bad = 0;
  for (int64_t i = 0; i < M * K; ++i) bad += C[i] != bf16_nearest_reference(A[i]);
  CHECK(bad == 0, "%s: %ld of %ld identity outputs are not bf16(A)", name, long(bad), long(M * K));
}

// The CPU backend as the engine drives it: pack_weight_compute picks the layout of this CPU (and
// cap), gemm and gemm_backward dispatch on it.
void test_backend(nt::ThreadPool &) {
  const nt_backend_api *api = nt::cpu_backend_api();
  char err[256] = {};
  nt_backend *be = api->create(0, 2, err, sizeof err);
  CHECK(be != nullptr, "cpu backend: %s", err);
  if (!be) return;
  const char *layout = nt::cpu_bf16_isa() == nt::Bf16Isa::Amx          ? "amx tiles"
                       : nt::cpu_bf16_isa() == nt::Bf16Isa::Avx512Bf16 ? "vdpbf16ps pairs"
                       : nt::gemm_packing_available()                  ? "rounded-A panels"
                                                                       : "rounded-A plain";
  std::printf("test-bf16: NEUROTAP_CPU=%s: compute bf16 uses %s\n", std::getenv("NEUROTAP_CPU") ? std::getenv("NEUROTAP_CPU") : "", layout);
  std::mt19937 rng(29);
  for (const Shape &s : {Shape{1, 768, 768}, Shape{13, 65, 47}, Shape{37, 3072, 768}}) {
    const int64_t M = s.M, K = s.K, N = s.N;
    const Gemm gemm = [&](const float *A, int64_t m, int64_t k, const uint16_t *W, int64_t n, const float *bias, float *C) {
      nt_dtype pd = NT_BF16;
      void *p = api->pack_weight_compute(be, W, NT_BF16, n, k, NT_COMPUTE_BF16, &pd);
      CHECK(p != nullptr, "pack_weight_compute: %s", api->last_error(be));
      if (!p) return;
      CHECK(api->gemm(be, A, m, k, p, pd, n, bias, C) == 0, "gemm: %s", api->last_error(be));
      api->free(be, p);
    };
    check_gemm("backend gemm", gemm, M, K, N, rng, true);
    // Backward: dA = dC . W in f32 over the packed bf16 weights.
    const std::vector<uint16_t> W = to_bf16(randn(N * K, rng));
    const std::vector<float> dC = randn(M * N, rng);
    nt_dtype pd = NT_BF16;
    void *p = api->pack_weight_compute(be, W.data(), NT_BF16, N, K, NT_COMPUTE_BF16, &pd);
    std::vector<float> dA(M * K, 1e30f);
    CHECK(p && api->gemm_backward(be, dC.data(), M, N, p, pd, K, dA.data()) == 0, "gemm_backward: %s", api->last_error(be));
    double worst = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        double ref = 0, mag = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double t = static_cast<double>(dC[m * N + n]) * nt::f32_from_bf16(W[n * K + k]);
          ref += t;
          mag += std::fabs(t);
        }
        worst = std::max(worst, std::fabs(dA[m * K + k] - ref) / (mag + 1e-30));
      }
    CHECK(worst < 1e-6 * (1 + N / 16.0), "gemm_backward M=%ld N=%ld K=%ld: worst %g", long(M), long(N), long(K), worst);
    if (p) api->free(be, p);
  }
  // Refusals: f32 weights, an unknown mode.
  std::vector<float> w(64, 1.0f);
  nt_dtype pd = NT_F32;
  CHECK(api->pack_weight_compute(be, w.data(), NT_F32, 8, 8, NT_COMPUTE_BF16, &pd) == nullptr, "compute bf16 took f32 weights");
  CHECK(std::string(api->last_error(be)).find("bf16 weights") != std::string::npos, "reason: %s", api->last_error(be));
  CHECK(api->pack_weight_compute(be, w.data(), NT_BF16, 8, 8, static_cast<nt_compute>(7), &pd) == nullptr, "unknown compute accepted");
  api->destroy(be);
}

// Compute bf16 attention against the policy in double: scores = scale * bf16(q) . bf16(k),
// softmax, w rounded to bf16 (from its f32 value), z = bf16(w) . bf16(v). A weight within f32
// noise of a bf16 boundary may round the other way in the kernel (one ulp, 2^-8 relative): so
// at most 1% of the outputs may miss the f32-noise bound, none by more than 2^-7 max|v|.
// Without the rounding of any one operand nearly every output misses it.
void test_attention_bf16(nt::ThreadPool &pool) {
  std::mt19937 rng(23);
  struct Case { int64_t B, T, H, G, D, q0; int window; int32_t pad0, pad1; };
  const Case cases[] = {{1, 256, 12, 12, 64, 0, 0, 0, 0}, {2, 70, 4, 2, 24, 0, 0, 0, 5},  {1, 130, 2, 1, 80, 0, 7, 0, 0},
                        {1, 41, 2, 1, 33, 9, 13, 3, 0},   {2, 1, 4, 2, 64, 40, 0, 0, 7},  {1, 5, 2, 2, 128, 17, 0, 0, 0},
                        {2, 300, 8, 4, 64, 0, 0, 0, 11}};  // 256-row blocks (16 or more of them on 2 threads)
  for (const Case &c : cases) {
    const int64_t S = c.q0 + c.T, D = c.D, H = c.H, T = c.T;
    const int32_t pads[2] = {c.pad0, c.pad1};
    nt::AttentionShape s{c.B, T, H, c.G, D, S, S, c.q0, 0.3f, c.window, (c.pad0 || c.pad1) ? pads : nullptr, true};
    const int64_t nq = c.B * T * H * D;
    std::vector<float> q = randn(nq, rng), k = randn(c.B * S * c.G * D, rng), v = randn(c.B * S * c.G * D, rng);
    std::vector<double> ref(nq, 0.0);
    double vmax = 0;
    for (float x : v) vmax = std::max(vmax, std::fabs(double(x)));
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t g = h / (H / c.G), hi = c.q0 + t;
          int64_t lo = s.pad ? s.pad[b] : 0;
          if (c.window > 0) lo = std::max<int64_t>(lo, hi - c.window + 1);
          if (lo > hi) continue;
          std::vector<double> w(static_cast<size_t>(hi - lo + 1));
          double mx = -1e300, sum = 0;
          for (int64_t j = lo; j <= hi; ++j) {
            double d = 0;
            for (int64_t e = 0; e < D; ++e)
              d += double(nt::bf16_round(q[((b * T + t) * H + h) * D + e])) * nt::bf16_round(k[((b * S + j) * c.G + g) * D + e]);
            w[j - lo] = d * 0.3;
            mx = std::max(mx, w[j - lo]);
          }
          for (double &x : w) sum += (x = std::exp(x - mx));
          for (int64_t j = lo; j <= hi; ++j) {
            const double wr = nt::bf16_round(static_cast<float>(w[j - lo] / sum));
            for (int64_t e = 0; e < D; ++e) ref[((b * T + t) * H + h) * D + e] += wr * nt::bf16_round(v[((b * S + j) * c.G + g) * D + e]);
          }
        }
    std::vector<float> fused(nq, 42.0f), instr(nq, 42.0f), pattern(c.B * H * T * S);
    nt::attention_f32(pool, s, q.data(), k.data(), v.data(), fused.data());
    nt::attention_scores_f32(pool, s, q.data(), k.data(), pattern.data());
    nt::softmax_rows_f32(pool, pattern.data(), c.B * H * T, S);
    nt::attention_apply_f32(pool, s, pattern.data(), v.data(), instr.data());
    const double noise = 2e-6 * (1 + D / 32.0) * vmax;
    for (const auto &[name, z] : {std::pair<const char *, const std::vector<float> *>{"fused", &fused}, {"instrumented", &instr}}) {
      int64_t missed = 0;
      double worst = 0;
      for (int64_t i = 0; i < nq; ++i) {
        const double d = std::fabs((*z)[i] - ref[i]);
        missed += !(d <= noise);
        if (!(d <= worst)) worst = d;
      }
      CHECK(missed <= nq / 100 && worst <= vmax / 128, "bf16 attention (%s) B=%ld T=%ld H=%ld G=%ld D=%ld q0=%ld window=%d: %ld of %ld beyond %g, worst %g",
            name, long(c.B), long(T), long(H), long(c.G), long(D), long(c.q0), c.window, long(missed), long(nq), noise, worst);
    }
  }
}

}  // namespace

int main() {
  nt::ThreadPool pool(2);
  test_rounding();
  if (nt::gemm_packing_available()) {
    const Gemm panels = [&](const float *A, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias, float *C) {
      std::vector<uint16_t> Wp(nt::gemm_packed_floats(N, K));
      nt::gemm_pack_weights_bf16(W, N, K, Wp.data());
      nt::gemm_bf16_packed_round(pool, A, M, K, Wp.data(), N, bias, C);
    };
    test_kernel_rounding("rounded-A panels", panels);
    test_kernel("rounded-A panels", panels, kModelShapes);
  } else {
    std::printf("test-bf16: skipping the rounded-A panels (no AVX2 or AVX-512)\n");
  }
  if (nt::cpu_bf16_isa() >= nt::Bf16Isa::Avx512Bf16) {
    const Gemm pairs = [&](const float *A, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias, float *C) {
      std::vector<uint16_t> Wp(nt::gemm_bf16_pairs_elems(N, K));
      nt::gemm_pack_weights_bf16_pairs(W, N, K, Wp.data());
      nt::gemm_bf16_pairs(pool, A, M, K, Wp.data(), N, bias, C);
    };
    test_kernel_rounding("vdpbf16ps pairs", pairs);
    test_kernel("vdpbf16ps pairs", pairs, kModelShapes);
  } else {
    std::printf("test-bf16: skipping the vdpbf16ps kernel: %s\n", nt::cpu_bf16_isa_missing(nt::Bf16Isa::Avx512Bf16));
  }
  const auto amx = [&](bool emulated) {
    return Gemm([&pool, emulated](const float *A, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias, float *C) {
      std::vector<uint16_t> Wp(nt::gemm_bf16_amx_elems(N, K));
      nt::gemm_pack_weights_bf16_amx(W, N, K, Wp.data());
      (emulated ? nt::gemm_bf16_amx_emulated : nt::gemm_bf16_amx)(pool, A, M, K, Wp.data(), N, bias, C);
    });
  };
  if (!std::getenv("NEUROTAP_CPU") || !*std::getenv("NEUROTAP_CPU")) {  // ISA-independent: once
    test_amx_emulation_exact(pool);
    test_kernel_rounding("emulated AMX", amx(true));
    test_kernel("emulated AMX", amx(true), kEmulatedShapes);
  }
  if (nt::cpu_bf16_isa() == nt::Bf16Isa::Amx) {
    test_kernel_rounding("AMX", amx(false));
    test_kernel("AMX", amx(false), kModelShapes);
  } else {
    std::printf("test-bf16: skipping the AMX kernel on hardware: %s\n", nt::cpu_bf16_isa_missing(nt::Bf16Isa::Amx));
  }
  test_backend(pool);
  test_attention_bf16(pool);
  return report("test-bf16");
}
