// Cross-backend op cases (run by test-backend-ops.cc) for the backward ops of ABI 3 at real model
// shapes: gemm_backward (every weight dtype; GPT-2 small and Llama 3.2 1B projections, odd shapes
// and pointer offsets), norm backward (LayerNorm / RMSNorm, live, detached and edited scale, in place),
// activation / gated / softcap / softmax backward, and the attention backward pair (GPT-2 small,
// GQA, a sliding window, left padding, a pattern edited outside the mask).
#include <array>

#include "backend-ops.h"

namespace bops {
namespace {

// The backward entries a backend must have for these cases; returns the first missing one.
const char *missing_backward_op(const nt_backend_api &a) {
  if (!a.gemm_backward) return "gemm_backward";
  if (!a.norm_scale_backward) return "norm_scale_backward";
  if (!a.norm_backward) return "norm_backward";
  if (!a.activation_backward) return "activation_backward";
  if (!a.gated_activation_backward) return "gated_activation_backward";
  if (!a.softcap_backward) return "softcap_backward";
  if (!a.softmax_rows_backward) return "softmax_rows_backward";
  if (!a.attention_apply_backward) return "attention_apply_backward";
  if (!a.attention_scores_backward) return "attention_scores_backward";
  return nullptr;
}

// dA[M, K] = dC[M, N] . W[N, K] at element offsets `off` (dC, W) and 3 (dA) when off != 0; dA starts
// as a sentinel so writes outside the output show. `pack`: W through the backend's pack_weight if
// it has one (gemm_backward takes W exactly as gemm does). `grad_scale`: the size of dC's entries
// (a loss averaged over many positions gives ~1e-6, below f16's normal range).
void gemm_backward_case(Runner &r, const char *what, nt_dtype dt, int64_t M, int64_t N, int64_t K, int64_t off, bool pack = false,
                        float grad_scale = 1.0f) {
  const int64_t od = off ? 3 : 0;
  const std::vector<float> dC = randn(M * N + off, 121 + M + N, grad_scale), W = randn(N * K + off, 122 + K, 1.0f / std::sqrt(static_cast<float>(N)));
  std::vector<float> w_rounded;
  const std::vector<uint8_t> w_bytes = as_dtype(W, dt, &w_rounded);
  const size_t esize = dt == NT_F32 ? 4 : 2;
  const std::string name = std::string("gemm_backward ") + what + " " + dtype_name(dt) + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                           " K=" + std::to_string(K) + (off ? " odd offsets" : "") + (pack ? " packed" : "");
  r.run(name, gemm_tolerance(dt), [&](const BE &be, bool reference) {
    DeviceBuffer g = up(be, dC), out = up(be, std::vector<float>(M * K + od, 7.0f));
    DeviceBuffer w = reference ? up(be, w_rounded) : up_raw(be, w_bytes);
    const void *wp = static_cast<const uint8_t *>(w.data()) + off * (reference ? 4 : esize);
    nt_dtype wdt = reference ? NT_F32 : dt;
    DeviceBuffer packed;
    if (pack && be->api().pack_weight) {
      nt_dtype pdt = wdt;
      if (void *p = be->api().pack_weight(be->ctx(), wp, wdt, N, K, &pdt)) {
        packed = DeviceBuffer::adopt(be, p, 0);
        wp = p;
        wdt = pdt;
      }
    }
    be->check(be->api().gemm_backward(be->ctx(), g.f32() + off, M, N, wp, wdt, K, out.f32() + od), "gemm_backward");
    return Outputs{{"", download(be, out)}};
  });
}

void gemm_backward_cases(Runner &r) {
  for (nt_dtype dt : {NT_F32, NT_F16, NT_BF16}) {
    gemm_backward_case(r, "gpt2 mlp out", dt, 7, 768, 3072, 0);   // W_out [768, 3072]
    gemm_backward_case(r, "gpt2 qkv", dt, 7, 2304, 768, 1);        // c_attn [2304, 768]
    gemm_backward_case(r, "llama down", dt, 2, 2048, 8192, 0);    // Llama 3.2 1B down_proj [2048, 8192]
    gemm_backward_case(r, "odd", dt, 37, 130, 771, 1);
    gemm_backward_case(r, "odd", dt, 5, 33, 4097, 0);
    gemm_backward_case(r, "gpt2 mlp in", dt, 7, 3072, 768, 0, true);  // W_in [3072, 768], packed
    gemm_backward_case(r, "tiny gradient", dt, 5, 768, 771, 0, false, 1e-6f);
  }
}

// Norm backward over rows of x with a mean offset (the centering matters); scale as the forward
// computes it, and once edited (a hook_scale edit: the forward divided by another scale, while
// d s / d x still uses the s computed from x). dscale for norm_backward is an independent input,
// so its error does not compound.
void norm_backward_cases(Runner &r) {
  for (int64_t d : {768, 2048, 4097}) {
    const int64_t M = d > 2048 ? 3 : 7;
    const std::vector<float> x = randn(M * d, 131 + d, 3.0f, 2.5f), dn = randn(M * d, 132 + d), dscale_in = randn(M, 133 + d, 4.0f);
    for (int layer = 0; layer < 2; ++layer) {
      const float eps = layer ? 1e-5f : 1e-6f;
      std::vector<float> scale(M), edited(M);
      for (int64_t m = 0; m < M; ++m) {
        double mean = 0, sq = 0;
        if (layer) {
          for (int64_t j = 0; j < d; ++j) mean += x[m * d + j];
          mean /= d;
        }
        for (int64_t j = 0; j < d; ++j) sq += (x[m * d + j] - mean) * (x[m * d + j] - mean);
        scale[m] = static_cast<float>(std::sqrt(sq / d + eps));
        edited[m] = scale[m] * (1.25f + 0.1f * static_cast<float>(m));
      }
      const std::string name = std::string(layer ? "layer_norm" : "rms_norm") + " backward d=" + std::to_string(d);
      r.run(name, kReduce, [&](const BE &be, bool) {
        DeviceBuffer xb = up(be, x), sb = up(be, scale), db = up(be, dn), dsb = up(be, dscale_in), ds = zeros(be, M), dx = zeros(be, M * d),
                     dx_const = zeros(be, M * d), in_place = up(be, dn), eb = up(be, edited), dx_edited = zeros(be, M * d);
        const auto &a = be->api();
        be->check(a.norm_scale_backward(be->ctx(), xb.f32(), M, d, layer, sb.f32(), db.f32(), ds.f32()), "norm_scale_backward");
        be->check(a.norm_backward(be->ctx(), xb.f32(), M, d, layer, eps, sb.f32(), db.f32(), dsb.f32(), dx.f32()), "norm_backward");
        be->check(a.norm_backward(be->ctx(), xb.f32(), M, d, layer, eps, sb.f32(), db.f32(), nullptr, dx_const.f32()), "norm_backward detached");
        be->check(a.norm_backward(be->ctx(), xb.f32(), M, d, layer, eps, sb.f32(), in_place.f32(), dsb.f32(), in_place.f32()),
                  "norm_backward in place");
        be->check(a.norm_backward(be->ctx(), xb.f32(), M, d, layer, eps, eb.f32(), db.f32(), dsb.f32(), dx_edited.f32()),
                  "norm_backward edited scale");
        return Outputs{{"dscale", download(be, ds)}, {"dx", download(be, dx)}, {"dx detached scale", download(be, dx_const)},
                       {"dx in place", download(be, in_place)}, {"dx edited scale", download(be, dx_edited)}};
      });
    }
  }
}

void elementwise_backward_cases(Runner &r) {
  const int64_t n = 50001;  // odd: a partial last block
  const std::vector<float> wide = randn(n, 141, 12.0f), up_v = randn(n, 142, 3.0f), dy = randn(n, 143, 2.0f);
  for (nt_activation act : {NT_ACT_GELU_TANH, NT_ACT_GELU_ERF, NT_ACT_SILU, NT_ACT_RELU}) {
    r.run("activation_backward " + std::to_string(act), kMath, [&](const BE &be, bool) {
      DeviceBuffer x = up(be, wide), g = up(be, dy), o = zeros(be, n);
      be->check(be->api().activation_backward(be->ctx(), act, x.f32(), g.f32(), n, o.f32()), "activation_backward");
      be->check(be->api().activation_backward(be->ctx(), act, x.f32(), g.f32(), n, g.f32()), "activation_backward in place");
      return Outputs{{"", download(be, o)}, {"in place", download(be, g)}};
    });
    r.run("gated_activation_backward " + std::to_string(act), kMath, [&](const BE &be, bool) {
      DeviceBuffer gate = up(be, wide), u = up(be, up_v), d = up(be, dy), dg = zeros(be, n), du = zeros(be, n), du_detached = zeros(be, n);
      be->check(be->api().gated_activation_backward(be->ctx(), act, gate.f32(), u.f32(), d.f32(), n, dg.f32(), du.f32()), "gated_activation_backward");
      be->check(be->api().gated_activation_backward(be->ctx(), act, gate.f32(), u.f32(), d.f32(), n, nullptr, du_detached.f32()),
                "gated_activation_backward detached");
      return Outputs{{"dgate", download(be, dg)}, {"dup", download(be, du)}, {"dup detached", download(be, du_detached)}};
    });
  }
  // Gemma 2's caps: 50 on attention scores, 30 on the final logits; -inf entries are masked scores.
  for (float cap : {50.0f, 30.0f}) {
    std::vector<float> y(n);
    for (int64_t i = 0; i < n; ++i) y[i] = i % 97 == 0 ? kNegInf : static_cast<float>(cap * std::tanh(static_cast<double>(wide[i]) * 4 / cap));
    r.run("softcap_backward cap=" + std::to_string(cap), kMath, [&](const BE &be, bool) {
      DeviceBuffer yb = up(be, y), g = up(be, dy), o = zeros(be, n);
      be->check(be->api().softcap_backward(be->ctx(), yb.f32(), g.f32(), n, cap, o.f32()), "softcap_backward");
      be->check(be->api().softcap_backward(be->ctx(), yb.f32(), g.f32(), n, cap, g.f32()), "softcap_backward in place");
      return Outputs{{"", download(be, o)}, {"in place", download(be, g)}};
    });
  }
}

// Softmax of n-wide rows with a causal tail masked, one all-masked row (a padding query: zeros)
// and one single-key row, as the attention pattern has them.
std::vector<float> softmax_host(std::vector<float> s, int64_t rows, int64_t n) {
  for (int64_t i = 0; i < rows; ++i) {
    float *row = s.data() + i * n;
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, static_cast<double>(row[j]));
    if (mx == -INFINITY) {
      std::fill(row, row + n, 0.0f);
      continue;
    }
    for (int64_t j = 0; j < n; ++j) sum += std::exp(row[j] - mx);
    for (int64_t j = 0; j < n; ++j) row[j] = static_cast<float>(std::exp(row[j] - mx) / sum);
  }
  return s;
}

void softmax_backward_cases(Runner &r) {
  for (int64_t n : {37, 1024, 5000}) {
    const int64_t rows = 4;
    std::vector<float> s = randn(rows * n, 151 + n, 3.0f);
    for (int64_t j = n / 2 + 1; j < n; ++j) s[0 * n + j] = kNegInf;
    for (int64_t j = 0; j < n; ++j) s[1 * n + j] = kNegInf;
    for (int64_t j = 0; j < n - 1; ++j) s[2 * n + j] = kNegInf;
    const std::vector<float> p = softmax_host(s, rows, n), dp = randn(rows * n, 152 + n);
    r.run("softmax_rows_backward n=" + std::to_string(n), kReduce, [&](const BE &be, bool) {
      DeviceBuffer pb = up(be, p), g = up(be, dp), o = zeros(be, rows * n);
      be->check(be->api().softmax_rows_backward(be->ctx(), pb.f32(), g.f32(), rows, n, o.f32()), "softmax_rows_backward");
      be->check(be->api().softmax_rows_backward(be->ctx(), pb.f32(), g.f32(), rows, n, g.f32()), "softmax_rows_backward in place");
      return Outputs{{"", download(be, o)}, {"in place", download(be, g)}};
    });
  }
}

struct AttnGradCase {
  const char *what;
  int64_t B, T, H, G, D;
  int32_t window;
  std::vector<int32_t> pad;
  bool edited;  // pattern weight outside the mask (an edited hook_pattern)
  int64_t q0 = 0, S = 0;  // queries after q0 cached keys in a cache of S rows (0: S = KV = q0 + T)
};

// The attention backward pair on one shape (the engine's: no KV cache, S = KV = T, q0 = 0; or
// queries after cached keys, where rows KV .. S-1 of dk and dv are 0). dscores is nonzero at
// masked entries too: the op must ignore them.
void attention_backward_case(Runner &r, const AttnGradCase &c, uint32_t seed) {
  const int64_t T = c.T, KV = c.q0 + c.T, S = c.S ? c.S : KV, rows = c.B * c.H * c.T;
  const std::vector<float> q = randn(c.B * T * c.H * c.D, seed), k = randn(c.B * S * c.G * c.D, seed + 1), v = randn(c.B * S * c.G * c.D, seed + 2),
                           dz = randn(c.B * T * c.H * c.D, seed + 3), dscores = randn(rows * KV, seed + 4);
  std::vector<float> scores = randn(rows * KV, seed + 5, 2.0f);
  if (!c.edited) {
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t b = row / (c.H * T), i = c.q0 + row % T;
      for (int64_t j = 0; j < KV; ++j) {
        const bool visible = j >= c.pad[b] && j <= i && (c.window == 0 || i - j < c.window);
        if (!visible) scores[row * KV + j] = kNegInf;
      }
    }
  }
  const std::vector<float> pattern = c.edited ? scores : softmax_host(scores, rows, KV);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  const std::string name = std::string(c.what) + " B=" + std::to_string(c.B) + " T=" + std::to_string(T) + " H=" + std::to_string(c.H) +
                           " G=" + std::to_string(c.G) + " D=" + std::to_string(c.D) + (c.window ? " window=" + std::to_string(c.window) : "") +
                           (c.q0 ? " q0=" + std::to_string(c.q0) + " S=" + std::to_string(S) : "");
  auto shape = [&](const DeviceBuffer &p) { return nt_attention_shape{c.B, T, c.H, c.G, c.D, S, KV, c.q0, scale, c.window, i32(p)}; };
  r.run("attention_apply_backward " + name, kAttention, [&](const BE &be, bool) {
    DeviceBuffer pb = up(be, pattern), vb = up(be, v), g = up(be, dz), p = up_raw(be, c.pad), dp = zeros(be, rows * KV), dv = up(be, std::vector<float>(v.size(), 7.0f));
    const nt_attention_shape s = shape(p);
    be->check(be->api().attention_apply_backward(be->ctx(), &s, pb.f32(), vb.f32(), g.f32(), dp.f32(), dv.f32()), "attention_apply_backward");
    return Outputs{{"dpattern", download(be, dp)}, {"dv", download(be, dv)}};
  });
  r.run("attention_scores_backward " + name, kAttention, [&](const BE &be, bool) {
    DeviceBuffer qb = up(be, q), kb = up(be, k), g = up(be, dscores), p = up_raw(be, c.pad), dq = zeros(be, q.size()), dk = up(be, std::vector<float>(k.size(), 7.0f));
    const nt_attention_shape s = shape(p);
    be->check(be->api().attention_scores_backward(be->ctx(), &s, qb.f32(), kb.f32(), g.f32(), dq.f32(), dk.f32()), "attention_scores_backward");
    return Outputs{{"dq", download(be, dq)}, {"dk", download(be, dk)}};
  });
}

