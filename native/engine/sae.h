// Sparse autoencoders attached at a hook (SAELens semantics, docs/SAE-MATH.md): the SAE reads
// the hook's activation and writes back its reconstruction (plus the error term when asked),
// firing its own hooks `<hook>.hook_sae_input / acts_pre / acts_post / recons / error / output`
// on the way. Host-memory backends only. Reference: test/fixtures/generate_sae.py.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace nt {

enum class SaeArch { Standard, JumpRelu, TopK, Gated };
// expected_average_only_in with a stored factor is Scale (x * factor in, / factor out).
enum class SaeNorm { None, Scale, ConstantNormRescale, LayerNorm };

// What JS hands over: weights as float32 in SAELens's layout.
struct SaeParams {
  SaeArch arch = SaeArch::Standard;
  SaeNorm norm = SaeNorm::None;
  int64_t d_in = 0, d_sae = 0;
  int64_t k = 0;                      // TopK
  bool rescale_acts_by_decoder_norm = false;  // TopK: rank pre * |W_dec[j]|, decode post / |W_dec[j]|
  bool apply_b_dec_to_input = false;
  float norm_scale = 1.0f;            // SaeNorm::Scale
  std::vector<float> W_enc;           // [d_in, d_sae]
  std::vector<float> b_enc;           // [d_sae] (gated: b_gate)
  std::vector<float> W_dec;           // [d_sae, d_in]
  std::vector<float> b_dec;           // [d_in]
  std::vector<float> threshold;       // [d_sae] JumpReLU
  std::vector<float> r_mag, b_mag;    // [d_sae] Gated
};

// The six hooks, in firing order, at `first + SaeHook`.
enum SaeHook { kSaeInput = 0, kSaeActsPre, kSaeActsPost, kSaeRecons, kSaeError, kSaeOutput, kSaeHookCount };
const char *sae_hook_suffix(int which);  // "hook_sae_input", ...

// Feature read-outs for one run of the SAE at `base`, from acts_post as decoded (after edits):
// the k largest per token (k = 0: none), and firing counts (acts_post > 0) per feature over the
// rows with rows[r] != 0 (all rows when rows is null), for feature density over a corpus.
struct SaeFeatures {
  int base = -1;
  int64_t k = 0;
  int32_t *indices = nullptr;  // [batch * pos, k], host
  float *values = nullptr;     // [batch * pos, k], host
  uint32_t *counts = nullptr;  // [d_sae], host, added to (not cleared)
  int64_t counts_len = 0;
  const uint8_t *rows = nullptr;  // [batch * pos], host, optional
};

class AttachedSae {
 public:
  // Validates `p` (sizes, finite values) and uploads the encoder for `be`'s GEMM.
  AttachedSae(std::shared_ptr<Backend> be, int base, SaeParams p, bool use_error_term);

  int base() const { return base_; }
  int first() const { return first_; }
  void set_first(int first) { first_ = first; }
  int64_t d_in() const { return p_.d_in; }
  int64_t d_sae() const { return p_.d_sae; }

  // fire(which, data): runs the plan at hook `first + which` on host data (no-op if unhooked);
  // hooked(which): whether anything but a capture acts there.
  using Fire = std::function<void(int which, float *data)>;
  using Hooked = std::function<bool(int which)>;
  // x: the hook's activation [M, d_in] on the host, replaced in place by the SAE's output.
  void run(float *x, int64_t M, const Fire &fire, const Hooked &edited, const SaeFeatures *features);

 private:
  // pre (and gate, Gated) [M, d_sae] from sae_in [M, d_in]; u is scratch [M, d_in]. Per row,
  // the input normalization keeps what denormalize needs: stats_b the shift (layer_norm's mean)
  // and stats_a the scale (the factor the input was multiplied by; layer_norm: the std).
  void encode(const float *sae_in, int64_t M, float *u, float *pre, float *gate, float *stats_a, float *stats_b);
  void activate(const float *pre, const float *gate, int64_t M, float *post) const;
  void decode(const float *post, int64_t M, float *recons) const;  // recons = post · W_dec + b_dec
  void read_features(const float *post, int64_t M, const SaeFeatures &f) const;
  // encode -> activate -> decode -> denormalize of x [M, d_in] in scratch slots slot..slot+7;
  // with `fire`, the hooks fire on the way (on a copy of x). Returns the reconstruction.
  float *reconstruct(const float *x, int64_t M, size_t slot, const Fire *fire, const SaeFeatures *features);
  void denormalize(float *y, int64_t M, const float *stats_a, const float *stats_b) const;
  float *buf(size_t slot, int64_t floats);
  // fn(r0, r1) over row ranges of [0, M), on the CPU backend's pool when there is one.
  void for_rows(int64_t M, const std::function<void(int64_t r0, int64_t r1)> &fn) const;

  std::shared_ptr<Backend> be_;
  int base_, first_ = -1;
  SaeParams p_;  // W_enc is dropped after upload (enc_ holds it)
  bool use_error_term_;
 public:
  bool use_error_term() const { return use_error_term_; }

 private:
  DeviceBuffer enc_;                 // W_enc^T [d_sae, d_in] for the backend GEMM (maybe packed)
  nt_dtype enc_dtype_ = NT_F32;
  std::vector<float> exp_r_mag_;     // Gated: exp(r_mag)
  std::vector<float> dec_norm_;      // [d_sae] |W_dec[j]|, TopK with rescale_acts_by_decoder_norm
  std::vector<std::vector<float>> scratch_;  // reused across runs (runs are serialized)
};

}  // namespace nt
