// One forward pass over the backend ABI, split into units the forward loop and the backward
// pass share: the embeddings, one block (`layer`) and the head. A block run with a LayerTape
// keeps what its backward needs (engine/backward.cc recomputes one block at a time from its
// saved input). Hooks fire through the run's plan at every point, the same in both.
#pragma once

#include <map>
#include <vector>

#include "engine/model.h"

namespace nt {

// An edit's vectors and lists uploaded to the backend, for device-side application.
struct DeviceEdit {
  DeviceBuffer vec, positions, rows, heads, source;
  nt_edit e{};
};
DeviceEdit upload_edit(const std::shared_ptr<Backend> &be, const Edit &edit);

// Runs `plan`'s actions and capture at hook `idx` on backend memory `data` of `shape`: on the
// buffer itself for host-memory backends, else edits on the device (uploaded once into
// `uploaded`, keyed by the plan's own edits, which must outlive it; `device_pad` is ctx.pad on
// the backend, or null to upload it) and callbacks and captures through host copies.
// `edits_only` replays the edits alone (a backward recompute).
void fire_plan_on(const std::shared_ptr<Backend> &be, const HookTable &table, HookPlan &plan, int idx, float *data,
                  const std::vector<int64_t> &shape, const HookContext &ctx, std::map<const Edit *, DeviceEdit> &uploaded,
                  const int32_t *device_pad, bool edits_only = false);

// What one block's backward reads, kept by `Pass::layer`: forward values after their hooks
// (the values that flowed on), each `replicas` times over (one copy per backward row block).
struct LayerTape {
  enum Slot {
    X1,          // resid_pre after its hook (ln1's input; attn_in/split copies read it)
    X2,          // resid_mid after its hook (non-parallel; ln2's input without hook_mlp_in)
    MlpIn,       // hook_mlp_in after its hook (ln2's input when hooked)
    ScaleLn1, ScaleLn2, ScaleLn1Post, ScaleLn2Post, ScaleQ, ScaleK,  // scales the norms divided by
    QPre, KPre,  // q, k before QK-norm
    Q, K, V,     // attention inputs (after QK-norm and rotary)
    Capped,      // soft-capped scores before hook_attn_scores (soft-capping only)
    Pattern,     // after hook_pattern
    O,           // attention output before ln1_post (sandwich norms)
    Pre, Up,     // mlp pre (gate) and pre_linear (up) after their hooks
    M,           // mlp output before ln2_post (sandwich norms)
    AttnIn, SplitQ, SplitK, SplitV,  // TransformerLens's per-head input copies, after their hooks
    kSlots
  };
  int64_t replicas = 1;
  std::map<int, DeviceBuffer> slots;     // kept across blocks and runs (buffers are reused)
  std::vector<char> live;                // slots written by the block now on the tape
  std::map<int, DeviceBuffer> pre_edit;  // hook index -> value before its actions (projectionCap VJPs)
  void clear() {
    live.assign(kSlots, 0);
    pre_edit.clear();
  }
  const float *get(Slot s) const {
    auto it = slots.find(s);
    return it == slots.end() || !live[static_cast<size_t>(s)] ? nullptr : it->second.f32();
  }
};

class Pass {
 public:
  // Run: the plan as given. Save: also keeps each JS function's output (for Replay). Replay:
  // edits only, JS function outputs restored from `js_out`, no captures (a backward recompute).
  enum class Mode { Run, Save, Replay };

  Pass(Model &model, const ForwardRequest &req, HookPlan *plan, Mode mode);

  void embed();                         // tokens -> x, hook_embed / hook_pos_embed
  void layer(int L, LayerTape *tape);   // block L on x
  void head();                          // ln_final, unembed hooks, logits into req.logits
  void finish();                        // KV-cache bookkeeping and a final synchronize

  DeviceBuffer &x() { return x_; }      // the residual stream [M, d]
  float *logits() const { return logits_; }  // host logits head() writes: req.logits, or the model's for sampling
  const HookContext &context() const { return ctx_; }
  const int32_t *device_pad() const { return pad_; }
  std::map<int, std::vector<float>> js_out;  // hook index -> output of its JS functions (Save / Replay)

  // Hook index of `kind` at `layer` when the plan (or an attached SAE) acts there, else -1.
  int active(HookKind kind, int layer) const;
  bool edited(int idx) const;  // whether a hook can change what flows on
  void fire(int idx, float *data);

 private:
  friend class Backward;
  void fire_plan(int idx, float *data);
  void fire_scale_edited(int si, float *sc, float *o, int64_t rows, int64_t width);
  void norm_rows(const Norm &n, const float *in, float *o, int64_t rows, int64_t width, float *sc, HookKind scale_kind,
                 HookKind normalized_kind, int layer, LayerTape *tape, int tape_slot);
  void rotary(float *t, int64_t heads, const float *freq);
  void linear(const Linear &l, const float *in, float *o);
  void copy_head(float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch, int64_t width);
  void repeat_heads(const float *src, int64_t heads, DeviceBuffer &dst);
  void linear_per_head(const Norm &n, const Linear &l, const float *in, int64_t heads, float *o);
  void add_row_vector(float *t, int64_t rows, int64_t width, const float *vec);
  // Row b's last real position (its last position unless right-padded).
  int64_t last_index(int64_t b) const { return T - 1 - (req_.right_pad ? req_.right_pad[b] : 0); }
  DeviceBuffer buf(int64_t floats) const { return DeviceBuffer(be_, static_cast<size_t>(floats) * sizeof(float)); }
  // Copies n floats into the tape's slot, `replicas` times over.
  void keep(LayerTape *tape, int slot, const float *src, int64_t n);

  Model &m_;
  const ModelConfig &c_;
  const ForwardRequest &req_;
  HookPlan *plan_;
  Mode mode_;
  std::shared_ptr<Backend> be_;
  const nt_backend_api &api_;
  nt_backend *bx_;
  KvCache *cache_;
  int64_t B, T, M, d, H, G, D, dq, dkv, pos0, KV, R;
  bool partial_;
  HookContext ctx_;
  DeviceBuffer tokens_, pad_buf_;  // uploads for backends without host memory
  const int32_t *tokens_ptr_ = nullptr;  // [B, T] ids on the backend
  const int32_t *pad_ = nullptr;
  DeviceBuffer &x_, &h_, &scale_, &q_, &k_, &v_, &z_, &out_, &mlp_a_, &mlp_b_, &mlp_out_, &head_scale_, &rot_;
  float *logits_;  // req.logits, or the model's sample_logits when the run samples without returning them
  DeviceBuffer pattern_;
  std::map<const Edit *, DeviceEdit> uploaded_;
  LayerTape *tape_ = nullptr;  // the tape of the block running, if any
};

}  // namespace nt
