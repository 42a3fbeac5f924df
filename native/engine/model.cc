// Model loading (HF tensor names -> Linear layout) and the instrumented forward loop.
// Reference: HF modeling_gpt2.py / modeling_llama.py; whole-model tests in test/fidelity.test.ts.
#include "engine/model.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/error.h"
#include "io/safetensors.h"
#include "ops/ops.h"

namespace nt {

namespace {

std::string read_text_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(code::kFileNotFound, "cannot read " + path + " (is this a Hugging Face model directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// GPT-2 Conv1D stores weights as [in, out]; the engine's Linear layout is [out, in].
std::vector<float> transpose(const std::vector<float> &w, int64_t rows, int64_t cols) {
  std::vector<float> t(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = w[r * cols + c];
  return t;
}

Linear load_linear(const Checkpoint &ck, const std::string &name, int64_t out, int64_t in, bool bias) {
  Linear l;
  l.out = out;
  l.in = in;
  l.w = ck.load_f32(name + ".weight", {out, in});
  if (bias) l.b = ck.load_f32(name + ".bias", {out});
  return l;
}

Norm load_norm(const Checkpoint &ck, const std::string &name, int64_t d, bool bias) {
  Norm n;
  n.w = ck.load_f32(name + ".weight", {d});
  if (bias) n.b = ck.load_f32(name + ".bias", {d});
  return n;
}

void check_finite_size(int64_t a, int64_t b, const char *what) {
  if (a > 0 && b > (int64_t(1) << 46) / a) fail(code::kInvalidInput, std::string(what) + " is too large");
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string &dir, const LoadOptions &options) {
  const std::string config_path = dir + "/config.json";
  ModelConfig config = parse_model_config(read_text_file(config_path), config_path);
  std::unique_ptr<Model> model(new Model(std::move(config)));
  model->load_weights(dir);
  int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  model->pool_.reset(new ThreadPool(std::max(1, std::min(threads, 256))));
  return model;
}

void Model::load_weights(const std::string &dir) {
  const ModelConfig &c = config_;
  std::unique_ptr<Checkpoint> ck = Checkpoint::open(dir);
  const int64_t d = c.d_model, V = c.d_vocab;
  layers_.resize(static_cast<size_t>(c.n_layers));

  if (c.family == Family::GPT2) {
    // The hub's gpt2 checkpoint has bare names (wte.weight); save_pretrained writes transformer.*.
    const std::string p = ck->has("transformer.wte.weight") ? "transformer." : "";
    embed_ = ck->load_f32(p + "wte.weight", {V, d});
    pos_embed_ = ck->load_f32(p + "wpe.weight", {c.n_ctx, d});
    const int64_t dq = static_cast<int64_t>(c.n_heads) * c.d_head;
    for (int L = 0; L < c.n_layers; ++L) {
      const std::string h = p + "h." + std::to_string(L) + ".";
      LayerWeights &lw = layers_[static_cast<size_t>(L)];
      lw.ln1 = load_norm(*ck, h + "ln_1", d, true);
      lw.ln2 = load_norm(*ck, h + "ln_2", d, true);
      // c_attn: [d, 3d] (Conv1D) holding q | k | v along the output axis.
      std::vector<float> qkv = transpose(ck->load_f32(h + "attn.c_attn.weight", {d, 3 * dq}), d, 3 * dq);
      std::vector<float> qkv_b = ck->load_f32(h + "attn.c_attn.bias", {3 * dq});
      Linear *parts[3] = {&lw.q, &lw.k, &lw.v};
      for (int i = 0; i < 3; ++i) {
        parts[i]->out = dq;
        parts[i]->in = d;
        parts[i]->w.assign(qkv.begin() + i * dq * d, qkv.begin() + (i + 1) * dq * d);
        parts[i]->b.assign(qkv_b.begin() + i * dq, qkv_b.begin() + (i + 1) * dq);
      }
      lw.o.out = d;
      lw.o.in = dq;
      lw.o.w = transpose(ck->load_f32(h + "attn.c_proj.weight", {dq, d}), dq, d);
      lw.o.b = ck->load_f32(h + "attn.c_proj.bias", {d});
      lw.up.out = c.d_mlp;
      lw.up.in = d;
      lw.up.w = transpose(ck->load_f32(h + "mlp.c_fc.weight", {d, c.d_mlp}), d, c.d_mlp);
      lw.up.b = ck->load_f32(h + "mlp.c_fc.bias", {c.d_mlp});
      lw.down.out = d;
      lw.down.in = c.d_mlp;
      lw.down.w = transpose(ck->load_f32(h + "mlp.c_proj.weight", {c.d_mlp, d}), c.d_mlp, d);
      lw.down.b = ck->load_f32(h + "mlp.c_proj.bias", {d});
    }
    ln_final_ = load_norm(*ck, p + "ln_f", d, true);
  } else {
    embed_ = ck->load_f32("model.embed_tokens.weight", {V, d});
    const int64_t dq = static_cast<int64_t>(c.n_heads) * c.d_head;
    const int64_t dkv = static_cast<int64_t>(c.n_kv_heads) * c.d_head;
    for (int L = 0; L < c.n_layers; ++L) {
      const std::string h = "model.layers." + std::to_string(L) + ".";
      LayerWeights &lw = layers_[static_cast<size_t>(L)];
      lw.ln1 = load_norm(*ck, h + "input_layernorm", d, false);
      lw.ln2 = load_norm(*ck, h + "post_attention_layernorm", d, false);
      lw.q = load_linear(*ck, h + "self_attn.q_proj", dq, d, c.qkv_bias);
      lw.k = load_linear(*ck, h + "self_attn.k_proj", dkv, d, c.qkv_bias);
      lw.v = load_linear(*ck, h + "self_attn.v_proj", dkv, d, c.qkv_bias);
      lw.o = load_linear(*ck, h + "self_attn.o_proj", d, dq, c.o_bias);
      lw.gate = load_linear(*ck, h + "mlp.gate_proj", c.d_mlp, d, c.mlp_bias);
      lw.up = load_linear(*ck, h + "mlp.up_proj", c.d_mlp, d, c.mlp_bias);
      lw.down = load_linear(*ck, h + "mlp.down_proj", d, c.d_mlp, c.mlp_bias);
    }
    ln_final_ = load_norm(*ck, "model.norm", d, false);
  }
  if (!c.tied_embeddings) {
    if (!ck->has("lm_head.weight"))
      fail(code::kTensorMissing, "tensor 'lm_head.weight' is missing from the checkpoint in " + dir +
                                     " and config.json says tie_word_embeddings is false");
    lm_head_ = ck->load_f32("lm_head.weight", {V, d});
  }
}

std::unique_ptr<KvCache> Model::create_cache(int64_t batch, int64_t capacity) const {
  const ModelConfig &c = config_;
  if (batch < 1 || capacity < 1) fail(code::kInvalidInput, "a KV cache needs batch >= 1 and capacity >= 1");
  check_finite_size(batch * capacity, static_cast<int64_t>(c.n_kv_heads) * c.d_head * c.n_layers, "KV cache");
  std::unique_ptr<KvCache> cache(new KvCache());
  cache->batch = batch;
  cache->capacity = capacity;
  cache->heads = c.n_kv_heads;
  cache->d_head = c.d_head;
  const size_t n = static_cast<size_t>(batch * capacity * c.n_kv_heads * c.d_head);
  cache->k.assign(static_cast<size_t>(c.n_layers), std::vector<float>(n));
  cache->v.assign(static_cast<size_t>(c.n_layers), std::vector<float>(n));
  cache->pad.assign(static_cast<size_t>(batch), 0);
  return cache;
}

void Model::forward(const ForwardRequest &req, HookPlan *plan) {
  const ModelConfig &c = config_;
  if (req.batch < 1 || req.pos < 1)
    fail(code::kInvalidInput, "input must have at least one sequence of at least one token (got batch " + std::to_string(req.batch) +
                                  ", pos " + std::to_string(req.pos) + ")");
  check_finite_size(req.batch, req.pos, "batch x pos");
  check_finite_size(req.batch * req.pos, std::max<int64_t>(c.d_vocab, c.d_mlp), "batch x pos x width");
  const KvCache *cache = req.cache;
  const int64_t pos0 = cache ? cache->len : 0;
  if (cache) {
    if (cache->batch != req.batch)
      fail(code::kInvalidInput, "the KV cache holds " + std::to_string(cache->batch) + " sequences, the input " + std::to_string(req.batch));
    if (pos0 + req.pos > cache->capacity)
      fail(code::kInvalidInput, "the KV cache is full: " + std::to_string(pos0) + " + " + std::to_string(req.pos) + " positions exceed its capacity " +
                                    std::to_string(cache->capacity));
    if (cache->heads != c.n_kv_heads || cache->d_head != c.d_head || static_cast<int>(cache->k.size()) != c.n_layers)
      fail(code::kInvalidInput, "the KV cache was made for another model");
    if (req.pad && pos0 > 0) fail(code::kInvalidInput, "left padding can only be set by the first forward into a KV cache");
  }
  const int32_t *pad = req.pad ? req.pad : (cache ? cache->pad.data() : nullptr);
  for (int64_t b = 0; pad && b < req.batch; ++b)
    if (pad[b] < 0 || pad[b] >= std::max<int64_t>(req.pos, pos0 + req.pos))
      fail(code::kInvalidInput, "left padding of row " + std::to_string(b) + " must leave at least one real token");
  if (!c.rotary && pos0 + req.pos > c.n_ctx)
    fail(code::kInvalidInput, "sequence length " + std::to_string(pos0 + req.pos) + " exceeds the model's " + std::to_string(c.n_ctx) +
                                  " learned positions");
  for (int64_t i = 0; i < req.batch * req.pos; ++i) {
    const int32_t t = req.tokens[i];
    if (t < 0 || t >= c.d_vocab)
      fail(code::kTokenOutOfRange, "token id " + std::to_string(t) + " at batch " + std::to_string(i / req.pos) + ", position " +
                                       std::to_string(i % req.pos) + " is outside the vocabulary [0, " + std::to_string(c.d_vocab) + ")");
  }
  if (plan) {
    for (size_t i = 0; i < hooks_.points().size(); ++i) {
      const int idx = static_cast<int>(i);
      const std::vector<int64_t> shape = hooks_.shape(idx, req.batch, req.pos, pos0 + req.pos);
      for (const Edit *e : plan->edits(idx)) validate_edit(*e, hooks_.points()[i], shape);
      if (plan->has_capture(idx) && plan->capture_numel(idx) != hooks_.numel(idx, req.batch, req.pos, pos0 + req.pos))
        fail(code::kBufferSize, "capture buffer for '" + hooks_.points()[i].name + "' has " + std::to_string(plan->capture_numel(idx)) +
                                    " floats, needs " + std::to_string(hooks_.numel(idx, req.batch, req.pos, pos0 + req.pos)));
    }
  }
  std::lock_guard<std::mutex> lock(run_mutex_);
  forward_locked(req, plan);
}

void Model::forward_locked(const ForwardRequest &req, HookPlan *plan) {
  const ModelConfig &c = config_;
  ThreadPool &pool = *pool_;
  KvCache *cache = req.cache;
  const int64_t B = req.batch, T = req.pos, M = B * T, d = c.d_model;
  const int64_t H = c.n_heads, G = c.n_kv_heads, D = c.d_head;
  const int64_t dq = H * D, dkv = G * D;
  const int64_t pos0 = cache ? cache->len : 0, KV = pos0 + T;
  if (cache && pos0 == 0) {
    for (int64_t b = 0; b < B; ++b) cache->pad[static_cast<size_t>(b)] = req.pad ? req.pad[b] : 0;
    cache->prompt_len = T;
  }
  const int32_t *pad = cache ? cache->pad.data() : req.pad;

  HookContext ctx;
  ctx.batch = B;
  ctx.pos = T;
  ctx.pos0 = pos0;
  ctx.kv_len = KV;
  ctx.pad = pad;
  ctx.prompt_len = cache ? cache->prompt_len : T;
  ctx.step = cache ? cache->steps : 0;

  auto active = [&](HookKind kind, int layer) {
    if (!plan) return -1;
    const int idx = hooks_.index(kind, layer);
    return (idx >= 0 && plan->active(idx)) ? idx : -1;
  };
  auto fire = [&](int idx, float *data) {
    if (idx >= 0) plan->fire(hooks_, idx, data, hooks_.shape(idx, B, T, KV), ctx);
  };

  // Activations, one row per token: [M, width].
  std::vector<float> x(static_cast<size_t>(M * d));        // residual stream
  std::vector<float> h(static_cast<size_t>(M * d));        // normalized input of attn / mlp / unembed
  std::vector<float> scale(static_cast<size_t>(M));        // norm scales [B, T, 1]
  std::vector<float> q(static_cast<size_t>(M * dq));       // [B, T, H, D]
  std::vector<float> k(static_cast<size_t>(M * dkv));      // [B, T, G, D]
  std::vector<float> v(static_cast<size_t>(M * dkv));      // [B, T, G, D]
  std::vector<float> z(static_cast<size_t>(M * dq));       // [B, T, H, D]
  std::vector<float> out(static_cast<size_t>(M * d));      // attn_out / mlp_out
  std::vector<float> mlp_a(static_cast<size_t>(M * c.d_mlp));                     // pre (gate) -> post
  std::vector<float> mlp_b(c.gated_mlp ? static_cast<size_t>(M * c.d_mlp) : 0);   // pre_linear (up)
  std::vector<float> pattern;  // [B, H, T, KV], only while scores/pattern are hooked

  // Embedding.
  for (int64_t i = 0; i < M; ++i) {
    const float *e = embed_.data() + static_cast<int64_t>(req.tokens[i]) * d;
    std::copy(e, e + d, x.data() + i * d);
  }
  fire(active(HookKind::Embed, -1), x.data());
  if (!c.rotary) {
    // Learned positions count real tokens: row b's token t sits at pos0 + t - pad[b]
    // (padding rows clamp to 0; nothing attends to them).
    for (int64_t i = 0; i < M; ++i) {
      const int64_t p = std::max<int64_t>(0, pos0 + i % T - (pad ? pad[i / T] : 0));
      std::copy(pos_embed_.data() + p * d, pos_embed_.data() + (p + 1) * d, out.data() + i * d);
    }
    fire(active(HookKind::PosEmbed, -1), out.data());
    add_f32(pool, x.data(), out.data(), M * d, x.data());
  }

  // Norm into h with the TL hooks: LayerNorm hooks its affine output, RMSNorm hooks x / scale
  // before the weight.
  auto norm = [&](const Norm &n, HookKind scale_kind, HookKind normalized_kind, int layer) {
    const int si = active(scale_kind, layer), ni = active(normalized_kind, layer);
    float *scale_out = si >= 0 ? scale.data() : nullptr;
    if (c.norm == NormKind::LayerNorm) {
      layer_norm_f32(pool, x.data(), M, d, n.w.data(), n.b.data(), c.norm_eps, h.data(), scale_out);
      fire(si, scale.data());
      fire(ni, h.data());
    } else if (ni >= 0) {
      rms_norm_f32(pool, x.data(), M, d, nullptr, c.norm_eps, h.data(), scale_out);
      fire(si, scale.data());
      fire(ni, h.data());
      mul_rows_f32(pool, h.data(), M, d, n.w.data(), h.data());
    } else {
      rms_norm_f32(pool, x.data(), M, d, n.w.data(), c.norm_eps, h.data(), scale_out);
      fire(si, scale.data());
    }
  };
  auto linear = [&](const Linear &l, const float *in, float *o) {
    gemm_f32(pool, in, M, l.in, l.w.data(), l.out, l.b.empty() ? nullptr : l.b.data(), o);
  };

  for (int L = 0; L < c.n_layers; ++L) {
    const LayerWeights &lw = layers_[static_cast<size_t>(L)];
    fire(active(HookKind::ResidPre, L), x.data());

    // Attention.
    norm(lw.ln1, HookKind::Ln1Scale, HookKind::Ln1Normalized, L);
    linear(lw.q, h.data(), q.data());
    linear(lw.k, h.data(), k.data());
    linear(lw.v, h.data(), v.data());
    fire(active(HookKind::AttnQ, L), q.data());
    fire(active(HookKind::AttnK, L), k.data());
    fire(active(HookKind::AttnV, L), v.data());
    if (c.rotary) {
      rope_f32(pool, q.data(), B, T, H, D, c.inv_freq.data(), pos0, pad);
      rope_f32(pool, k.data(), B, T, G, D, c.inv_freq.data(), pos0, pad);
      fire(active(HookKind::AttnRotQ, L), q.data());
      fire(active(HookKind::AttnRotK, L), k.data());
    }
    // Keys and values: this forward's own, or the cache after appending them.
    const float *keys = k.data(), *values = v.data();
    int64_t S = T;
    if (cache) {
      float *ck = cache->k[static_cast<size_t>(L)].data(), *cv = cache->v[static_cast<size_t>(L)].data();
      for (int64_t b = 0; b < B; ++b) {
        std::copy(k.data() + b * T * dkv, k.data() + (b + 1) * T * dkv, ck + (b * cache->capacity + pos0) * dkv);
        std::copy(v.data() + b * T * dkv, v.data() + (b + 1) * T * dkv, cv + (b * cache->capacity + pos0) * dkv);
      }
      keys = ck;
      values = cv;
      S = cache->capacity;
    }
    AttentionShape as{B, T, H, G, D, S, KV, pos0, c.attn_scale, c.sliding_window[static_cast<size_t>(L)], pad};
    if (c.scale_attn_by_inverse_layer_idx) as.scale /= static_cast<float>(L + 1);
    const int scores_i = active(HookKind::AttnScores, L), pattern_i = active(HookKind::AttnPattern, L);
    if (scores_i >= 0 || pattern_i >= 0) {
      pattern.resize(static_cast<size_t>(B * H * T * KV));
      attention_scores_f32(pool, as, q.data(), keys, pattern.data());
      fire(scores_i, pattern.data());
      softmax_rows_f32(pool, pattern.data(), B * H * T, KV);
      fire(pattern_i, pattern.data());
      attention_apply_f32(pool, as, pattern.data(), values, z.data());
    } else {
      attention_f32(pool, as, q.data(), keys, values, z.data());
    }
    fire(active(HookKind::AttnZ, L), z.data());
    linear(lw.o, z.data(), out.data());
    fire(active(HookKind::AttnOut, L), out.data());
    add_f32(pool, x.data(), out.data(), M * d, x.data());
    fire(active(HookKind::ResidMid, L), x.data());

    // MLP.
    norm(lw.ln2, HookKind::Ln2Scale, HookKind::Ln2Normalized, L);
    const int64_t n_mlp = M * c.d_mlp;
    if (c.gated_mlp) {
      linear(lw.gate, h.data(), mlp_a.data());
      fire(active(HookKind::MlpPre, L), mlp_a.data());
      linear(lw.up, h.data(), mlp_b.data());
      fire(active(HookKind::MlpPreLinear, L), mlp_b.data());
      gated_act_f32(pool, static_cast<int>(c.act), mlp_a.data(), mlp_b.data(), n_mlp, mlp_a.data());
    } else {
      linear(lw.up, h.data(), mlp_a.data());
      fire(active(HookKind::MlpPre, L), mlp_a.data());
      switch (c.act) {
        case Activation::GeluTanh: gelu_tanh_f32(pool, mlp_a.data(), n_mlp); break;
        case Activation::GeluErf: gelu_erf_f32(pool, mlp_a.data(), n_mlp); break;
        case Activation::Silu: silu_f32(pool, mlp_a.data(), n_mlp); break;
        case Activation::Relu: relu_f32(pool, mlp_a.data(), n_mlp); break;
      }
    }
    fire(active(HookKind::MlpPost, L), mlp_a.data());
    linear(lw.down, mlp_a.data(), out.data());
    fire(active(HookKind::MlpOut, L), out.data());
    add_f32(pool, x.data(), out.data(), M * d, x.data());
    fire(active(HookKind::ResidPost, L), x.data());
  }
  if (cache) {
    cache->len += T;
    cache->steps += 1;
  }

  const int fs = active(HookKind::LnFinalScale, -1), fn = active(HookKind::LnFinalNormalized, -1);
  if (req.logits || fs >= 0 || fn >= 0) {
    norm(ln_final_, HookKind::LnFinalScale, HookKind::LnFinalNormalized, -1);
    if (req.logits) {
      const std::vector<float> &head = lm_head_.empty() ? embed_ : lm_head_;
      if (req.logits_last_only) {
        // Only the last position of each row: [B, d] -> [B, vocab].
        std::vector<float> last(static_cast<size_t>(B * d));
        for (int64_t b = 0; b < B; ++b) std::copy(h.data() + (b * T + T - 1) * d, h.data() + (b * T + T) * d, last.data() + b * d);
        gemm_f32(pool, last.data(), B, d, head.data(), c.d_vocab, nullptr, req.logits);
      } else {
        gemm_f32(pool, h.data(), M, d, head.data(), c.d_vocab, nullptr, req.logits);
      }
    }
  }
}

}  // namespace nt
