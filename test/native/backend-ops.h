// The cross-backend op test's harness (test-backend-ops.cc and its case files backend-ops-*.cc):
// host-side helpers, the per-dtype tolerances, and the Runner that runs a case on both backends.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "io/safetensors.h"

namespace bops {

using nt::Backend;
using nt::DeviceBuffer;
using BE = std::shared_ptr<Backend>;

// Tolerances, as error relative to the largest finite |reference| of the output compared.
// Exact ops (copies, adds, selections, table lookups): the same float operations on both sides.
constexpr double kExact = 1e-6;
// Float32 elementwise math: expf / tanhf / erff / cos may differ by a few ulp between libm, SIMD
// approximations on the CPU and CUDA's device functions.
constexpr double kMath = 4e-6;
// Reductions (norm statistics, dot products, softmax sums): the CPU accumulates some in double or
// in another order; float32 sums of n terms differ by ~log2(n) * 2^-24, a few 1e-7 at n = 8192.
constexpr double kReduce = 1e-5;
// Attention: float32 dot products over D <= 256 plus an online softmax (rescaled partial sums)
// against the CPU's order; errors stay at a few 1e-7 of the largest output on N(0, 1) data.
constexpr double kAttention = 2e-5;
// GEMM by weight dtype. F32: float32 accumulation over K in another order (cuBLAS tiles).
// F16 / BF16: the CUDA backend also rounds the activations to the weight dtype (cuda/README.md),
// 2^-11 (f16) and 2^-8 (bf16) relative per product, ~sqrt(K) of those on a sum of N(0, 1) terms
// relative to a typical output, which the largest output (~4 sigma) dilutes.
inline double gemm_tolerance(nt_dtype dt) { return dt == NT_F32 ? 1e-5 : dt == NT_F16 ? 4e-3 : 3e-2; }

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

inline const char *dtype_name(nt_dtype dt) { return dt == NT_F32 ? "f32" : dt == NT_F16 ? "f16" : "bf16"; }

// Weights as a backend stores them: f32 as is, f16/bf16 as 16-bit words. `rounded` gets the
// values the device sees, upcast again, for the CPU reference.
inline std::vector<uint8_t> as_dtype(const std::vector<float> &v, nt_dtype dt, std::vector<float> *rounded) {
  rounded->resize(v.size());
  if (dt == NT_F32) {
    *rounded = v;
    return std::vector<uint8_t>(reinterpret_cast<const uint8_t *>(v.data()), reinterpret_cast<const uint8_t *>(v.data() + v.size()));
  }
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = dt == NT_BF16 ? nt::f32_to_bf16(v[i]) : nt::f32_to_f16(v[i]);
    (*rounded)[i] = dt == NT_BF16 ? nt::bf16_to_f32(h) : nt::f16_to_f32(h);
    out[2 * i] = static_cast<uint8_t>(h);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return out;
}

inline std::vector<float> download(const BE &be, const DeviceBuffer &b) {
  std::vector<float> h(b.bytes() / sizeof(float));
  be->check(be->api().copy_to_host(be->ctx(), h.data(), b.data(), b.bytes()), "download");
  return h;
}
inline DeviceBuffer up(const BE &be, const std::vector<float> &v) { return DeviceBuffer::upload(be, v.data(), v.size() * sizeof(float)); }
template <class T>
DeviceBuffer up_raw(const BE &be, const std::vector<T> &v) {
  return DeviceBuffer::upload(be, v.data(), v.size() * sizeof(T));
}
inline DeviceBuffer zeros(const BE &be, size_t floats) { return up(be, std::vector<float>(floats, 0.0f)); }
inline const int32_t *i32(const DeviceBuffer &b) { return static_cast<const int32_t *>(b.data()); }

// A case's outputs, each compared with its own scale: name -> values.
using Outputs = std::vector<std::pair<std::string, std::vector<float>>>;
// A case runs an op on one backend from host inputs and returns host outputs; `reference` is
// true on the CPU side (where a case feeds the CPU the dtype-rounded weights as float32).
using Case = std::function<Outputs(const BE &, bool reference)>;

struct Runner {
  BE cpu, other;
  int cases = 0, compared = 0;

  void run(const std::string &name, double tol, const Case &op) {
    ++cases;
    Outputs ref;
    try {
      ref = op(cpu, true);
    } catch (const std::exception &e) {
      CHECK(false, "%s: CPU backend failed: %s", name.c_str(), e.what());
      return;
    }
    bool any = false;
    for (const auto &o : ref) any = any || !o.second.empty();
    CHECK(any, "%s: no output", name.c_str());
    if (!other) return;
    Outputs got;
    try {
      got = op(other, false);
    } catch (const std::exception &e) {
      CHECK(false, "%s: %s backend failed: %s", name.c_str(), other->api().name, e.what());
      return;
    }
    ++compared;
    if (got.size() != ref.size()) {
      CHECK(false, "%s: %zu outputs vs %zu", name.c_str(), got.size(), ref.size());
      return;
    }
    for (size_t i = 0; i < ref.size(); ++i) compare(name + (ref[i].first.empty() ? "" : " " + ref[i].first), tol, ref[i].second, got[i].second);
  }

  // Error relative to the largest finite |ref|; infinities must match exactly, NaN never does.
  void compare(const std::string &name, double tol, const std::vector<float> &ref, const std::vector<float> &got) {
    if (got.size() != ref.size()) {
      CHECK(false, "%s: %zu values vs %zu", name.c_str(), got.size(), ref.size());
      return;
    }
    double scale = 0;
    for (float r : ref)
      if (std::isfinite(r)) scale = std::max(scale, static_cast<double>(std::fabs(r)));
    scale = std::max(scale, 1e-30);
    double worst = 0;
    size_t worst_at = 0;
    int shown = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      double err;
      if (std::isinf(ref[i]) || std::isinf(got[i])) err = ref[i] == got[i] ? 0.0 : INFINITY;
      else err = std::isnan(got[i]) || std::isnan(ref[i]) ? INFINITY : std::fabs(static_cast<double>(got[i]) - ref[i]) / scale;
      if (err > worst) {
        worst = err;
        worst_at = i;
      }
      if (!(err <= tol) && shown < 5) {
        std::fprintf(stderr, "  %s [%zu]: %s %.8g cpu %.8g\n", name.c_str(), i, other->api().name, got[i], ref[i]);
        ++shown;
      }
    }
    CHECK(worst <= tol, "%s: worst relative error %.3g at [%zu] (%s %.8g, cpu %.8g, scale %.3g) > %.1g", name.c_str(), worst, worst_at,
          other->api().name, got[worst_at], ref[worst_at], scale, tol);
  }
};

// Case groups, one file each.
void attention_cases(Runner &r);       // backend-ops-attention.cc
void row_cases(Runner &r);             // backend-ops-rows.cc: norms, softmax, softcap, elementwise
void matrix_cases(Runner &r);          // backend-ops-matrix.cc: gemm, embed, rope, edits, copies
void backward_cases(Runner &r);        // backend-ops-backward.cc: the backward ops (ABI 3)

}  // namespace bops
