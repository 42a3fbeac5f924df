// The backward-op test's helpers (test-backward.cc and its case files backward-*.cc): the CPU
// backend's table over host memory, random data, and the two checks every op gets.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "ops/backend-abi.h"

namespace bwd {

// The CPU backend (its memory is host memory, so host vectors go straight in).
struct Cpu {
  const nt_backend_api *api;
  nt_backend *be;
  void ok(int rc, const std::string &what) { CHECK(rc == 0, "%s: %s", what.c_str(), rc ? api->last_error(be) : ""); }
};

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// got against a double reference: |got - ref| <= tol * scale, scale = max|ref| unless given (the
// size of the terms that cancel, for ops whose outputs can be much smaller than their inputs).
inline void check_close(const std::string &name, const std::vector<float> &got, const std::vector<double> &ref, double tol,
                        double scale = 0) {
  CHECK(got.size() == ref.size(), "%s: %zu values vs %zu", name.c_str(), got.size(), ref.size());
  if (got.size() != ref.size()) return;
  if (scale <= 0)
    for (double r : ref) scale = std::max(scale, std::fabs(r));
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::isfinite(got[i]) ? std::fabs(got[i] - ref[i]) : INFINITY;
    if (!(err <= worst)) worst = err, at = i;
  }
  CHECK(worst <= tol * scale + 1e-30, "%s: worst error %.3g at [%zu] (got %.8g, ref %.8g) > %.1g * %.3g", name.c_str(), worst, at,
        ref.empty() ? 0.0 : got[at], ref.empty() ? 0.0 : ref[at], tol, scale);
}

// Central finite differences in double of L(x) = <upstream gradient, forward(x)> (the forward op
// recomputed in double by `loss`) at up to `samples` entries of x, against the op's gradient g.
// With h = 1e-3 on O(1) data the truncation error is O(h^2 f''') ~ 1e-6 relative and rounding
// ~1e-16 / h, so 1e-4 of the gradient's largest entry separates a right formula from a wrong one
// (a wrong term is O(1) relative) while allowing the float32 kernel's rounding.
inline void check_fd(const std::string &name, std::vector<double> x, const std::function<double(const std::vector<double> &)> &loss,
                     const std::vector<float> &g, int samples = 24, uint32_t seed = 5, double tol = 1e-4) {
  CHECK(g.size() == x.size(), "%s: gradient of %zu values for %zu inputs", name.c_str(), g.size(), x.size());
  if (g.size() != x.size() || x.empty()) return;
  double scale = 1e-30;
  for (float v : g) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  std::mt19937 rng(seed);
  const int n = static_cast<int>(std::min<size_t>(x.size(), samples));
  double worst = 0;
  size_t at = 0;
  double fd_at = 0;
  for (int s = 0; s < n; ++s) {
    const size_t i = x.size() <= static_cast<size_t>(samples) ? static_cast<size_t>(s) : rng() % x.size();
    const double h = 1e-3, x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss(x);
    x[i] = x0 - h;
    const double lm = loss(x);
    x[i] = x0;
    const double fd = (lp - lm) / (2 * h);
    const double err = std::isfinite(g[i]) ? std::fabs(fd - g[i]) : INFINITY;
    if (!(err <= worst)) worst = err, at = i, fd_at = fd;
  }
  CHECK(worst <= tol * scale, "%s: finite difference off by %.3g at [%zu] (op %.8g, fd %.8g) > %.1g * %.3g", name.c_str(), worst, at, g[at],
        fd_at, tol, scale);
}

inline std::vector<double> to_double(const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); }

void gemm_cases(Cpu &c);       // backward-gemm.cc
void row_cases(Cpu &c);        // backward-rows.cc: norms, activations, softcap, softmax
void attention_cases(Cpu &c);  // backward-attention.cc

}  // namespace bwd
