// Builds the per-model hook table from the config; names and order follow TransformerLens.
#include "engine/hooks.h"

namespace nt {

namespace {

struct KindInfo {
  const char *suffix;
  bool per_block;
};

const KindInfo kKinds[] = {
    {"hook_embed", false},
    {"hook_pos_embed", false},
    {"hook_resid_pre", true},
    {"hook_attn_in", true},
    {"hook_q_input", true},
    {"hook_k_input", true},
    {"hook_v_input", true},
    {"ln1.hook_scale", true},
    {"ln1.hook_normalized", true},
    {"attn.hook_q", true},
    {"attn.hook_k", true},
    {"attn.hook_v", true},
    {"attn.q_norm.hook_scale", true},
    {"attn.q_norm.hook_normalized", true},
    {"attn.k_norm.hook_scale", true},
    {"attn.k_norm.hook_normalized", true},
    {"attn.hook_rot_q", true},
    {"attn.hook_rot_k", true},
    {"attn.hook_attn_scores", true},
    {"attn.hook_pattern", true},
    {"attn.hook_z", true},
    {"attn.hook_result", true},
    {"ln1_post.hook_scale", true},
    {"ln1_post.hook_normalized", true},
    {"hook_attn_out", true},
    {"hook_resid_mid", true},
    {"hook_mlp_in", true},
    {"ln2.hook_scale", true},
    {"ln2.hook_normalized", true},
    {"mlp.hook_pre", true},
    {"mlp.hook_pre_linear", true},
    {"mlp.hook_post", true},
    {"ln2_post.hook_scale", true},
    {"ln2_post.hook_normalized", true},
    {"hook_mlp_out", true},
    {"hook_resid_post", true},
    {"ln_final.hook_scale", false},
    {"ln_final.hook_normalized", false},
    {"unembed.hook_in", false},
    {"unembed.hook_out", false},
    {"hook_sae_input", false},
    {"hook_sae_acts_pre", false},
    {"hook_sae_acts_post", false},
    {"hook_sae_recons", false},
    {"hook_sae_error", false},
    {"hook_sae_output", false},
};
static_assert(sizeof(kKinds) / sizeof(kKinds[0]) == static_cast<size_t>(HookKind::Count), "hook kind table out of sync");

bool model_has(const ModelConfig &c, HookKind k) {
  switch (k) {
    case HookKind::PosEmbed: return !c.rotary;
    case HookKind::AttnRotQ:
    case HookKind::AttnRotK: return c.rotary;
    case HookKind::MlpPreLinear: return c.gated_mlp;
    case HookKind::ResidMid: return !c.parallel_residual;
    case HookKind::AttnIn: return c.n_kv_heads == c.n_heads;  // TransformerLens refuses use_attn_in with grouped queries
    case HookKind::AttnQNormScale:
    case HookKind::AttnQNormNormalized:
    case HookKind::AttnKNormScale:
    case HookKind::AttnKNormNormalized: return c.qk_norm;
    case HookKind::Ln1PostScale:
    case HookKind::Ln1PostNormalized:
    case HookKind::Ln2PostScale:
    case HookKind::Ln2PostNormalized: return c.sandwich_norms;
    default: return true;
  }
}

std::vector<int64_t> kind_shape(const ModelConfig &c, HookKind k) {
  const int64_t B = kDimBatch, P = kDimPos;
  switch (k) {
    case HookKind::Ln1Scale:
    case HookKind::Ln2Scale:
    case HookKind::Ln1PostScale:
    case HookKind::Ln2PostScale:
    case HookKind::LnFinalScale: return {B, P, 1};
    case HookKind::AttnQNormScale: return {B, P, c.n_heads, 1};
    case HookKind::AttnKNormScale: return {B, P, c.n_kv_heads, 1};
    case HookKind::AttnQNormNormalized: return {B, P, c.n_heads, c.d_head};
    case HookKind::AttnKNormNormalized: return {B, P, c.n_kv_heads, c.d_head};
    case HookKind::AttnIn:
    case HookKind::QInput:
    case HookKind::AttnResult: return {B, P, c.n_heads, c.d_model};
    case HookKind::KInput:
    case HookKind::VInput: return {B, P, c.n_kv_heads, c.d_model};
    case HookKind::UnembedOut: return {B, P, c.d_vocab};
    case HookKind::AttnQ:
    case HookKind::AttnRotQ:
    case HookKind::AttnZ: return {B, P, c.n_heads, c.d_head};
    case HookKind::AttnK:
    case HookKind::AttnV:
    case HookKind::AttnRotK: return {B, P, c.n_kv_heads, c.d_head};
    case HookKind::AttnScores:
    case HookKind::AttnPattern: return {B, c.n_heads, P, kDimKeyPos};
    case HookKind::MlpPre:
    case HookKind::MlpPreLinear:
    case HookKind::MlpPost: return {B, P, c.d_mlp};
    default: return {B, P, c.d_model};
  }
}

}  // namespace

const char *hook_kind_suffix(HookKind kind) { return kKinds[static_cast<size_t>(kind)].suffix; }
bool hook_kind_per_block(HookKind kind) { return kKinds[static_cast<size_t>(kind)].per_block; }

HookTable::HookTable(const ModelConfig &c) {
  const size_t n_kinds = static_cast<size_t>(HookKind::Count);
  slot_.assign(static_cast<size_t>(c.n_layers + 1) * n_kinds, -1);
  auto add = [&](HookKind k, int layer) {
    if (!model_has(c, k)) return;
    HookPoint p;
    p.kind = k;
    p.layer = layer;
    p.name = layer < 0 ? std::string(hook_kind_suffix(k)) : "blocks." + std::to_string(layer) + "." + hook_kind_suffix(k);
    p.shape = kind_shape(c, k);
    p.after_blocks = k == HookKind::LnFinalScale || k == HookKind::LnFinalNormalized || k == HookKind::UnembedIn || k == HookKind::UnembedOut;
    int idx = static_cast<int>(points_.size());
    by_name_[p.name] = idx;
    slot_[static_cast<size_t>(layer + 1) * n_kinds + static_cast<size_t>(k)] = idx;
    points_.push_back(std::move(p));
  };
  add(HookKind::Embed, -1);
  add(HookKind::PosEmbed, -1);
  for (int l = 0; l < c.n_layers; ++l)
    for (size_t k = static_cast<size_t>(HookKind::ResidPre); k <= static_cast<size_t>(HookKind::ResidPost); ++k)
      add(static_cast<HookKind>(k), l);
  add(HookKind::LnFinalScale, -1);
  add(HookKind::LnFinalNormalized, -1);
  add(HookKind::UnembedIn, -1);
  add(HookKind::UnembedOut, -1);
  base_count_ = static_cast<int>(points_.size());
}

std::vector<int> HookTable::set_saes(const std::vector<std::pair<int, int64_t>> &saes) {
  points_.resize(static_cast<size_t>(base_count_));
  by_name_.clear();
  for (size_t i = 0; i < points_.size(); ++i) by_name_[points_[i].name] = static_cast<int>(i);
  std::vector<int> first;
  for (const auto &[base, d_sae] : saes) {
    const HookPoint b = points_[static_cast<size_t>(base)];
    int64_t d_in = 1;
    for (size_t i = 2; i < b.shape.size(); ++i) d_in *= b.shape[i];
    first.push_back(static_cast<int>(points_.size()));
    for (int k = 0; k < 6; ++k) {
      HookPoint p;
      p.kind = static_cast<HookKind>(static_cast<int>(HookKind::SaeInput) + k);
      p.layer = b.layer;
      p.after_blocks = b.after_blocks;
      p.name = b.name + "." + hook_kind_suffix(p.kind);
      switch (p.kind) {
        case HookKind::SaeActsPre:
        case HookKind::SaeActsPost: p.shape = {kDimBatch, kDimPos, d_sae}; break;
        case HookKind::SaeError:
        case HookKind::SaeOutput: p.shape = b.shape; break;
        default: p.shape = {kDimBatch, kDimPos, d_in};
      }
      by_name_[p.name] = static_cast<int>(points_.size());
      points_.push_back(std::move(p));
    }
  }
  return first;
}

int HookTable::find(const std::string &name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

std::vector<int64_t> HookTable::shape(int index, int64_t batch, int64_t pos, int64_t key_pos) const {
  std::vector<int64_t> s = points_[static_cast<size_t>(index)].shape;
  for (int64_t &d : s) {
    if (d == kDimBatch) d = batch;
    else if (d == kDimPos) d = pos;
    else if (d == kDimKeyPos) d = key_pos;
  }
  return s;
}

int64_t HookTable::numel(int index, int64_t batch, int64_t pos, int64_t key_pos) const {
  int64_t n = 1;
  for (int64_t d : shape(index, batch, pos, key_pos)) n *= d;
  return n;
}

}  // namespace nt
