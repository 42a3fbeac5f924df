// Native tests of the instrumented attention ops (attention_scores_f32, softmax_rows_f32,
// attention_apply_f32) against a scalar double reference: GQA / MQA, sliding windows, left
// padding with fully padded queries, queries after cached keys (q0 > 0) in a KV store of S > KV
// rows, sizes off the kernels' tile and vector widths, an edited pattern with weight outside the
// mask, and softmax rows holding -inf and NaN. Run at this CPU's best ISA, then again (as child
// processes) with NEUROTAP_CPU=avx2 and scalar so that every kernel is checked.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "ops/ops.h"

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> randn(size_t n, std::mt19937 &rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

struct Case {
  int64_t B, T, H, G, D, q0, S;
  int window;
  std::vector<int32_t> pad;  // empty: none
};

std::string label(const Case &c) {
  std::string p;
  for (int32_t x : c.pad) p += " " + std::to_string(x);
  return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) + " G=" + std::to_string(c.G) +
         " D=" + std::to_string(c.D) + " q0=" + std::to_string(c.q0) + " S=" + std::to_string(c.S) + " window=" + std::to_string(c.window) +
         (p.empty() ? "" : " pad" + p);
}

void attention_case(nt::ThreadPool &pool, const Case &c, std::mt19937 &rng) {
  const int64_t B = c.B, T = c.T, H = c.H, G = c.G, D = c.D, KV = c.q0 + T, S = c.S, group = H / G;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  nt::AttentionShape s{B, T, H, G, D, S, KV, c.q0, scale, c.window, c.pad.empty() ? nullptr : c.pad.data()};
  const std::string name = label(c);
  auto visible = [&](int64_t b, int64_t t, int64_t j) {
    const int64_t i = c.q0 + t, lo = std::max<int64_t>(c.pad.empty() ? 0 : c.pad[b], c.window > 0 ? i - c.window + 1 : 0);
    return j >= lo && j <= i;
  };
  const std::vector<float> q = randn(B * T * H * D, rng), k = randn(B * S * G * D, rng), v = randn(B * S * G * D, rng);
  auto krow = [&](const std::vector<float> &x, int64_t b, int64_t j, int64_t h) { return &x[((b * S + j) * G + h / group) * D]; };

  // scores: masked entries exactly -inf, the rest within float rounding of a dot product of D.
  std::vector<float> scores(B * H * T * KV, 123.0f);
  nt::attention_scores_f32(pool, s, q.data(), k.data(), scores.data());
  double worst = 0;
  bool mask_ok = true;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < KV; ++j) {
          const float got = scores[((b * H + h) * T + t) * KV + j];
          if (!visible(b, t, j)) {
            mask_ok = mask_ok && got == kNegInf;
            continue;
          }
          const float *qr = &q[((b * T + t) * H + h) * D], *kr = krow(k, b, j, h);
          double ref = 0, mag = 0;
          for (int64_t d = 0; d < D; ++d) ref += static_cast<double>(qr[d]) * kr[d], mag += std::fabs(static_cast<double>(qr[d]) * kr[d]);
          ref *= scale, mag *= scale;
          const double err = std::isfinite(got) ? std::fabs(got - ref) / (mag + 1e-30) : INFINITY;
          worst = std::max(worst, err);
        }
  CHECK(mask_ok, "%s: a masked score is not -inf", name.c_str());
  CHECK(worst < 1e-6 * (2 + D / 16.0), "%s: scores off by %g (relative to sum |q k|)", name.c_str(), worst);

  // softmax: rows of visible keys sum to one, masked entries exactly 0, padded queries all 0.
  std::vector<float> pattern = scores;
  nt::softmax_rows_f32(pool, pattern.data(), B * H * T, KV);
  worst = 0;
  mask_ok = true;
  for (int64_t r = 0; r < B * H * T; ++r) {
    const float *sr = &scores[r * KV], *pr = &pattern[r * KV];
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < KV; ++j) mx = std::max(mx, static_cast<double>(sr[j]));
    for (int64_t j = 0; j < KV; ++j) sum += sr[j] == kNegInf ? 0.0 : std::exp(sr[j] - mx);
    for (int64_t j = 0; j < KV; ++j) {
      if (sr[j] == kNegInf) {
        mask_ok = mask_ok && pr[j] == 0.0f;
        continue;
      }
      const double ref = std::exp(sr[j] - mx) / sum;
      worst = std::max(worst, std::isfinite(pr[j]) ? std::fabs(pr[j] - ref) : INFINITY);
    }
  }
  CHECK(mask_ok, "%s: a masked or padded pattern entry is not 0", name.c_str());
  CHECK(worst < 1e-6, "%s: softmax off by %g", name.c_str(), worst);

  // apply, on the pattern edited off the mask (apply uses every key, a padded query's row too).
  pattern[pattern.size() / 3] += 0.25f;
  pattern[KV - 1] = 0.5f;          // query 0 of (0, 0), key KV - 1: off the causal mask
  pattern[(T - 1) * KV] += 0.125f;  // query T - 1, key 0: off a window / padding
  std::vector<float> z(B * T * H * D, 77.0f);
  nt::attention_apply_f32(pool, s, pattern.data(), v.data(), z.data());
  worst = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < D; ++d) {
          double ref = 0, mag = 0;
          for (int64_t j = 0; j < KV; ++j) {
            const double p = pattern[((b * H + h) * T + t) * KV + j];
            ref += p * krow(v, b, j, h)[d], mag += std::fabs(p * krow(v, b, j, h)[d]);
          }
          const float got = z[((b * T + t) * H + h) * D + d];
          worst = std::max(worst, std::isfinite(got) ? std::fabs(got - ref) / (mag + 1e-30) : INFINITY);
        }
  CHECK(worst < 1e-6 * (2 + KV / 16.0), "%s: apply off by %g (relative to sum |p v|)", name.c_str(), worst);
}

