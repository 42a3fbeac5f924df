// Native tests of engine/sampling.cc against a plain reference written as the TypeScript sampler
// reads (a stable sort of the indices by descending logit, top-k, softmax in double, top-p, one
// draw): the radix sort, the top-k selection and the row skipping, over logits with ties, signed
// zeros and -inf, vocabularies from 1 to 50257, and the coded errors of bad settings.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "engine/error.h"
#include "engine/sampling.h"

namespace {

int32_t reference_sample(const float *l, int64_t n, double T, int64_t top_k, double top_p, uint32_t rng[4]) {
  if (T == 0.0) return static_cast<int32_t>(std::max_element(l, l + n) - l);  // the first maximum
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[a] > l[b]; });
  if (top_k > 0 && top_k < n) order.resize(static_cast<size_t>(top_k));
  const double max = static_cast<double>(l[order[0]]) / T;
  std::vector<double> probs;
  for (int64_t i : order) probs.push_back(std::exp(static_cast<double>(l[i]) / T - max));
  double total = 0;
  for (double p : probs) total += p;
  if (top_p < 1.0) {
    double cum = 0;
    size_t keep = 0;
    while (keep < probs.size()) {
      cum += probs[keep] / total;
      keep++;
      if (cum >= top_p) break;
    }
    order.resize(keep);
    probs.resize(keep);
    total = 0;
    for (double p : probs) total += p;
  }
  double r = nt::rng_next(rng) * total;
  for (size_t i = 0; i < order.size(); ++i) {
    r -= probs[i];
    if (r < 0) return static_cast<int32_t>(order[i]);
  }
  return static_cast<int32_t>(order.back());
}

void random_cases() {
  std::mt19937 gen(7);
  const float kInf = std::numeric_limits<float>::infinity();
  const int64_t vocabs[] = {1, 2, 17, 300, 5000, 50257};
  const double temps[] = {0.0, 0.5, 1.0, 1.7};
  const int64_t ks[] = {0, 1, 3, 40, 100000};
  const double ps[] = {1.0, 0.95, 0.5, 1e-6};
  nt::SampleScratch scratch;
  int compared = 0;
  for (int64_t V : vocabs)
    for (int kind = 0; kind < 3; ++kind) {
      const int64_t B = 3;
      std::vector<float> logits(static_cast<size_t>(B * V));
      std::normal_distribution<float> normal(0.0f, 3.0f);
      std::uniform_int_distribution<int> few(0, 6);
      for (float &x : logits) {
        if (kind == 0) x = normal(gen);  // distinct values
        else if (kind == 1) x = static_cast<float>(few(gen) - 3) * 0.5f;  // many ties
        else {  // ties, signed zeros and -inf
          const int c = few(gen);
          x = c == 0 ? -kInf : c == 1 ? -0.0f : c == 2 ? 0.0f : static_cast<float>(c);
        }
      }
      for (double T : temps)
        for (int64_t k : ks)
          for (double p : ps) {
            for (uint32_t seed = 0; seed < (V > 1000 ? 1u : 3u); ++seed) {
              uint32_t state[4] = {0x9e3779b9u * (seed + 1), 12345u + seed, 0xdeadbeefu, 42u};
              uint32_t ref_state[4];
              std::memcpy(ref_state, state, sizeof state);
              const uint8_t rows[3] = {1, static_cast<uint8_t>(seed % 2), 1};
              int32_t tokens[3];
              nt::SampleRequest s;
              s.temperature = T;
              s.top_k = k;
              s.top_p = p;
              s.rng = state;
              s.rows = rows;
              s.tokens = tokens;
              nt::sample_rows(logits.data(), B, V, s, scratch);
              for (int64_t b = 0; b < B; ++b) {
                const int32_t want = rows[b] ? reference_sample(logits.data() + b * V, V, T, k, p, ref_state) : -1;
                CHECK(tokens[b] == want, "V=%ld kind=%d T=%g k=%ld p=%g seed=%u row %ld: %d, reference %d", static_cast<long>(V), kind, T,
                      static_cast<long>(k), p, seed, static_cast<long>(b), tokens[b], want);
                ++compared;
              }
              CHECK(std::memcmp(state, ref_state, sizeof state) == 0, "random state after V=%ld T=%g", static_cast<long>(V), T);
            }
          }
    }
  CHECK(compared > 3000, "compared %d draws", compared);
}

void bad_settings() {
  uint32_t state[4] = {1, 2, 3, 4};
  int32_t tokens[1];
  auto req = [&](double T, int64_t k, double p, uint32_t *rng, int32_t *out) {
    nt::SampleRequest s;
    s.temperature = T;
    s.top_k = k;
    s.top_p = p;
    s.rng = rng;
    s.tokens = out;
    return s;
  };
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(-1, 0, 1, state, tokens)));
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(std::nan(""), 0, 1, state, tokens)));
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(INFINITY, 0, 1, state, tokens)));
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(1, -1, 1, state, tokens)));
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(1, 0, 0, state, tokens)));
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(1, 0, 1.5, state, tokens)));
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(1, 0, 1, nullptr, tokens)));
  CHECK_THROWS_CODE(nt::code::kInvalidInput, nt::check_sample_request(req(0, 0, 1, nullptr, nullptr)));
  nt::check_sample_request(req(0, 0, 1, nullptr, tokens));  // greedy needs no random state
}

}  // namespace

int main() {
  random_cases();
  bad_settings();
  return report("test-sampling");
}
