// Normalized model configuration parsed from an HF config.json, for every supported family.
// Both rope conventions are accepted: classic rope_theta/rope_scaling and transformers-5
// rope_parameters. Reference: HF transformers configuration_*.py; tests in test/families.test.ts, test/load-robustness.test.ts, test/errors.test.ts and test/native/test-io.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/json.h"

namespace nt {

enum class Family { GPT2, Llama, Mistral, Qwen2, GPTNeoX, Gemma2, Gemma3, Qwen3 };
enum class NormKind { LayerNorm, RMSNorm };
enum class Activation { GeluTanh, GeluErf, Silu, Relu };

const char *family_name(Family f);
const char *activation_name(Activation a);

struct RopeConfig {
  std::string type = "default";  // default | linear | llama3
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 0.0;
};

struct ModelConfig {
  Family family = Family::GPT2;
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int d_head = 0;
  int d_mlp = 0;
  int d_vocab = 0;
  int n_ctx = 0;  // max positions
  float norm_eps = 1e-5f;
  NormKind norm = NormKind::LayerNorm;
  Activation act = Activation::GeluTanh;
  bool gated_mlp = false;
  bool rotary = false;  // false: learned absolute position embeddings (GPT-2)
  bool tied_embeddings = false;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  float attn_scale = 1.0f;                // multiplies q·k
  bool scale_attn_by_inverse_layer_idx = false;  // GPT-2 option: scores also / (layer + 1)
  std::vector<int> sliding_window;        // per layer; 0 = full causal attention
  RopeConfig rope;
  std::vector<float> inv_freq;            // [rotary_dim / 2], rotary models only
  int rotary_dim = 0;                     // dims rotated per head: d_head, less for GPT-NeoX's partial rotary
  std::vector<float> inv_freq_local;      // sliding layers' frequencies where they differ (Gemma 3); else empty
  bool parallel_residual = false;         // GPT-NeoX: attn and mlp both read resid_pre (no resid_mid)
  float embed_scale = 0.0f;               // multiplies token embeddings (Gemma: sqrt(d_model)); 0 = none
  bool norm_plus_one = false;             // Gemma RMSNorm scales by (1 + w): folded into w at load
  bool sandwich_norms = false;            // Gemma 2/3: ln1_post / ln2_post on the attn / mlp outputs
  bool qk_norm = false;                   // Gemma 3, Qwen3: RMSNorm over d_head of q and k, before rotary
  float attn_softcap = 0.0f;              // Gemma 2: scores = cap * tanh(scores / cap) before the mask; 0 = none
  float final_softcap = 0.0f;             // Gemma 2: logits = cap * tanh(logits / cap); 0 = none
};

// Largest values config.json may hold, far above every released checkpoint (largest known in
// brackets), so that a malformed config is refused before anything is sized from it. Past a
// limit: ERR_UNSUPPORTED_CONFIG. The checkpoint's tensor shapes are then checked against the
// config (verify_checkpoint) before any weight or hook table is allocated.
namespace limits {
inline constexpr int kLayers = 1024;          // [126]
inline constexpr int kHeads = 1024;           // attention and key/value heads [232]
inline constexpr int kDModel = 1 << 17;       // hidden size, and heads x d_head [16384]
inline constexpr int kDHead = 4096;           // [256]
inline constexpr int kDMlp = 1 << 20;         // [73728]
inline constexpr int kVocab = 1 << 24;        // [262144]
inline constexpr int kPositions = 1 << 26;    // max positions [10485760]
inline constexpr int kWindow = 1 << 30;       // sliding window (larger: clamped, same as none)
inline constexpr int64_t kMatrix = 1ll << 36;  // elements of one weight matrix [2^31]
}  // namespace limits

// Parses config.json text. Throws ERR_CONFIG_INVALID, ERR_UNSUPPORTED_ARCHITECTURE,
// ERR_UNSUPPORTED_CONFIG (also for a value past `limits`) with the offending key.
ModelConfig parse_model_config(const std::string &text, const std::string &path);

// Rotary inverse frequencies as HF computes them (float32), including llama3/linear scaling.
std::vector<float> rope_inv_freq(const RopeConfig &rope, int rotary_dim);

}  // namespace nt
