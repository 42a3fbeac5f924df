// Cross-backend op cases (run by test-backend-ops.cc): fused attention and the instrumented
// scores / softmax / apply trio at real head dims (64, 80, 128, 256): a 37-position prefill, a
// decode step over a 64-row strided KV cache, chunked queries after cached keys, sliding windows,
// GQA group 4, MQA, left padding, and an edited pattern with weight outside the mask.
#include "backend-ops.h"

namespace bops {
namespace {

struct AttnCase {
  const char *what;
  int64_t B, T, H, G, D, S, q0;
  int32_t window;
  std::vector<int32_t> pad;
};

std::string describe(const AttnCase &c) {
  return std::string(c.what) + " D=" + std::to_string(c.D) + " T=" + std::to_string(c.T) + " q0=" + std::to_string(c.q0) + " H=" +
         std::to_string(c.H) + " G=" + std::to_string(c.G) + (c.window ? " window=" + std::to_string(c.window) : "");
}

// Both paths on one case. Work is kept to a few million multiply-adds so that an emulated device
// runs it in seconds: a prefill stops at D = 128, D = 256 gets decode steps.
void attention_case(Runner &r, const AttnCase &c, uint32_t seed) {
  const int64_t KV = c.q0 + c.T;
  const std::vector<float> q = randn(c.B * c.T * c.H * c.D, seed), k = randn(c.B * c.S * c.G * c.D, seed + 1),
                           v = randn(c.B * c.S * c.G * c.D, seed + 2);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  auto shape = [&](const DeviceBuffer &p) { return nt_attention_shape{c.B, c.T, c.H, c.G, c.D, c.S, KV, c.q0, scale, c.window, i32(p)}; };
  const std::string name = describe(c);
  r.run("attention " + name, kAttention, [&](const BE &be, bool) {
    DeviceBuffer qb = up(be, q), kb = up(be, k), vb = up(be, v), p = up_raw(be, c.pad), z = zeros(be, c.B * c.T * c.H * c.D);
    const nt_attention_shape s = shape(p);
    be->check(be->api().attention(be->ctx(), &s, qb.f32(), kb.f32(), vb.f32(), z.f32()), "attention");
    return Outputs{{"", download(be, z)}};
  });
  r.run("attention scores/softmax/apply " + name, kAttention, [&](const BE &be, bool) {
    DeviceBuffer qb = up(be, q), kb = up(be, k), vb = up(be, v), p = up_raw(be, c.pad);
    DeviceBuffer sc = zeros(be, c.B * c.H * c.T * KV), z = zeros(be, c.B * c.T * c.H * c.D);
    const nt_attention_shape s = shape(p);
    be->check(be->api().attention_scores(be->ctx(), &s, qb.f32(), kb.f32(), sc.f32()), "attention_scores");
    Outputs o{{"scores", download(be, sc)}};
    be->check(be->api().softmax_rows(be->ctx(), sc.f32(), c.B * c.H * c.T, KV), "softmax_rows");
    o.push_back({"pattern", download(be, sc)});
    be->check(be->api().attention_apply(be->ctx(), &s, sc.f32(), vb.f32(), z.f32()), "attention_apply");
    o.push_back({"z", download(be, z)});
    return o;
  });
}

// attention_apply over all KV keys of an edited pattern (weight on masked and padding keys,
// exact zeros skipped).
void edited_pattern_case(Runner &r, const AttnCase &c, uint32_t seed) {
  const int64_t KV = c.q0 + c.T;
  std::vector<float> pattern = randn(c.B * c.H * c.T * KV, seed, 0.5f);
  for (size_t i = 0; i < pattern.size(); i += 5) pattern[i] = 0.0f;
  const std::vector<float> v = randn(c.B * c.S * c.G * c.D, seed + 1);
  r.run("attention_apply edited pattern " + describe(c), kAttention, [&](const BE &be, bool) {
    DeviceBuffer pb = up(be, pattern), vb = up(be, v), p = up_raw(be, c.pad), z = zeros(be, c.B * c.T * c.H * c.D);
    const nt_attention_shape s{c.B, c.T, c.H, c.G, c.D, c.S, KV, c.q0, 1.0f, c.window, i32(p)};
    be->check(be->api().attention_apply(be->ctx(), &s, pb.f32(), vb.f32(), z.f32()), "attention_apply");
    return Outputs{{"", download(be, z)}};
  });
}

}  // namespace

void attention_cases(Runner &r) {
  uint32_t seed = 100;
  for (int64_t D : {64, 80, 128, 256}) {
    if (D <= 128) {
      // Prefill: 37 positions (two 32-key tiles), the second row left-padded by 5.
      attention_case(r, {"prefill gqa", 2, 37, 8, 2, D, 37, 0, 0, {0, 5}}, seed += 3);
      attention_case(r, {"prefill mqa", 2, 37, 4, 1, D, 37, 0, 16, {3, 0}}, seed += 3);
    }
    // Decode: one query after 64 cached keys; the cache holds S = 80 rows per batch row, so
    // batch rows are S * G * D apart and only the first 65 are in use.
    attention_case(r, {"decode gqa", 2, 1, 8, 2, D, 80, 64, 0, {0, 7}}, seed += 3);
    attention_case(r, {"decode mqa", 2, 1, 4, 1, D, 80, 64, 24, {0, 7}}, seed += 3);
  }
  attention_case(r, {"decode mha", 1, 1, 4, 4, 128, 80, 64, 0, {0}}, seed += 3);
  // Chunked queries after cached keys, a window that cuts inside a tile, padding up to the window.
  attention_case(r, {"chunk gqa", 2, 5, 8, 2, 80, 72, 60, 8, {0, 56}}, seed += 3);
  attention_case(r, {"chunk gqa", 3, 3, 8, 2, 64, 40, 33, 0, {0, 2, 35}}, seed += 3);
  edited_pattern_case(r, {"", 2, 1, 8, 2, 128, 80, 64, 0, {0, 7}}, seed += 3);
  edited_pattern_case(r, {"", 2, 37, 4, 1, 64, 37, 0, 0, {0, 5}}, seed += 3);
}

}  // namespace bops
