// Model loading: config.json, checked against the checkpoint's headers before anything is sized
// from it, then each HF tensor read as float32, rearranged into the engine's
// Linear layout, converted to the device dtype and uploaded to the backend one at a time (so
// host memory peaks at one tensor). Reference: HF modeling_gpt2.py / modeling_llama.py.
#include <algorithm>
#include <thread>

#include "engine/error.h"
#include "engine/model.h"
#include "io/file.h"
#include "io/safetensors.h"

namespace nt {

namespace {

// config.json is a few KB; anything past this is not a config.
constexpr uint64_t kMaxConfigBytes = 16ull << 20;

std::string read_config_text(const std::string &path) {
  if (!path_exists(path)) fail(code::kFileNotFound, "cannot read " + path + " (is this a Hugging Face model directory?)");
  return read_regular_file(path, kMaxConfigBytes, code::kConfigInvalid);
}

// Layers in the checkpoint: one more than the largest L among its `prefix`L.* tensors.
int64_t checkpoint_layers(const Checkpoint &ck, const std::string &prefix) {
  int64_t n = 0;
  for (const std::string &name : ck.names()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const size_t end = name.find('.', prefix.size());
    if (end == std::string::npos || end == prefix.size() || end - prefix.size() > 9) continue;
    const std::string digits = name.substr(prefix.size(), end - prefix.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos) continue;
    n = std::max<int64_t>(n, std::stoll(digits) + 1);
  }
  return n;
}

// Checks, from the safetensors headers alone, that the checkpoint holds every tensor the
// config implies, with that shape and a float dtype (extra layers are ignored). Runs before
// anything is sized from the config (hook table, weights), so a config that disagrees with its
// checkpoint fails at once. Throws ERR_TENSOR_MISSING / ERR_TENSOR_SHAPE / ERR_SAFETENSORS_INVALID.
void verify_checkpoint(const ModelConfig &c, const Checkpoint &ck) {
  const int64_t d = c.d_model, V = c.d_vocab, F = c.d_mlp;
  const int64_t dq = static_cast<int64_t>(c.n_heads) * c.d_head, dkv = static_cast<int64_t>(c.n_kv_heads) * c.d_head;
  const auto want = [&](const std::string &name, const std::vector<int64_t> &shape) {
    const TensorView *t = ck.find(name);
    if (!t) fail(code::kTensorMissing, "tensor '" + name + "' is missing from the checkpoint in " + ck.dir());
    if (t->shape != shape)
      fail(code::kTensorShape, "tensor '" + name + "' has shape " + shape_string(t->shape) + ", expected " + shape_string(shape) +
                                   " from config.json");
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16 && t->dtype != DType::F64)
      fail(code::kSafetensorsInvalid, "tensor '" + name + "' has dtype " + dtype_name(t->dtype) + "; weights must be F32, F16, BF16 or F64");
  };
  const auto linear = [&](const std::string &name, int64_t out, int64_t in, bool bias) {
    want(name + ".weight", {out, in});
    if (bias) want(name + ".bias", {out});
  };
  const auto norm = [&](const std::string &name, int64_t n, bool bias) {
    want(name + ".weight", {n});
    if (bias) want(name + ".bias", {n});
  };

  const std::string p = c.family == Family::GPT2 && ck.has("transformer.wte.weight") ? "transformer." : "";
  const std::string blocks = c.family == Family::GPT2 ? p + "h." : c.family == Family::GPTNeoX ? "gpt_neox.layers." : "model.layers.";
  const std::string key = c.family == Family::GPT2 ? "'n_layer'" : "'num_hidden_layers'";
  const int64_t found = checkpoint_layers(ck, blocks);
  if (found < c.n_layers)  // more is fine: a truncated config runs the first layers, as HF loads it
    fail(code::kTensorMissing,
         "config.json's " + key + " is " + std::to_string(c.n_layers) + " but the checkpoint in " + ck.dir() + " has " + std::to_string(found) +
             " layers (" + blocks + "*)");