// Softmax rows with -inf entries, a -1e30 (exactly 0 after, as with libm), a NaN, an all -inf row and lengths off the vector widths.
void softmax_special_rows(nt::ThreadPool &pool) {
  for (int64_t n : {1, 7, 16, 21, 40}) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::vector<float> x = randn(4 * n, rng);
    for (int64_t j = 0; j < n; j += 3) x[j] = kNegInf;              // row 0: some -inf
    for (int64_t j = 0; j < n; ++j) x[n + j] = kNegInf;             // row 1: all -inf
    x[2 * n + n / 2] = std::numeric_limits<float>::quiet_NaN();   // row 2: a NaN
    x[3 * n] = kNegInf;                                             // row 3: -inf first
    if (n > 2) x[1] = -1e30f;                                       // row 0: a finite "mask" value
    const std::vector<float> in = x;
    nt::softmax_rows_f32(pool, x.data(), 4, n);
    for (int64_t r : {0, 3}) {
      double mx = -INFINITY, sum = 0, worst = 0;
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, static_cast<double>(in[r * n + j]));
      for (int64_t j = 0; j < n; ++j) sum += in[r * n + j] == kNegInf ? 0.0 : std::exp(in[r * n + j] - mx);
      for (int64_t j = 0; j < n; ++j) {
        const float got = x[r * n + j];
        if (in[r * n + j] == kNegInf) CHECK(got == 0.0f, "n=%ld row %ld: -inf gives %g", long(n), long(r), got);
        else worst = std::max(worst, std::isfinite(got) ? std::fabs(got - std::exp(in[r * n + j] - mx) / sum) : INFINITY);
      }
      CHECK(worst < 1e-6, "n=%ld row %ld: softmax off by %g", long(n), long(r), worst);
    }
    if (n > 2) CHECK(x[1] == 0.0f, "n=%ld: exp(-1e30 - max) gives %g, not 0 (as libm)", long(n), x[1]);
    for (int64_t j = 0; j < n; ++j) CHECK(x[n + j] == 0.0f, "n=%ld: an all -inf row gives %g", long(n), x[n + j]);
    // A NaN spreads over its row; with no other entry the max is -inf and the row becomes 0.
    for (int64_t j = 0; j < n; ++j)
      CHECK(n == 1 ? x[2 * n + j] == 0.0f : std::isnan(x[2 * n + j]), "n=%ld: a row with a NaN gives %g", long(n), x[2 * n + j]);
  }
}

}  // namespace

int main(int argc, char **argv) {
  const char *isa = std::getenv("NEUROTAP_CPU");
  std::printf("test-attention: ISA %s\n", isa ? isa : "best available");
  nt::ThreadPool pool(2);
  std::mt19937 rng(21);
  const Case cases[] = {
      {1, 8, 2, 2, 64, 0, 8, 0, {}},            // one tile row, D a panel multiple
      {2, 37, 4, 2, 24, 0, 37, 0, {0, 5}},       // GQA, D below a panel, padding in one row
      {1, 70, 3, 1, 40, 0, 70, 9, {}},           // MQA, sliding window, D off 32
      {2, 19, 2, 2, 33, 0, 19, 0, {19, 12}},     // every query of row 0 padded, 12 of row 1
      {1, 13, 4, 1, 33, 50, 80, 20, {}},         // q0 > 0 in a store of S > KV rows, window
      {2, 130, 2, 2, 70, 5, 140, 0, {3, 0}},     // past one query chunk, q0 > 0, pad, S > KV
      {2, 1, 4, 2, 16, 30, 40, 0, {2, 0}},       // one decode step
      {1, 300, 2, 1, 64, 0, 300, 100, {40}},     // several chunks, window and padding
  };
  for (const Case &c : cases) attention_case(pool, c, rng);
  softmax_special_rows(pool);
  int rc = report(isa ? (std::string("test-attention NEUROTAP_CPU=") + isa).c_str() : "test-attention");
  std::fflush(stdout);
  if (!isa && argc > 0) {
    for (const char *cap : {"avx2", "scalar"}) {
      const std::string cmd = std::string("NEUROTAP_CPU=") + cap + " '" + argv[0] + "'";
      if (std::system(cmd.c_str()) != 0) rc = 1;
    }
  }
  return rc;
}
