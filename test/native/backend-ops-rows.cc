// Cross-backend op cases (run by test-backend-ops.cc): layer_norm / rms_norm / mul_rows at real and
// odd widths, softmax_rows with masked rows, softcap with -inf, add, activations.
#include "backend-ops.h"

namespace bops {
namespace {

// Norms: widths from a toy model's to Llama 70B's 8192 and odd ones (a block of 1024 threads
// strides a 4097 row five times); with and without weight / bias and scale_out. Rows have a
// mean offset so the centered variance matters.
void norm_cases(Runner &r) {
  for (int64_t d : {64, 771, 2048, 4097, 8192}) {
    const int64_t M = d >= 4096 ? 3 : 7;
    const std::vector<float> x = randn(M * d, 71 + d, 3.0f, 2.5f), w = randn(d, 72, 1.0f, 1.0f), b = randn(d, 73);
    for (int variant = 0; variant < 6; ++variant) {
      const bool layer = variant < 3, weighted = variant % 3 != 2, with_scale = variant % 3 == 0;
      const std::string name = std::string(layer ? "layer_norm" : "rms_norm") + " d=" + std::to_string(d) + (weighted ? " weighted" : " plain") +
                               (with_scale ? " scale_out" : "");
      r.run(name, kReduce, [&](const BE &be, bool) {
        DeviceBuffer xb = up(be, x), wb = up(be, w), bb = up(be, b), out = zeros(be, M * d), s = zeros(be, M);
        const float *wp = weighted ? wb.f32() : nullptr;
        float *sp = with_scale ? s.f32() : nullptr;
        if (layer) be->check(be->api().layer_norm(be->ctx(), xb.f32(), M, d, wp, weighted ? bb.f32() : nullptr, 1e-5f, out.f32(), sp), "layer_norm");
        else be->check(be->api().rms_norm(be->ctx(), xb.f32(), M, d, wp, 1e-6f, out.f32(), sp), "rms_norm");
        Outputs o{{"out", download(be, out)}};
        if (with_scale) o.push_back({"scale", download(be, s)});
        return o;
      });
    }
    r.run("mul_rows d=" + std::to_string(d), kExact, [&](const BE &be, bool) {
      DeviceBuffer xb = up(be, x), wb = up(be, w);
      be->check(be->api().mul_rows(be->ctx(), xb.f32(), M, d, wb.f32(), xb.f32()), "mul_rows in place");
      return Outputs{{"", download(be, xb)}};
    });
  }
}

// Softmax rows as the instrumented attention sees them: unmasked, all -inf (a padding query:
// zeros), causal-masked tails, a single visible key; each row is compared at its own scale.
void softmax_cases(Runner &r) {
  for (int64_t n : {1, 37, 65, 5000}) {
    const int64_t rows = 5;
    std::vector<float> x = randn(rows * n, 81 + n, 4.0f);
    for (int64_t j = 0; j < n; ++j) x[1 * n + j] = kNegInf;
    for (int64_t j = n / 2 + 1; j < n; ++j) x[2 * n + j] = kNegInf;
    for (int64_t j = 0; j < n; ++j)
      if (j != n - 1) x[3 * n + j] = kNegInf;
    for (int64_t j = 0; j < n; j += 3) x[4 * n + j] = kNegInf;
    r.run("softmax_rows n=" + std::to_string(n), kReduce, [&](const BE &be, bool) {
      DeviceBuffer xb = up(be, x);
      be->check(be->api().softmax_rows(be->ctx(), xb.f32(), rows, n), "softmax_rows");
      const std::vector<float> all = download(be, xb);
      Outputs o;
      for (int64_t i = 0; i < rows; ++i) o.push_back({"row " + std::to_string(i), std::vector<float>(all.begin() + i * n, all.begin() + (i + 1) * n)});
      return o;
    });
  }
}

void elementwise_cases(Runner &r) {
  const int64_t n = 50001;  // odd: a partial last block
  const std::vector<float> a = randn(n, 91, 3.0f), b = randn(n, 92, 3.0f);
  std::vector<float> wide = randn(n, 93, 12.0f);  // reaches the activations' tails
  r.run("add n=" + std::to_string(n), kExact, [&](const BE &be, bool) {
    DeviceBuffer x = up(be, a), y = up(be, b), o = zeros(be, n);
    be->check(be->api().add(be->ctx(), x.f32(), y.f32(), n, o.f32()), "add");
    be->check(be->api().add(be->ctx(), x.f32(), y.f32(), n, x.f32()), "add in place");
    return Outputs{{"out", download(be, o)}, {"in place", download(be, x)}};
  });
  for (float cap : {50.0f, 1.5f}) {
    std::vector<float> xs = wide;
    for (int64_t i = 0; i < n; i += 97) xs[i] = kNegInf;  // masked scores stay -inf
    r.run("softcap cap=" + std::to_string(cap), kMath, [&](const BE &be, bool) {
      DeviceBuffer x = up(be, xs);
      be->check(be->api().softcap(be->ctx(), x.f32(), n, cap), "softcap");
      return Outputs{{"", download(be, x)}};
    });
  }
  for (nt_activation act : {NT_ACT_GELU_TANH, NT_ACT_GELU_ERF, NT_ACT_SILU, NT_ACT_RELU}) {
    r.run("activation " + std::to_string(act), kMath, [&](const BE &be, bool) {
      DeviceBuffer x = up(be, a), y = up(be, wide);
      be->check(be->api().activation(be->ctx(), act, x.f32(), n), "activation");
      be->check(be->api().activation(be->ctx(), act, y.f32(), n), "activation wide");
      return Outputs{{"", download(be, x)}, {"wide", download(be, y)}};
    });
    r.run("gated_activation " + std::to_string(act), kMath, [&](const BE &be, bool) {
      DeviceBuffer g = up(be, wide), u = up(be, b), o = zeros(be, n);
      be->check(be->api().gated_activation(be->ctx(), act, g.f32(), u.f32(), n, o.f32()), "gated_activation");
      return Outputs{{"", download(be, o)}};
    });
  }
}

}  // namespace

void row_cases(Runner &r) {
  norm_cases(r);
  softmax_cases(r);
  elementwise_cases(r);
}

}  // namespace bops
