// Sampling in the engine (engine/sampling.h), written to draw exactly what
// src/generate/sampling.ts draws: same order, same double arithmetic, same RNG stream.
// Tests: test/generate-native-sampling.test.ts (against the TypeScript sampler), test/native/test-sampling.cc.
#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "engine/error.h"

// A fused multiply-add would round differently from the TypeScript arithmetic.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace nt {

namespace {

uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

// The first maximum (a NaN is never greater, as in the TypeScript loop).
int32_t argmax_row(const float *l, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (l[i] > l[best]) best = i;
  return static_cast<int32_t>(best);
}

// A key whose ascending order is descending logit, then ascending index. -0 counts as +0 (the
// TypeScript comparator sees x - y == 0).
uint64_t order_key(float f, int64_t i) {
  if (f == 0.0f) f = 0.0f;
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | static_cast<uint64_t>(i);
}

// Stable LSD radix sort on the keys' high 32 bits (3 passes of 11 bits). The keys arrive in
// index order, so equal logits stay in index order.
void radix_sort_high(std::vector<uint64_t> &a, std::vector<uint64_t> &tmp) {
  tmp.resize(a.size());
  for (int shift = 32; shift < 64; shift += 11) {
    size_t count[2049] = {};
    for (uint64_t x : a) ++count[((x >> shift) & 2047) + 1];
    for (int i = 0; i < 2048; ++i) count[i + 1] += count[i];
    for (uint64_t x : a) tmp[count[(x >> shift) & 2047]++] = x;
    a.swap(tmp);
  }
}

int32_t sample_row(const float *l, int64_t n, const SampleRequest &s, SampleScratch &sc) {
  const double T = s.temperature;
  std::vector<uint64_t> &keys = sc.keys;
  keys.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = order_key(l[i], i);
  size_t count = keys.size();
  if (s.top_k > 0 && s.top_k < n) {
    count = static_cast<size_t>(s.top_k);
    std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(count) - 1, keys.end());
    std::sort(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(count));
  } else {
    radix_sort_high(keys, sc.tmp);
  }
  const auto index = [&](size_t j) { return static_cast<int64_t>(keys[j] & 0xffffffffu); };
  std::vector<double> &probs = sc.probs;
  probs.resize(count);
  const double max = static_cast<double>(l[index(0)]) / T;
  double total = 0.0;
  for (size_t j = 0; j < count; ++j) {
    probs[j] = std::exp(static_cast<double>(l[index(j)]) / T - max);
    total += probs[j];
  }
  if (s.top_p < 1.0) {
    double cum = 0.0;
    size_t keep = 0;
    while (keep < count) {
      cum += probs[keep] / total;
      ++keep;
      if (cum >= s.top_p) break;
    }
    count = keep;
    total = 0.0;
    for (size_t j = 0; j < count; ++j) total += probs[j];
  }
  double r = rng_next(s.rng) * total;
  for (size_t j = 0; j < count; ++j) {
    r -= probs[j];
    if (r < 0) return static_cast<int32_t>(index(j));
  }
  return static_cast<int32_t>(index(count - 1));
}

}  // namespace

double rng_next(uint32_t s[4]) {
  const uint32_t result = rotl(s[1] * 5u, 7) * 9u;
  const uint32_t t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 11);
  return static_cast<double>(result) / 4294967296.0;
}

void check_sample_request(const SampleRequest &s) {
  if (!(s.temperature >= 0.0) || !std::isfinite(s.temperature))
    fail(code::kInvalidInput, "sampling temperature must be a finite number >= 0, got " + std::to_string(s.temperature));
  if (s.top_k < 0) fail(code::kInvalidInput, "sampling topK must be >= 0");
  if (!(s.top_p > 0.0 && s.top_p <= 1.0)) fail(code::kInvalidInput, "sampling topP must be in (0, 1], got " + std::to_string(s.top_p));
  if (!s.tokens) fail(code::kInvalidInput, "sampling needs an output for the tokens");
  if (s.temperature > 0.0 && !s.rng) fail(code::kInvalidInput, "sampling with a temperature needs a random state");
}

void sample_rows(const float *logits, int64_t batch, int64_t vocab, const SampleRequest &s, SampleScratch &scratch) {
  for (int64_t b = 0; b < batch; ++b) {
    if (s.rows && !s.rows[b]) {
      s.tokens[b] = -1;
      continue;
    }
    const float *l = logits + b * vocab;
    s.tokens[b] = s.temperature == 0.0 ? argmax_row(l, vocab) : sample_row(l, vocab, s, scratch);
  }
}

}  // namespace nt