void attention_backward_cases(Runner &r) {
  uint32_t seed = 160;
  // GPT-2 small (12 heads of 64); the second row left-padded by 5.
  attention_backward_case(r, {"gpt2", 2, 37, 12, 12, 64, 0, {0, 5}, false}, seed += 6);
  // Llama 3.2 1B's GQA (32 query heads on 8 kv heads, D 64), 70 positions: two 64-row tiles.
  attention_backward_case(r, {"llama gqa", 1, 70, 32, 8, 64, 0, {0}, false}, seed += 6);
  // Llama 3 8B's head dim 128, GQA group 4, left padding past a 16-row stage.
  attention_backward_case(r, {"gqa d128", 2, 29, 8, 2, 128, 0, {0, 19}, false}, seed += 6);
  // Gemma 2 2B's heads (8 on 4, D 256) with a sliding window shorter than the sequence.
  attention_backward_case(r, {"gemma2 window", 2, 37, 8, 4, 256, 12, {3, 0}, false}, seed += 6);
  // An edited pattern: weight on masked and padding keys flows into dv.
  attention_backward_case(r, {"edited pattern", 2, 21, 8, 2, 64, 0, {0, 4}, true}, seed += 6);
  // 300 positions: five row tiles, most of the causal stages skipped, past the CPU's 256-query copies.
  attention_backward_case(r, {"long", 1, 300, 4, 2, 64, 0, {7}, false}, seed += 6);
  // A chunk of 5 queries after 27 cached keys in a 40-row cache, a window of 8, padding past it.
  attention_backward_case(r, {"chunk after cache", 2, 5, 8, 2, 64, 8, {0, 30}, false, 27, 40}, seed += 6);
}

}  // namespace

void backward_cases(Runner &r) {
  const char *cpu_missing = missing_backward_op(r.cpu->api());
  if (cpu_missing) {
    std::printf("test-backend-ops: skipping the backward cases: the CPU backend has no %s yet\n", cpu_missing);
    return;
  }
  if (r.other) {
    const char *other_missing = missing_backward_op(r.other->api());
    CHECK(!other_missing, "the %s backend has no %s", r.other->api().name, other_missing ? other_missing : "");
    if (other_missing) return;
  }
  gemm_backward_cases(r);
  norm_backward_cases(r);
  elementwise_backward_cases(r);
  softmax_backward_cases(r);
  attention_backward_cases(r);
}

}  // namespace bops
