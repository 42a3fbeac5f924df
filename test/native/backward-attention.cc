// Attention backward cases: attention_apply_backward (dpattern over every key, dv summed over a
// group's heads) and attention_scores_backward (dq, dk over the mask's visible pairs only, with
// NaN in the masked entries of dscores to show they are ignored), with GQA, sliding windows, left
// padding (queries that see no key), queries after q0 > 0, and head dims off the vector width.
#include "backward.h"

namespace bwd {

namespace {

struct Geometry {
  int64_t B, T, H, G, D, q0;
  int32_t window;
  std::vector<int32_t> pad;  // empty: none
};

std::string label(const Geometry &g) {
  return "B=" + std::to_string(g.B) + " T=" + std::to_string(g.T) + " H=" + std::to_string(g.H) + " G=" + std::to_string(g.G) + " D=" +
         std::to_string(g.D) + " q0=" + std::to_string(g.q0) + " window=" + std::to_string(g.window) + (g.pad.empty() ? "" : " pad");
}

void attention_case(Cpu &c, const Geometry &g, uint32_t seed) {
  const int64_t B = g.B, T = g.T, H = g.H, G = g.G, D = g.D, KV = g.q0 + T, group = H / G;
  nt_attention_shape s{B, T, H, G, D, KV, KV, g.q0, 1.0f / std::sqrt(static_cast<float>(D)), g.window, g.pad.empty() ? nullptr : g.pad.data()};
  auto allowed = [&](int64_t b, int64_t t, int64_t j) {
    const int64_t i = g.q0 + t, lo = std::max<int64_t>(g.pad.empty() ? 0 : g.pad[b], g.window > 0 ? i - g.window + 1 : 0);
    return j >= lo && j <= i;
  };
  const std::vector<float> q = randn(B * T * H * D, seed), k = randn(B * KV * G * D, seed + 1), v = randn(B * KV * G * D, seed + 2);
  const std::vector<float> dz = randn(B * T * H * D, seed + 3);
  std::vector<float> dscores = randn(B * H * T * KV, seed + 4);
  // The forward pattern (softmax of the masked scores), then edited off the mask in one place
  // (attention_apply uses every key).
  std::vector<float> pattern(B * H * T * KV);
  c.ok(c.api->attention_scores(c.be, &s, q.data(), k.data(), pattern.data()), "attention_scores");
  c.ok(c.api->softmax_rows(c.be, pattern.data(), B * H * T, KV), "softmax_rows");
  pattern[pattern.size() / 3] += 0.25f;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < KV; ++j)
          if (!allowed(b, t, j)) dscores[((b * H + h) * T + t) * KV + j] = std::numeric_limits<float>::quiet_NaN();
  const std::string name = label(g);

  // attention_apply_backward
  std::vector<float> dpattern(pattern.size(), 1e30f), dv(v.size(), 1e30f);
  c.ok(c.api->attention_apply_backward(c.be, &s, pattern.data(), v.data(), dz.data(), dpattern.data(), dv.data()), name);
  std::vector<double> rdp(dpattern.size(), 0.0), rdv(dv.size(), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < KV; ++j) {
          const float *zr = &dz[((b * T + t) * H + h) * D], *vr = &v[((b * KV + j) * G + h / group) * D];
          const double p = pattern[((b * H + h) * T + t) * KV + j];
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(zr[d]) * vr[d], rdv[((b * KV + j) * G + h / group) * D + d] += p * zr[d];
          rdp[((b * H + h) * T + t) * KV + j] = dot;
        }
  // float32 dot products of D (dpattern) and sums of T * H / G terms (dv).
  check_close("attention_apply_backward dpattern " + name, dpattern, rdp, 1e-5);
  check_close("attention_apply_backward dv " + name, dv, rdv, 1e-5);
  auto apply_loss = [&](const std::vector<double> &p, const std::vector<double> &vv) {
    double L = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t d = 0; d < D; ++d) {
            double z = 0;
            for (int64_t j = 0; j < KV; ++j) z += p[((b * H + h) * T + t) * KV + j] * vv[((b * KV + j) * G + h / group) * D + d];
            L += dz[((b * T + t) * H + h) * D + d] * z;
          }
    return L;
  };
  const std::vector<double> pd = to_double(pattern), vd = to_double(v), qd = to_double(q), kd = to_double(k);
  check_fd("attention_apply_backward dpattern fd " + name, pd, [&](const std::vector<double> &p) { return apply_loss(p, vd); }, dpattern, 16, seed);
  check_fd("attention_apply_backward dv fd " + name, vd, [&](const std::vector<double> &vv) { return apply_loss(pd, vv); }, dv, 16, seed);

  // attention_scores_backward
  std::vector<float> dq(q.size(), 1e30f), dk(k.size(), 1e30f);
  c.ok(c.api->attention_scores_backward(c.be, &s, q.data(), k.data(), dscores.data(), dq.data(), dk.data()), name);
  std::vector<double> rdq(dq.size(), 0.0), rdk(dk.size(), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < KV; ++j) {
          if (!allowed(b, t, j)) continue;
          const double ds = dscores[((b * H + h) * T + t) * KV + j] * static_cast<double>(s.scale);
          const int64_t qi = ((b * T + t) * H + h) * D, ki = ((b * KV + j) * G + h / group) * D;
          for (int64_t d = 0; d < D; ++d) rdq[qi + d] += ds * k[ki + d], rdk[ki + d] += ds * q[qi + d];
        }
  check_close("attention_scores_backward dq " + name, dq, rdq, 1e-5);
  check_close("attention_scores_backward dk " + name, dk, rdk, 1e-5);
  auto scores_loss = [&](const std::vector<double> &qq, const std::vector<double> &kk) {
    double L = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < KV; ++j) {
            if (!allowed(b, t, j)) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qq[((b * T + t) * H + h) * D + d] * kk[((b * KV + j) * G + h / group) * D + d];
            L += dscores[((b * H + h) * T + t) * KV + j] * dot * s.scale;
          }
    return L;
  };
  check_fd("attention_scores_backward dq fd " + name, qd, [&](const std::vector<double> &qq) { return scores_loss(qq, kd); }, dq, 16, seed);
  check_fd("attention_scores_backward dk fd " + name, kd, [&](const std::vector<double> &kk) { return scores_loss(qd, kk); }, dk, 16, seed);
}

}  // namespace

void attention_cases(Cpu &c) {
  attention_case(c, {2, 5, 4, 2, 19, 0, 0, {0, 2}}, 300);       // GQA, padding (queries that see nothing)
  attention_case(c, {1, 37, 3, 1, 64, 0, 7, {3}}, 310);         // MQA, sliding window
  attention_case(c, {2, 20, 2, 2, 33, 0, 0, {}}, 320);          // MHA, D past one 32-column block
  attention_case(c, {1, 3, 2, 1, 16, 10, 5, {4}}, 330);         // queries after q0, window, pad
  attention_case(c, {2, 70, 4, 2, 40, 0, 30, {0, 17}}, 340);    // several row tiles and key blocks
  attention_case(c, {1, 300, 2, 1, 16, 0, 100, {5}}, 350);      // more queries than one 256-row copy
}

}  // namespace bwd
