// Next-token choice at the end of a forward (after the head and its hooks), the same draws as
// src/generate/sampling.ts: greedy, or temperature -> top-k -> top-p -> one draw from the
// caller's xoshiro128** state. Tests: test/generate-native-sampling.test.ts, test/native/test-sampling.cc.
#pragma once

#include <cstdint>
#include <vector>

namespace nt {

// What to sample from a forward's last-position logits [batch, vocab].
struct SampleRequest {
  double temperature = 0.0;  // 0 picks the first maximum (greedy) and draws nothing
  int64_t top_k = 0;         // keep the k most likely (0 = all)
  double top_p = 1.0;        // keep the smallest most-likely set reaching p (1 = all)
  uint32_t *rng = nullptr;   // [4] xoshiro128** state: one draw per sampled row, advanced in place
  const uint8_t *rows = nullptr;  // [batch] rows to sample (0 = skip: no draw, token -1); null = all
  int32_t *tokens = nullptr;      // [batch] out
};

// Buffers one sampling reuses from the last (runs serialize on a model).
struct SampleScratch {
  std::vector<uint64_t> keys, tmp;  // (descending logit, index) sort keys
  std::vector<double> probs;
};

// The next float in [0, 1) of a xoshiro128** state, as Rng.next() in TypeScript.
double rng_next(uint32_t s[4]);

// Throws EngineError(ERR_INVALID_INPUT) for settings src/generate would refuse too.
void check_sample_request(const SampleRequest &s);

// Picks one token per row of `logits` [batch, vocab] into s.tokens. Order: descending logit,
// ties by index (as the TypeScript sort); probabilities and their sums in double in that order,
// so a seed gives the same tokens as the TypeScript sampler (exp may differ from V8's in the
// last bit: a draw could differ only when it lands within ~1e-16 of a boundary). Logits with
// NaN sort in no specified order.
void sample_rows(const float *logits, int64_t batch, int64_t vocab, const SampleRequest &s, SampleScratch &scratch);

}  // namespace nt
