// A loaded model: config, hook table, float32 weights in HF Linear layout, and the forward
// loop that fires hooks. No N-API here, so C++ tests link it without Node.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/edits.h"
#include "engine/hooks.h"
#include "ops/thread-pool.h"

namespace nt {

struct Linear {
  std::vector<float> w;  // [out, in]
  std::vector<float> b;  // [out] or empty
  int64_t out = 0, in = 0;
};

struct Norm {
  std::vector<float> w;  // [d]
  std::vector<float> b;  // [d] or empty (RMSNorm)
};

struct LayerWeights {
  Norm ln1, ln2;
  Linear q, k, v, o;
  Linear gate;  // gated MLPs only
  Linear up;    // W_in: c_fc / up_proj
  Linear down;  // W_out: c_proj / down_proj
};

struct LoadOptions {
  int threads = 0;  // 0 = hardware concurrency
};

// Keys and values of every layer for `batch` sequences of up to `capacity` positions, so that
// generation runs each new token against the cached prefix. Left padding is fixed by the
// first forward that fills it.
struct KvCache {
  int64_t batch = 0, capacity = 0, heads = 0, d_head = 0;
  std::vector<std::vector<float>> k, v;  // [layer] -> [batch, capacity, kv_head, d_head] (after rotary)
  int64_t len = 0;                       // positions filled
  std::vector<int32_t> pad;              // [batch] left padding
  int64_t prompt_len = 0;                // padded length of the first forward (the prompt)
  int steps = 0;                         // forwards run so far
};

struct ForwardRequest {
  const int32_t *tokens = nullptr;  // [batch, pos]
  int64_t batch = 0;
  int64_t pos = 0;
  const int32_t *pad = nullptr;     // [batch] left padding (first forward of a cache, or no cache)
  KvCache *cache = nullptr;         // appends this forward's keys and values when non-null
  float *logits = nullptr;          // [batch, pos, vocab], or [batch, vocab] with logits_last_only; null skips the LM head
  bool logits_last_only = false;
};

class Model {
 public:
  // Loads `dir` (config.json + safetensors). Throws EngineError.
  static std::unique_ptr<Model> load(const std::string &dir, const LoadOptions &options);

  const ModelConfig &config() const { return config_; }
  const HookTable &hooks() const { return hooks_; }
  int threads() const { return pool_->size(); }

  // A cache for `batch` sequences of up to `capacity` positions.
  std::unique_ptr<KvCache> create_cache(int64_t batch, int64_t capacity) const;

  // Validates the request (token range, sizes, edits against their hooks) before any
  // compute, then runs it. Runs on one model serialize.
  void forward(const ForwardRequest &req, HookPlan *plan);

 private:
  Model(ModelConfig config) : config_(std::move(config)), hooks_(config_) {}
  void load_weights(const std::string &dir);
  void forward_locked(const ForwardRequest &req, HookPlan *plan);

  ModelConfig config_;
  HookTable hooks_;
  std::unique_ptr<ThreadPool> pool_;
  std::mutex run_mutex_;

  std::vector<float> embed_;      // [vocab, d_model]
  std::vector<float> pos_embed_;  // [n_ctx, d_model] (learned positions only)
  std::vector<LayerWeights> layers_;
  Norm ln_final_;
  std::vector<float> lm_head_;    // [vocab, d_model]; empty when tied to embed_
};

}  // namespace nt
