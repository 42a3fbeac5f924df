// Row and elementwise backward cases: norm_scale_backward / norm_backward (LayerNorm and RMSNorm,
// scale live or detached), activation_backward and gated_activation_backward for every
// activation, softcap_backward (with -inf), softmax_rows_backward (with masked entries).
#include "backward.h"

namespace bwd {

namespace {

const char *act_name(nt_activation a) {
  return a == NT_ACT_GELU_TANH ? "gelu_tanh" : a == NT_ACT_GELU_ERF ? "gelu_erf" : a == NT_ACT_SILU ? "silu" : "relu";
}

double act_f(nt_activation a, double x) {
  switch (a) {
    case NT_ACT_GELU_TANH: return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    case NT_ACT_GELU_ERF: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case NT_ACT_SILU: return x / (1 + std::exp(-x));
    case NT_ACT_RELU: return x > 0 ? x : 0;
  }
  return 0;
}

// The derivative written out independently of the kernel's form.
double act_df(nt_activation a, double x) {
  switch (a) {
    case NT_ACT_GELU_TANH: {
      const double k = 0.7978845608028654, u = k * (x + 0.044715 * x * x * x), t = std::tanh(u);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
    }
    case NT_ACT_GELU_ERF: return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-x * x / 2) / std::sqrt(2 * M_PI);
    case NT_ACT_SILU: {
      const double s = 1 / (1 + std::exp(-x));
      return s + x * s * (1 - s);
    }
    case NT_ACT_RELU: return x > 0 ? 1 : 0;
  }
  return 0;
}

// Normalized row in double: n = xc / s with s = sqrt(mean(xc^2) + eps), or a fixed s when s_fixed > 0.
std::vector<double> norm_row(const double *x, int64_t d, bool layer, double eps, double s_fixed = 0) {
  double mean = 0;
  if (layer) {
    for (int64_t i = 0; i < d; ++i) mean += x[i];
    mean /= d;
  }
  double ms = 0;
  for (int64_t i = 0; i < d; ++i) ms += (x[i] - mean) * (x[i] - mean);
  const double s = s_fixed > 0 ? s_fixed : std::sqrt(ms / d + eps);
  std::vector<double> n(d);
  for (int64_t i = 0; i < d; ++i) n[i] = (x[i] - mean) / s;
  return n;
}

void norm_cases(Cpu &c) {
  for (int64_t d : {1, 7, 64, 771})
    for (bool layer : {true, false}) {
      const int64_t M = 5;
      const float eps = 1e-5f;
      const std::vector<float> x = randn(M * d, 40 + d, 1.5f, layer ? 2.0f : 0.3f), dn = randn(M * d, 41 + d);
      std::vector<float> out(M * d), scale(M);
      if (layer) c.ok(c.api->layer_norm(c.be, x.data(), M, d, nullptr, nullptr, eps, out.data(), scale.data()), "layer_norm");
      else c.ok(c.api->rms_norm(c.be, x.data(), M, d, nullptr, eps, out.data(), scale.data()), "rms_norm");
      const std::string name = std::string(layer ? "LayerNorm" : "RMSNorm") + " d=" + std::to_string(d);
      std::vector<float> dscale(M), dx(M * d), dx_const(M * d);
      c.ok(c.api->norm_scale_backward(c.be, x.data(), M, d, layer, scale.data(), dn.data(), dscale.data()), name);
      c.ok(c.api->norm_backward(c.be, x.data(), M, d, layer, eps, scale.data(), dn.data(), dscale.data(), dx.data()), name);
      c.ok(c.api->norm_backward(c.be, x.data(), M, d, layer, eps, scale.data(), dn.data(), nullptr, dx_const.data()), name);
      // In place (dx aliases dn) gives the same values.
      std::vector<float> inplace = dn;
      c.ok(c.api->norm_backward(c.be, x.data(), M, d, layer, eps, scale.data(), inplace.data(), dscale.data(), inplace.data()), name);
      CHECK(inplace == dx, "%s: in-place norm_backward differs", name.c_str());
      // Double references of the formulas.
      std::vector<double> rs(M), rdx(M * d), rdxc(M * d);
      for (int64_t m = 0; m < M; ++m) {
        const double *xr = nullptr;
        std::vector<double> xd(x.begin() + m * d, x.begin() + (m + 1) * d);
        xr = xd.data();
        double mean = 0, gmean = 0, ms = 0, dot = 0;
        for (int64_t i = 0; i < d; ++i) mean += layer ? xr[i] / d : 0, gmean += layer ? dn[m * d + i] / static_cast<double>(d) : 0;
        for (int64_t i = 0; i < d; ++i) ms += (xr[i] - mean) * (xr[i] - mean) / d, dot += dn[m * d + i] * (xr[i] - mean);
        const double s = std::sqrt(ms + eps);
        rs[m] = -dot / (s * s);
        for (int64_t i = 0; i < d; ++i) {
          rdxc[m * d + i] = (dn[m * d + i] - gmean) / s;
          rdx[m * d + i] = rdxc[m * d + i] + rs[m] * (xr[i] - mean) / (d * s);
        }
      }
      // Double statistics on both sides; the float32 scale and outputs round at 2^-24. dx is a
      // difference of terms of size |dn| / s that cancel (at d = 1 RMSNorm's dx is ~eps), so
      // its error is relative to that size.
      double term = 0;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < d; ++i) term = std::max(term, std::fabs(static_cast<double>(dn[m * d + i])) / scale[m]);
      check_close(name + " dscale", dscale, rs, 1e-5);
      check_close(name + " dx", dx, rdx, 1e-5, term);
      check_close(name + " dx (detached scale)", dx_const, rdxc, 1e-5, term);
      // Finite differences of the forward norm: L = <dn, n(x)>, the scale live...
      check_fd(name + " dx fd", to_double(x), [&](const std::vector<double> &xs) {
        double L = 0;
        for (int64_t m = 0; m < M; ++m) {
          const std::vector<double> n = norm_row(xs.data() + m * d, d, layer, eps);
          for (int64_t i = 0; i < d; ++i) L += dn[m * d + i] * n[i];
        }
        return L;
      }, dx);
      // ... and held at the forward's value (a detached scale) ...
      check_fd(name + " dx fd (detached scale)", to_double(x), [&](const std::vector<double> &xs) {
        double L = 0;
        for (int64_t m = 0; m < M; ++m) {
          const std::vector<double> n = norm_row(xs.data() + m * d, d, layer, eps, scale[m]);
          for (int64_t i = 0; i < d; ++i) L += dn[m * d + i] * n[i];
        }
        return L;
      }, dx_const);
      // ... and as a function of the scale itself: L(s) = <dn, xc / s>.
      check_fd(name + " dscale fd", to_double(scale), [&](const std::vector<double> &ss) {
        double L = 0;
        for (int64_t m = 0; m < M; ++m) {
          std::vector<double> xd(x.begin() + m * d, x.begin() + (m + 1) * d);
          const std::vector<double> n = norm_row(xd.data(), d, layer, eps, ss[m]);
          for (int64_t i = 0; i < d; ++i) L += dn[m * d + i] * n[i];
        }
        return L;
      }, dscale);
    }
}

