// A loaded model: config, hook table, weights on a backend (CPU in process, or a loaded
// library such as CUDA) in HF Linear layout, and the forward loop that fires hooks. No N-API
// here, so C++ tests link it without Node.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"
#include "engine/edits.h"
#include "engine/hooks.h"
#include "engine/sae.h"
#include "engine/sampling.h"
#include "engine/task.h"

namespace nt {

class Checkpoint;

// Throws ERR_INVALID_INPUT when a x b floats would not be addressable (limits every size a
// request implies).
void check_finite_size(int64_t a, int64_t b, const char *what);
struct BackwardRequest;
struct LayerTape;

struct Linear {
  DeviceBuffer w;  // [out, in], `dtype`
  DeviceBuffer b;  // [out] float32, or empty
  int64_t out = 0, in = 0;
  nt_dtype dtype = NT_F32;
};

struct Norm {
  DeviceBuffer w;  // [d] float32
  DeviceBuffer b;  // [d] float32, or empty (RMSNorm)
};

struct LayerWeights {
  Norm ln1, ln2;
  Norm ln1_post, ln2_post;  // sandwich norms (Gemma 2/3) only
  Norm q_norm, k_norm;      // [d_head], QK-norm (Gemma 3, Qwen3) only
  Linear q, k, v, o;
  Linear gate;  // gated MLPs only
  Linear up;    // W_in: c_fc / up_proj
  Linear down;  // W_out: c_proj / down_proj
};

struct LoadOptions {
  int threads = 0;                // 0 = hardware concurrency
  std::string device = "cpu";     // "cpu", or a backend library name ("cuda")
  nt_dtype dtype = NT_F32;        // weight matrices on the device (CPU: F32 or BF16)
  // The precision GEMM inputs are rounded to (backend-abi.h nt_compute): F32, or BF16 (CPU, with
  // BF16 weights). Unset: F32 on the CPU; a backend without compute modes (CUDA) computes in
  // its weight dtype, and any other request is refused.
  std::optional<nt_dtype> compute;
  std::string backend_dir;        // where backend libraries live (next to the addon)
  std::vector<std::string> library_dirs;  // more folders for their dependencies (cuBLAS from pip wheels)
  TaskControl *control = nullptr;  // bytes read so far / in all, and cancellation between tensors
};

// Keys and values of every layer for `batch` sequences of up to `capacity` positions, on the
// model's backend, so that generation runs each new token against the cached prefix. Left
// padding is fixed by the first forward that fills it.
struct KvCache {
  std::shared_ptr<Backend> backend;
  int64_t batch = 0, capacity = 0, heads = 0, d_head = 0;
  std::vector<DeviceBuffer> k, v;  // [layer] -> [batch, capacity, kv_head, d_head] (after rotary)
  int64_t len = 0;                 // positions filled
  std::vector<int32_t> pad;        // [batch] left padding
  int64_t prompt_len = 0;          // padded length of the first forward (the prompt)
  int steps = 0;                   // forwards run so far
};

struct ForwardRequest {
  const int32_t *tokens = nullptr;  // [batch, pos], host
  int64_t batch = 0;
  int64_t pos = 0;
  const int32_t *pad = nullptr;     // [batch] left padding (first forward of a cache, or no cache), host
  KvCache *cache = nullptr;         // appends this forward's keys and values when non-null
  float *logits = nullptr;          // host [batch, pos, vocab], or [batch, vocab] with logits_last_only; null skips the LM head
  bool logits_last_only = false;
  const int32_t *right_pad = nullptr;  // [batch] trailing pad tokens (right-padded rows, no cache), host; the last-only logits read row b at pos - 1 - right_pad[b]
  uint64_t hooks_version = 0;       // HookTable::version the plan was built for
  const TaskControl *control = nullptr;  // checked before each block: cancelling aborts the forward (ERR_ABORTED)
  int stop_at_layer = -1;           // run blocks [0, stop_at_layer) only (TransformerLens's exclusive stop); -1 = all
  std::vector<SaeFeatures> sae_features;  // top-k / firing counts of attached SAEs
  // Picks the next token of each row from the last-position logits once the head and its hooks
  // have run (needs logits_last_only; `logits` may be null: they then stay in the model).
  bool sample = false;
  SampleRequest sampling;
};

class Model {
 public:
  // Loads `dir` (config.json + safetensors) onto the backend of `options`. Throws EngineError.
  static std::unique_ptr<Model> load(const std::string &dir, const LoadOptions &options);

