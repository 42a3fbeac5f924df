// What a backward pass takes: the forward request, a metric on the logits (or seed gradients
// at hooks), stop-gradient masks, and a second hook plan that acts on gradients. The loop is
// Model::backward (engine/backward.cc); tests: test/backward.test.ts against torch autograd.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/edits.h"
#include "engine/model.h"

namespace nt {

// One term of a metric on the final logits (after the final soft-cap) at padded row `row`,
// position `pos`: weight * logit[a] (Logit), weight * (logit[a] - logit[b]) (LogitDiff) or
// weight * log_softmax[a] (LogProb). Mean next-token cross-entropy is LogProb terms of weight
// -1/N over every predicted position.
struct MetricTerm {
  enum Kind : int32_t { Logit = 0, LogitDiff = 1, LogProb = 2 };
  Kind kind = Logit;
  int64_t row = 0, pos = 0;
  int32_t a = 0, b = 0;
  float weight = 1.0f;
};

// Gradient with respect to the logits supplied from outside (a custom metric): a [batch, pos,
// vocab] host tensor, or a host function that receives the logits in `data` and overwrites
// them with d metric / d logits.
struct CustomMetric {
  const float *dlogits = nullptr;
  std::shared_ptr<HookCallback> callback;  // called with hook_index -1
};

// A seed: backward starts at hook `index` with gradient `data` (host, [replicas, ...hook shape]).
struct Seed {
  int index = -1;
  const float *data = nullptr;
};

// Stop-gradient masks of one layer (circuit tracing's local replacement model): attention
// patterns, norm scales (every norm of the layer; ln_final's with `final_norm_scale`) and MLP
// nonlinearities (act(pre), or act(gate) of a gated MLP) are constants in the backward pass.
struct Detach {
  bool pattern = false, norm_scale = false, mlp_act = false;
};

struct BackwardRequest {
  // tokens, batch, pos, pad, stop_at_layer and optional full logits [batch, pos, vocab]; the
  // KV cache and logits_last_only are refused.
  ForwardRequest forward;
  std::vector<MetricTerm> terms;   // the metric, or
  CustomMetric custom;             // or
  std::vector<Seed> seeds;         // (exactly one of the three)
  int64_t replicas = 1;            // seeds' leading axis S: S backward passes from one forward
  std::vector<Detach> detach;      // per layer (empty: none)
  bool final_norm_scale_detached = false;
  float *metric_rows = nullptr;    // host [batch]: the metric's value per row (terms only), or null
  // Bytes of recomputed block internals (tapes) kept from the forward, so that the top blocks
  // that fit are not recomputed; 0 keeps the top block's only (the least memory).
  int64_t keep_bytes = 0;
};

}  // namespace nt