void activation_cases(Cpu &c) {
  for (nt_activation a : {NT_ACT_GELU_TANH, NT_ACT_GELU_ERF, NT_ACT_SILU, NT_ACT_RELU})
    for (int64_t n : {1, 19, 40000}) {  // 40000: several pool chunks
      std::vector<float> x = randn(n, 60 + n, 2.0f), up = randn(n, 61 + n), dy = randn(n, 62 + n);
      // ReLU's kink: keep the finite-difference points off it.
      if (a == NT_ACT_RELU)
        for (float &v : x)
          if (std::fabs(v) < 0.01f) v = 0.5f;
      const std::string name = std::string(act_name(a)) + " n=" + std::to_string(n);
      std::vector<float> dx(n), dgate(n), dup(n), dup_only(n);
      c.ok(c.api->activation_backward(c.be, a, x.data(), dy.data(), n, dx.data()), name);
      c.ok(c.api->gated_activation_backward(c.be, a, x.data(), up.data(), dy.data(), n, dgate.data(), dup.data()), name);
      c.ok(c.api->gated_activation_backward(c.be, a, x.data(), up.data(), dy.data(), n, nullptr, dup_only.data()), name);
      CHECK(dup_only == dup, "%s: dup differs without dgate", name.c_str());
      std::vector<float> inplace = dy;
      c.ok(c.api->activation_backward(c.be, a, x.data(), inplace.data(), n, inplace.data()), name);
      CHECK(inplace == dx, "%s: in-place activation_backward differs", name.c_str());
      std::vector<double> rdx(n), rdg(n), rdu(n);
      for (int64_t i = 0; i < n; ++i) {
        rdx[i] = dy[i] * act_df(a, x[i]);
        rdg[i] = dy[i] * up[i] * act_df(a, x[i]);
        rdu[i] = dy[i] * act_f(a, x[i]);
      }
      // float32 tanh / erf / exp: a few ulp per element.
      check_close(name + " dx", dx, rdx, 4e-6);
      check_close(name + " dgate", dgate, rdg, 4e-6);
      check_close(name + " dup", dup, rdu, 4e-6);
      auto loss_x = [&](const std::vector<double> &xs) {
        double L = 0;
        for (int64_t i = 0; i < n; ++i) L += dy[i] * act_f(a, xs[i]);
        return L;
      };
      check_fd(name + " fd", to_double(x), loss_x, dx);
      check_fd(name + " gated fd gate", to_double(x), [&](const std::vector<double> &g) {
        double L = 0;
        for (int64_t i = 0; i < n; ++i) L += dy[i] * act_f(a, g[i]) * up[i];
        return L;
      }, dgate);
      check_fd(name + " gated fd up", to_double(up), [&](const std::vector<double> &u) {
        double L = 0;
        for (int64_t i = 0; i < n; ++i) L += dy[i] * act_f(a, x[i]) * u[i];
        return L;
      }, dup);
    }
}

