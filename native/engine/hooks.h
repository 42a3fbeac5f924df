// The hook table: every TransformerLens hook point of a model, its name and shape, defined
// once here. TypeScript reads it through the addon (src/hooks/) and src/hooks/names.ts types it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/config.h"

namespace nt {

enum class HookKind : uint8_t {
  Embed,            // hook_embed            [batch, pos, d_model]
  PosEmbed,         // hook_pos_embed        [batch, pos, d_model] (learned positions only)
  ResidPre,         // hook_resid_pre        [batch, pos, d_model]
  // TransformerLens's optional per-head copies of resid_pre that feed ln1 and the q/k/v
  // projections (use_attn_in / use_split_qkv_input); computed only when hooked.
  AttnIn,           // hook_attn_in          [batch, pos, head, d_model] (n_kv_heads == n_heads only)
  QInput,           // hook_q_input          [batch, pos, head, d_model]
  KInput,           // hook_k_input          [batch, pos, kv_head, d_model]
  VInput,           // hook_v_input          [batch, pos, kv_head, d_model]
  Ln1Scale,         // ln1.hook_scale        [batch, pos, 1]
  Ln1Normalized,    // ln1.hook_normalized   [batch, pos, d_model]
  AttnQ,            // attn.hook_q           [batch, pos, head, d_head]
  AttnK,            // attn.hook_k           [batch, pos, kv_head, d_head]
  AttnV,            // attn.hook_v           [batch, pos, kv_head, d_head]
  // QK-norm (Gemma 3, Qwen3): RMSNorm of each head's q / k over d_head, before rotary.
  AttnQNormScale,   // attn.q_norm.hook_scale      [batch, pos, head, 1]
  AttnQNormNormalized, // attn.q_norm.hook_normalized [batch, pos, head, d_head] (x / scale, before the weight)
  AttnKNormScale,   // attn.k_norm.hook_scale      [batch, pos, kv_head, 1]
  AttnKNormNormalized, // attn.k_norm.hook_normalized [batch, pos, kv_head, d_head]
  AttnRotQ,         // attn.hook_rot_q       [batch, pos, head, d_head] (rotary only)
  AttnRotK,         // attn.hook_rot_k       [batch, pos, kv_head, d_head] (rotary only)
  AttnScores,       // attn.hook_attn_scores [batch, head, pos, key_pos]
  AttnPattern,      // attn.hook_pattern     [batch, head, pos, key_pos]
  AttnZ,            // attn.hook_z           [batch, pos, head, d_head]
  AttnResult,       // attn.hook_result      [batch, pos, head, d_model] (z_h @ W_O[h], before the sum and bias)
  Ln1PostScale,     // ln1_post.hook_scale   [batch, pos, 1] (Gemma's post-attention norm)
  Ln1PostNormalized,// ln1_post.hook_normalized [batch, pos, d_model]
  AttnOut,          // hook_attn_out         [batch, pos, d_model] (after ln1_post where there is one)
  ResidMid,         // hook_resid_mid        [batch, pos, d_model] (not with a parallel residual)
  MlpIn,            // hook_mlp_in           [batch, pos, d_model] (a copy of ln2's input: resid_mid, or resid_pre)
  Ln2Scale,         // ln2.hook_scale        [batch, pos, 1]
  Ln2Normalized,    // ln2.hook_normalized   [batch, pos, d_model]
  MlpPre,           // mlp.hook_pre          [batch, pos, d_mlp]
  MlpPreLinear,     // mlp.hook_pre_linear   [batch, pos, d_mlp] (gated MLPs only)
  MlpPost,          // mlp.hook_post         [batch, pos, d_mlp]
  Ln2PostScale,     // ln2_post.hook_scale   [batch, pos, 1] (Gemma's post-feedforward norm)
  Ln2PostNormalized,// ln2_post.hook_normalized [batch, pos, d_model]
  MlpOut,           // hook_mlp_out          [batch, pos, d_model] (after ln2_post where there is one)
  ResidPost,        // hook_resid_post       [batch, pos, d_model]
  LnFinalScale,     // ln_final.hook_scale   [batch, pos, 1]
  LnFinalNormalized,// ln_final.hook_normalized [batch, pos, d_model]
  UnembedIn,        // unembed.hook_in       [batch, pos, d_model] (ln_final's output)
  UnembedOut,       // unembed.hook_out      [batch, pos, d_vocab] (logits before the final soft-cap)
  // An attached SAE's hooks, `<hook>.hook_sae_*` (engine/sae.h); d_in = the hook's width
  // (heads x d_head flattened for attn.hook_z).
  SaeInput,         // hook_sae_input        [batch, pos, d_in]
  SaeActsPre,       // hook_sae_acts_pre     [batch, pos, d_sae]
  SaeActsPost,      // hook_sae_acts_post    [batch, pos, d_sae]
  SaeRecons,        // hook_sae_recons       [batch, pos, d_in]
  SaeError,         // hook_sae_error        the hook's shape
  SaeOutput,        // hook_sae_output       the hook's shape
  Count
};

// A shape with symbolic dims: -1 = batch, -2 = pos (query positions of this forward),
// -3 = key_pos (positions attended to: cached + new; equals pos without a KV cache).
constexpr int64_t kDimBatch = -1;
constexpr int64_t kDimPos = -2;
constexpr int64_t kDimKeyPos = -3;

struct HookPoint {
  std::string name;
  HookKind kind;
  int layer;                    // -1 for model-level hooks
  bool after_blocks = false;    // ln_final, unembed and SAE hooks on them: not reached with stopAtLayer
  std::vector<int64_t> shape;   // symbolic, see kDimBatch / kDimPos
};

const char *hook_kind_suffix(HookKind kind);  // e.g. "attn.hook_q"
bool hook_kind_per_block(HookKind kind);

class HookTable {
 public:
  explicit HookTable(const ModelConfig &config);

  const std::vector<HookPoint> &points() const { return points_; }
  // Index of a hook name, or -1.
  int find(const std::string &name) const;
  // Index of (kind, layer), or -1 if the model has no such hook.
  int index(HookKind kind, int layer) const {
    return slot_[static_cast<size_t>(layer + 1) * static_cast<size_t>(HookKind::Count) + static_cast<size_t>(kind)];
  }
  // Concrete shape and element count of a hook for `batch` sequences of `pos` new tokens
  // attending to `key_pos` positions (pos, without a KV cache).
  std::vector<int64_t> shape(int index, int64_t batch, int64_t pos, int64_t key_pos) const;
  int64_t numel(int index, int64_t batch, int64_t pos, int64_t key_pos) const;

  // Replaces the SAE hooks: six points per (base hook, d_sae), appended after the model's own
  // hooks in the order given. Returns the index of each SAE's first point (hook_sae_input).
  std::vector<int> set_saes(const std::vector<std::pair<int, int64_t>> &saes);
  // Number of the model's own hooks (SAE hooks come after them).
  int base_count() const { return base_count_; }
  // Bumped with every change of the SAE hooks: a run checks it was planned for this table.
  uint64_t version = 0;

 private:
  std::vector<HookPoint> points_;
  int base_count_ = 0;
  std::map<std::string, int> by_name_;
  std::vector<int> slot_;  // [(layer + 1) * Count + kind] -> index or -1
};

}  // namespace nt