  const ModelConfig &config() const { return config_; }
  // The current hook table (a snapshot: attaching or detaching an SAE swaps in a new one).
  std::shared_ptr<const HookTable> hooks() const { return std::atomic_load(&hooks_); }
  const Backend &backend() const { return *be_; }
  int threads() const { return threads_; }
  nt_dtype dtype() const { return dtype_; }
  nt_dtype compute() const { return compute_; }  // what GEMM inputs are rounded to (LoadOptions::compute)

  // A cache for `batch` sequences of up to `capacity` positions.
  std::unique_ptr<KvCache> create_cache(int64_t batch, int64_t capacity) const;
  // Continuous batching (engine/cache-ops.cc). Moves every row's positions [0, len) `delta`
  // later (> 0) or earlier (< 0, by at most the smallest left padding), pads and len with them.
  void shift_cache(KvCache &cache, int64_t delta);
  // Copies row `src_row` of `src` into row `row` of `dst` so that it ends at dst.len (src.len <=
  // dst.len) and sets the row's left padding to match; with no `src` the row is emptied (its
  // padding becomes dst.len). Forwards then run the row as if it had run alone.
  void admit_to_cache(KvCache &dst, int64_t row, const KvCache *src, int64_t src_row = 0);

  // Validates the request (token range, sizes, edits against their hooks) before any
  // compute, then runs it. Runs on one model serialize.
  void forward(const ForwardRequest &req, HookPlan *plan);

  // Runs req.forward with `plan` (edits, captures and JS functions as in forward), then the
  // backward pass from the metric or seeds (engine/backward.h) down to the embeddings, firing
  // `grad_plan` at each hook with the gradient of the metric with respect to that hook's
  // output: captures ([replicas, ...hook shape]), edits and host functions on gradients.
  // Throws EngineError; the model stays usable.
  void backward(const BackwardRequest &req, HookPlan *plan, HookPlan *grad_plan);

  // Attaches an SAE at hook `base` (one per hook; the hook table gains its six hooks) or
  // detaches it. Wait for running forwards. Throws EngineError (ERR_SAE_MISMATCH: d_in is not
  // the hook's width; ERR_INVALID_INPUT: not a [batch, pos, ...] hook, or one already attached).
  void attach_sae(int base, SaeParams params, bool use_error_term);
  void detach_sae(int base);

 private:
  friend class Pass;
  friend class Backward;
  Model(ModelConfig config) : config_(std::move(config)), hooks_(std::make_shared<const HookTable>(config_)) {}
  void load_weights(const Checkpoint &ck);  // after verify_checkpoint (weights.cc)
  void forward_locked(const ForwardRequest &req, HookPlan *plan);
  // Every check of forward() that does not need the request to run (under run_mutex_).
  void validate_request(const ForwardRequest &req, HookPlan *plan) const;
  // Workspace buffer `slot` with room for at least `floats` (grown, never shrunk).
  DeviceBuffer &scratch(size_t slot, int64_t floats);
  // Host memory for logits that are sampled but not returned (grown, never shrunk).
  float *sample_logits(int64_t floats);

  ModelConfig config_;
  std::shared_ptr<const HookTable> hooks_;  // replaced (atomically, under run_mutex_) by attach/detach
  std::shared_ptr<Backend> be_;
  int threads_ = 1;
  nt_dtype dtype_ = NT_F32;
  nt_dtype compute_ = NT_F32;
  std::mutex run_mutex_;

  DeviceBuffer embed_;      // [vocab, d_model], dtype_
  DeviceBuffer pos_embed_;  // [n_ctx, d_model], dtype_ (learned positions only)
  std::vector<LayerWeights> layers_;
  Norm ln_final_;
  DeviceBuffer lm_head_;    // [vocab, d_model] in lm_head_dtype_ (maybe packed); empty when it is embed_
  nt_dtype lm_head_dtype_ = NT_F32;
  DeviceBuffer inv_freq_;   // [rotary_dim / 2] float32 (rotary only)
  DeviceBuffer inv_freq_local_;  // sliding layers' frequencies (Gemma 3), else empty
  DeviceBuffer embed_scale_;     // [d_model] filled with config.embed_scale (Gemma), else empty
  std::array<DeviceBuffer, 32> workspace_;  // activations (0-13 forward, 14-30 backward), reused across runs (see scratch)
  std::shared_ptr<LayerTape> tape_;          // the backward's recomputed block, reused across runs
  std::vector<float> sample_logits_;         // [batch, vocab] logits a run samples without returning them
  SampleScratch sample_scratch_;
  std::vector<std::unique_ptr<AttachedSae>> saes_;  // in attach order; their hooks follow the model's
  AttachedSae *sae_at(int index) const;
  void rebuild_sae_hooks();  // under run_mutex_
};

}  // namespace nt