void softcap_cases(Cpu &c) {
  for (float cap : {30.0f, 2.5f}) {
    const int64_t n = 1000;
    std::vector<float> x = randn(n, 70, cap), dy = randn(n, 71);
    x[3] = x[500] = kNegInf;
    std::vector<float> y = x, dx(n);
    c.ok(c.api->softcap(c.be, y.data(), n, cap), "softcap");
    const std::string name = "softcap cap=" + std::to_string(cap);
    c.ok(c.api->softcap_backward(c.be, y.data(), dy.data(), n, cap, dx.data()), name);
    CHECK(dx[3] == 0.0f && dx[500] == 0.0f, "%s: -inf entries get %g %g", name.c_str(), dx[3], dx[500]);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = std::isinf(x[i]) ? 0.0 : dy[i] / std::pow(std::cosh(static_cast<double>(x[i]) / cap), 2);
    // y is the float32 forward output: 1 - (y/cap)^2 loses ~eps / (1 - t^2) near saturation.
    check_close(name, dx, ref, 2e-5);
    std::vector<double> xd = to_double(x);
    xd[3] = xd[500] = 0;  // not perturbable; the loss skips them below
    check_fd(name + " fd", xd, [&](const std::vector<double> &xs) {
      double L = 0;
      for (int64_t i = 0; i < n; ++i)
        if (i != 3 && i != 500) L += dy[i] * cap * std::tanh(xs[i] / cap);
      return L;
    }, dx);
  }
}

void softmax_cases(Cpu &c) {
  for (int64_t n : {1, 37, 300}) {
    const int64_t rows = 4;
    std::vector<float> x = randn(rows * n, 80 + n, 2.0f), dp = randn(rows * n, 81 + n);
    for (int64_t j = 0; j < n; ++j) x[1 * n + j] = kNegInf;  // a fully masked row
    for (int64_t j = n / 2 + 1; j < n; ++j) x[2 * n + j] = kNegInf, dp[2 * n + j] = 1e30f;  // masked tail, junk gradient
    std::vector<float> p = x, dx(rows * n);
    c.ok(c.api->softmax_rows(c.be, p.data(), rows, n), "softmax_rows");
    const std::string name = "softmax_rows_backward n=" + std::to_string(n);
    c.ok(c.api->softmax_rows_backward(c.be, p.data(), dp.data(), rows, n, dx.data()), name);
    std::vector<float> inplace = dp;
    c.ok(c.api->softmax_rows_backward(c.be, p.data(), inplace.data(), rows, n, inplace.data()), name);
    CHECK(inplace == dx, "%s: in-place differs", name.c_str());
    std::vector<double> ref(rows * n, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j)
        if (p[r * n + j] != 0) s += static_cast<double>(p[r * n + j]) * dp[r * n + j];
      for (int64_t j = 0; j < n; ++j) ref[r * n + j] = p[r * n + j] != 0 ? p[r * n + j] * (dp[r * n + j] - s) : 0.0;
    }
    check_close(name, dx, ref, 1e-5);  // a float32 dot of n terms
    std::vector<double> xd = to_double(x);
    for (double &v : xd)
      if (std::isinf(v)) v = -1e300;  // finite stand-in: exp underflows to exactly 0 either way
    check_fd(name + " fd", xd, [&](const std::vector<double> &xs) {
      double L = 0;
      for (int64_t r = 0; r < rows; ++r) {
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, xs[r * n + j]);
        if (mx < -1e299) continue;  // fully masked: the forward gives 0
        for (int64_t j = 0; j < n; ++j) sum += std::exp(xs[r * n + j] - mx);
        for (int64_t j = 0; j < n; ++j)
          if (x[r * n + j] != kNegInf) L += dp[r * n + j] * std::exp(xs[r * n + j] - mx) / sum;
      }
      return L;
    }, dx, 40);
  }
}

}  // namespace

void row_cases(Cpu &c) {
  norm_cases(c);
  activation_cases(c);
  softcap_cases(c);
  softmax_cases(c);
}

}  // namespace bwd
