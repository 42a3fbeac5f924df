// A loaded model: config, hook table, float32 weights in HF Linear layout, and the forward
// loop that fires hooks. No N-API here, so C++ tests link it without Node.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/hooks.h"
#include "ops/thread-pool.h"

namespace nt {

// Receives activations at hook points during a forward. `data` may be edited in place: the
// forward continues from whatever it holds afterwards (captures copy; later, edits write).
class HookSink {
 public:
  virtual ~HookSink() = default;
  // Whether hook `index` (HookTable order) needs firing in this run. Called often: keep cheap.
  virtual bool active(int index) const = 0;
  // `shape` is the concrete shape of `data` ([batch, pos, ...] or [batch, head, pos, pos]).
  virtual void fire(int index, float *data, const std::vector<int64_t> &shape) = 0;
};

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

struct ForwardRequest {
  const int32_t *tokens = nullptr;  // [batch, pos]
  int64_t batch = 0;
  int64_t pos = 0;
  float *logits = nullptr;  // [batch, pos, vocab]; null skips the LM head
};

class Model {
 public:
  // Loads `dir` (config.json + safetensors). Throws EngineError.
  static std::unique_ptr<Model> load(const std::string &dir, const LoadOptions &options);

  const ModelConfig &config() const { return config_; }
  const HookTable &hooks() const { return hooks_; }
  int threads() const { return pool_->size(); }

  // Validates the request (token range, sizes) and runs it. Runs on one model serialize.
  void forward(const ForwardRequest &req, HookSink *sink);

 private:
  Model(ModelConfig config) : config_(std::move(config)), hooks_(config_) {}
  void load_weights(const std::string &dir);
  void forward_locked(const ForwardRequest &req, HookSink *sink);

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