  std::string head = c.family == Family::GPTNeoX ? "embed_out.weight" : "lm_head.weight";
  if (c.family == Family::GPT2) {
    want(p + "wte.weight", {V, d});
    want(p + "wpe.weight", {c.n_ctx, d});
    norm(p + "ln_f", d, true);
  } else if (c.family == Family::GPTNeoX) {
    want("gpt_neox.embed_in.weight", {V, d});
    norm("gpt_neox.final_layer_norm", d, true);
  } else {
    want("model.embed_tokens.weight", {V, d});
    norm("model.norm", d, false);
  }
  if (!c.tied_embeddings) {
    if (!ck.has(head))
      fail(code::kTensorMissing, "tensor '" + head + "' is missing from the checkpoint in " + ck.dir() +
                                     " and config.json says tie_word_embeddings is false");
    want(head, {V, d});
  }
  for (int L = 0; L < c.n_layers; ++L) {
    const std::string h = blocks + std::to_string(L) + ".";
    if (c.family == Family::GPT2) {
      // Conv1D weights are [in, out].
      norm(h + "ln_1", d, true);
      norm(h + "ln_2", d, true);
      want(h + "attn.c_attn.weight", {d, 3 * dq});
      want(h + "attn.c_attn.bias", {3 * dq});
      want(h + "attn.c_proj.weight", {dq, d});
      want(h + "attn.c_proj.bias", {d});
      want(h + "mlp.c_fc.weight", {d, F});
      want(h + "mlp.c_fc.bias", {F});
      want(h + "mlp.c_proj.weight", {F, d});
      want(h + "mlp.c_proj.bias", {d});
    } else if (c.family == Family::GPTNeoX) {
      norm(h + "input_layernorm", d, true);
      norm(h + "post_attention_layernorm", d, true);
      linear(h + "attention.query_key_value", 3 * dq, d, c.qkv_bias);
      linear(h + "attention.dense", d, dq, c.o_bias);
      linear(h + "mlp.dense_h_to_4h", F, d, true);
      linear(h + "mlp.dense_4h_to_h", d, F, true);
    } else {
      norm(h + "input_layernorm", d, false);
      norm(h + "post_attention_layernorm", d, false);
      if (c.sandwich_norms) {
        norm(h + "pre_feedforward_layernorm", d, false);
        norm(h + "post_feedforward_layernorm", d, false);
      }
      if (c.qk_norm) {
        norm(h + "self_attn.q_norm", c.d_head, false);
        norm(h + "self_attn.k_norm", c.d_head, false);
      }
      linear(h + "self_attn.q_proj", dq, d, c.qkv_bias);
      linear(h + "self_attn.k_proj", dkv, d, c.qkv_bias);
      linear(h + "self_attn.v_proj", dkv, d, c.qkv_bias);
      linear(h + "self_attn.o_proj", d, dq, c.o_bias);
      linear(h + "mlp.gate_proj", F, d, c.mlp_bias);
      linear(h + "mlp.up_proj", F, d, c.mlp_bias);
      linear(h + "mlp.down_proj", d, F, c.mlp_bias);
    }
  }
}

// GPT-2 Conv1D stores weights as [in, out]; the engine's Linear layout is [out, in].
std::vector<float> transpose(const std::vector<float> &w, int64_t rows, int64_t cols) {
  std::vector<float> t(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = w[r * cols + c];
  return t;
}

// Uploads host float32 data to the backend as `dtype`; weight matrices are packed for the
// backend's gemm under `compute` (the backend's pack_weight_compute) when it is not F32.
class Uploader {
 public:
  Uploader(std::shared_ptr<Backend> be, nt_dtype dtype, nt_compute compute) : be_(std::move(be)), dtype_(dtype), compute_(compute) {}

  DeviceBuffer f32(const std::vector<float> &v) const { return DeviceBuffer::upload(be_, v.data(), v.size() * sizeof(float)); }

  DeviceBuffer matrix(const std::vector<float> &v) const {
    if (dtype_ == NT_F32) return f32(v);
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = dtype_ == NT_BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
    return DeviceBuffer::upload(be_, h.data(), h.size() * sizeof(uint16_t));
  }

  Linear linear(const std::vector<float> &w, const std::vector<float> *b, int64_t out, int64_t in) const {
    Linear l;
    l.w = matrix(w);
    l.dtype = dtype_;
    pack(&l.w, &l.dtype, out, in);
    if (b) l.b = f32(*b);
    l.out = out;
    l.in = in;
    return l;
  }

  // Re-lays a weight matrix out for the backend's gemm when it asks to (CPU: panels of 32), or
  // for the compute mode (which must succeed: a weight left as it is would compute in f32).
  void pack(DeviceBuffer *w, nt_dtype *dtype, int64_t out, int64_t in) const {
    const nt_backend_api &api = be_->api();
    if (compute_ != NT_COMPUTE_F32) {
      nt_dtype packed = *dtype;
      void *p = api.pack_weight_compute(be_->ctx(), w->data(), *dtype, out, in, compute_, &packed);
      if (!p) fail(code::kBackend, std::string("cannot lay out a weight matrix for the compute mode: ") + api.last_error(be_->ctx()));
      *w = DeviceBuffer::adopt(be_, p, 0);
      *dtype = packed;
      return;
    }
    if (!api.pack_weight) return;
    nt_dtype packed = *dtype;
    void *p = api.pack_weight(be_->ctx(), w->data(), *dtype, out, in, &packed);
    if (!p) return;
    *w = DeviceBuffer::adopt(be_, p, 0);
    *dtype = packed;
  }

  Linear linear(const Checkpoint &ck, const std::string &name, int64_t out, int64_t in, bool bias) const {
    std::vector<float> b;
    if (bias) b = ck.load_f32(name + ".bias", {out});
    return linear(ck.load_f32(name + ".weight", {out, in}), bias ? &b : nullptr, out, in);
  }

  // plus_one: Gemma's RMSNorm multiplies by (1 + w), computed in float32 as HF does.
  Norm norm(const Checkpoint &ck, const std::string &name, int64_t d, bool bias, bool plus_one = false) const {
    Norm n;
    std::vector<float> w = ck.load_f32(name + ".weight", {d});
    if (plus_one)
      for (float &x : w) x = 1.0f + x;
    n.w = f32(w);
    if (bias) n.b = f32(ck.load_f32(name + ".bias", {d}));
    return n;
  }

 private:
  std::shared_ptr<Backend> be_;
  nt_dtype dtype_;
  nt_compute compute_;
};

}  // namespace

std::unique_ptr<Model> Model::load(const std::string &dir, const LoadOptions &options) {
  const std::string config_path = dir + "/config.json";
  ModelConfig config = parse_model_config(read_config_text(config_path), config_path);
  // Headers only (the data stays mapped, unread) until the config and checkpoint agree.
  std::unique_ptr<Checkpoint> ck = Checkpoint::open(dir);
  verify_checkpoint(config, *ck);
  ck->set_control(options.control);
  std::unique_ptr<Model> model(new Model(std::move(config)));
  int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  model->threads_ = std::max(1, std::min(threads, 256));
  const auto name = [](nt_dtype t) { return std::string(t == NT_F32 ? "f32" : t == NT_F16 ? "f16" : "bf16"); };
  if (options.device == "cpu") {
    // bf16 keeps the matrices (embeddings, linears, LM head) in bf16 and computes in f32, or
    // with compute bf16 rounds the GEMM inputs to bf16 (ops/gemm-bf16.h).
    if (options.dtype != NT_F32 && options.dtype != NT_BF16) fail(code::kInvalidInput, "the CPU backend supports dtype f32 or bf16");
    model->compute_ = options.compute.value_or(NT_F32);
    if (model->compute_ != NT_F32 && model->compute_ != NT_BF16) fail(code::kInvalidInput, "the CPU backend computes in f32 or bf16");
    if (model->compute_ == NT_BF16 && options.dtype != NT_BF16)
      fail(code::kInvalidInput, "compute 'bf16' needs bf16 weights (dtype 'bf16'), not dtype '" + name(options.dtype) + "'");
    model->be_ = Backend::cpu(model->threads_);
  } else {
    model->be_ = Backend::load(options.device, options.backend_dir, 0, model->threads_, options.library_dirs);
    // A backend without compute modes (CUDA: cuBLASLt rounds the activations to f16 / bf16
    // weights) computes in its weight dtype.
    model->compute_ = options.dtype;
    if (options.compute && *options.compute != model->compute_)
      fail(code::kInvalidInput, "the " + options.device + " backend computes dtype '" + name(options.dtype) + "' weights in " +
                                    name(model->compute_) + ", not in " + name(*options.compute));
  }
  model->dtype_ = options.dtype;
  model->load_weights(*ck);
  return model;
}

void Model::load_weights(const Checkpoint &checkpoint) {
  const ModelConfig &c = config_;
  const Checkpoint *ck = &checkpoint;
  // compute bf16 lays every weight matrix out for its kernels; a backend without compute modes
  // gets its plain weights (it computes in their dtype).
  const bool pack_bf16 = compute_ == NT_BF16 && be_->api().pack_weight_compute;
  const Uploader up(be_, dtype_, pack_bf16 ? NT_COMPUTE_BF16 : NT_COMPUTE_F32);
  const int64_t d = c.d_model, V = c.d_vocab;
  layers_.resize(static_cast<size_t>(c.n_layers));

  if (c.family == Family::GPT2) {
    // The hub's gpt2 checkpoint has bare names (wte.weight); save_pretrained writes transformer.*.
    const std::string p = ck->has("transformer.wte.weight") ? "transformer." : "";
    embed_ = up.matrix(ck->load_f32(p + "wte.weight", {V, d}));
    pos_embed_ = up.matrix(ck->load_f32(p + "wpe.weight", {c.n_ctx, d}));
    const int64_t dq = static_cast<int64_t>(c.n_heads) * c.d_head;
    for (int L = 0; L < c.n_layers; ++L) {
      const std::string h = p + "h." + std::to_string(L) + ".";
      LayerWeights &lw = layers_[static_cast<size_t>(L)];
      lw.ln1 = up.norm(*ck, h + "ln_1", d, true);
      lw.ln2 = up.norm(*ck, h + "ln_2", d, true);
      // c_attn: [d, 3d] (Conv1D) holding q | k | v along the output axis.
      const std::vector<float> qkv = transpose(ck->load_f32(h + "attn.c_attn.weight", {d, 3 * dq}), d, 3 * dq);
      const std::vector<float> qkv_b = ck->load_f32(h + "attn.c_attn.bias", {3 * dq});
      Linear *parts[3] = {&lw.q, &lw.k, &lw.v};
      for (int i = 0; i < 3; ++i) {
        const std::vector<float> w(qkv.begin() + i * dq * d, qkv.begin() + (i + 1) * dq * d);
        const std::vector<float> b(qkv_b.begin() + i * dq, qkv_b.begin() + (i + 1) * dq);
        *parts[i] = up.linear(w, &b, dq, d);
      }
      const std::vector<float> o_b = ck->load_f32(h + "attn.c_proj.bias", {d});
      lw.o = up.linear(transpose(ck->load_f32(h + "attn.c_proj.weight", {dq, d}), dq, d), &o_b, d, dq);
      const std::vector<float> fc_b = ck->load_f32(h + "mlp.c_fc.bias", {c.d_mlp});
      lw.up = up.linear(transpose(ck->load_f32(h + "mlp.c_fc.weight", {d, c.d_mlp}), d, c.d_mlp), &fc_b, c.d_mlp, d);
      const std::vector<float> proj_b = ck->load_f32(h + "mlp.c_proj.bias", {d});
      lw.down = up.linear(transpose(ck->load_f32(h + "mlp.c_proj.weight", {c.d_mlp, d}), c.d_mlp, d), &proj_b, d, c.d_mlp);
    }
    ln_final_ = up.norm(*ck, p + "ln_f", d, true);
  } else if (c.family == Family::GPTNeoX) {
    embed_ = up.matrix(ck->load_f32("gpt_neox.embed_in.weight", {V, d}));
    const int64_t D = c.d_head, H = c.n_heads, dq = H * D;
    for (int L = 0; L < c.n_layers; ++L) {
      const std::string h = "gpt_neox.layers." + std::to_string(L) + ".";
      LayerWeights &lw = layers_[static_cast<size_t>(L)];
      lw.ln1 = up.norm(*ck, h + "input_layernorm", d, true);
      lw.ln2 = up.norm(*ck, h + "post_attention_layernorm", d, true);
      // query_key_value: [3 * d, d], output rows grouped per head as [head][q | k | v][d_head].
      const std::vector<float> qkv = ck->load_f32(h + "attention.query_key_value.weight", {3 * dq, d});
      std::vector<float> qkv_b;
      if (c.qkv_bias) qkv_b = ck->load_f32(h + "attention.query_key_value.bias", {3 * dq});
      Linear *parts[3] = {&lw.q, &lw.k, &lw.v};
      for (int i = 0; i < 3; ++i) {
        std::vector<float> w(static_cast<size_t>(dq * d)), b(static_cast<size_t>(dq));
        for (int64_t hh = 0; hh < H; ++hh)
          for (int64_t e = 0; e < D; ++e) {
            const int64_t src = (hh * 3 + i) * D + e, dst = hh * D + e;
            std::copy(qkv.begin() + src * d, qkv.begin() + (src + 1) * d, w.begin() + dst * d);
            if (c.qkv_bias) b[static_cast<size_t>(dst)] = qkv_b[static_cast<size_t>(src)];
          }
        *parts[i] = up.linear(w, c.qkv_bias ? &b : nullptr, dq, d);
      }
      lw.o = up.linear(*ck, h + "attention.dense", d, dq, c.o_bias);
      lw.up = up.linear(*ck, h + "mlp.dense_h_to_4h", c.d_mlp, d, true);
      lw.down = up.linear(*ck, h + "mlp.dense_4h_to_h", d, c.d_mlp, true);
    }
    ln_final_ = up.norm(*ck, "gpt_neox.final_layer_norm", d, true);
    inv_freq_ = up.f32(c.inv_freq);
  } else {
    embed_ = up.matrix(ck->load_f32("model.embed_tokens.weight", {V, d}));
    const int64_t dq = static_cast<int64_t>(c.n_heads) * c.d_head;
    const int64_t dkv = static_cast<int64_t>(c.n_kv_heads) * c.d_head;
    for (int L = 0; L < c.n_layers; ++L) {
      const std::string h = "model.layers." + std::to_string(L) + ".";
      LayerWeights &lw = layers_[static_cast<size_t>(L)];
      const bool p1 = c.norm_plus_one;
      lw.ln1 = up.norm(*ck, h + "input_layernorm", d, false, p1);
      if (c.sandwich_norms) {
        // Gemma: post_attention_layernorm is the post-attention (sandwich) norm; the MLP's input
        // norm is pre_feedforward_layernorm.
        lw.ln1_post = up.norm(*ck, h + "post_attention_layernorm", d, false, p1);
        lw.ln2 = up.norm(*ck, h + "pre_feedforward_layernorm", d, false, p1);
        lw.ln2_post = up.norm(*ck, h + "post_feedforward_layernorm", d, false, p1);
      } else {
        lw.ln2 = up.norm(*ck, h + "post_attention_layernorm", d, false);
      }
      if (c.qk_norm) {
        lw.q_norm = up.norm(*ck, h + "self_attn.q_norm", c.d_head, false, p1);
        lw.k_norm = up.norm(*ck, h + "self_attn.k_norm", c.d_head, false, p1);
      }
      lw.q = up.linear(*ck, h + "self_attn.q_proj", dq, d, c.qkv_bias);
      lw.k = up.linear(*ck, h + "self_attn.k_proj", dkv, d, c.qkv_bias);
      lw.v = up.linear(*ck, h + "self_attn.v_proj", dkv, d, c.qkv_bias);
      lw.o = up.linear(*ck, h + "self_attn.o_proj", d, dq, c.o_bias);
      lw.gate = up.linear(*ck, h + "mlp.gate_proj", c.d_mlp, d, c.mlp_bias);
      lw.up = up.linear(*ck, h + "mlp.up_proj", c.d_mlp, d, c.mlp_bias);
      lw.down = up.linear(*ck, h + "mlp.down_proj", d, c.d_mlp, c.mlp_bias);
    }
    ln_final_ = up.norm(*ck, "model.norm", d, false, c.norm_plus_one);
    inv_freq_ = up.f32(c.inv_freq);
    if (!c.inv_freq_local.empty()) inv_freq_local_ = up.f32(c.inv_freq_local);
  }
  if (c.embed_scale > 0.0f) embed_scale_ = up.f32(std::vector<float>(static_cast<size_t>(d), c.embed_scale));
  std::vector<float> head;
  if (!c.tied_embeddings) {
    const std::string name = c.family == Family::GPTNeoX ? "embed_out.weight" : "lm_head.weight";
    if (!ck->has(name))
      fail(code::kTensorMissing, "tensor '" + name + "' is missing from the checkpoint in " + ck->dir() +
                                     " and config.json says tie_word_embeddings is false");
    head = ck->load_f32(name, {V, d});
  } else if (be_->api().pack_weight) {
    // Tied: the embedding stays row-major for lookups; the LM head gets its own packed copy.
    head = c.family == Family::GPT2      ? ck->load_f32((ck->has("transformer.wte.weight") ? "transformer." : std::string()) + "wte.weight", {V, d})
           : c.family == Family::GPTNeoX ? ck->load_f32("gpt_neox.embed_in.weight", {V, d})
                                         : ck->load_f32("model.embed_tokens.weight", {V, d});
  }
  lm_head_dtype_ = dtype_;
  if (!head.empty()) {
    lm_head_ = up.matrix(head);
    up.pack(&lm_head_, &lm_head_dtype_, V, d);
    if (c.tied_embeddings && lm_head_dtype_ == dtype_) lm_head_.reset();  // nothing gained: share embed_
  }
}

}  // namespace nt
