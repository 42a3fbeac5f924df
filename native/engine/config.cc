// config.json -> ModelConfig. Every key read is validated (type and range) before use.
#include "engine/config.h"

#include <cmath>

#include "engine/error.h"

namespace nt {

const char *family_name(Family f) {
  switch (f) {
    case Family::GPT2: return "gpt2";
    case Family::Llama: return "llama";
    case Family::Mistral: return "mistral";
    case Family::Qwen2: return "qwen2";
    case Family::GPTNeoX: return "gpt_neox";
    case Family::Gemma2: return "gemma2";
    case Family::Gemma3: return "gemma3";
    case Family::Qwen3: return "qwen3";
  }
  return "?";
}

const char *activation_name(Activation a) {
  switch (a) {
    case Activation::GeluTanh: return "gelu_tanh";
    case Activation::GeluErf: return "gelu";
    case Activation::Silu: return "silu";
    case Activation::Relu: return "relu";
  }
  return "?";
}

namespace {

class Reader {
 public:
  Reader(const Json &root, const std::string &path) : root_(root), path_(path) {}

  [[noreturn]] void bad(const std::string &key, const std::string &why) const {
    fail(code::kConfigInvalid, path_ + ": '" + key + "' " + why);
  }

  const Json *find(const Json &obj, const std::string &key) const {
    const Json *v = obj.get(key);
    return (v && !v->is_null()) ? v : nullptr;
  }

  // A positive integer of at most `max` (a limits:: value); `fallback` when absent, if >= 0.
  int positive_int(const std::string &key, int max, int fallback = -1) const {
    const Json *v = find(root_, key);
    if (!v) {
      if (fallback < 0) bad(key, "is required");
      at_most(key, fallback, max);
      return fallback;
    }
    if (!v->is_number() || !v->is_integer || v->integer <= 0) bad(key, "must be a positive integer");
    at_most(key, v->integer, max);
    return static_cast<int>(v->integer);
  }

  void at_most(const std::string &key, int64_t value, int64_t max) const {
    if (value > max)
      fail(code::kUnsupportedConfig, path_ + ": '" + key + "' is " + std::to_string(value) + ", more than the " + std::to_string(max) +
                                         " neurotap supports");
  }

  double number(const std::string &key, double fallback, const Json *obj = nullptr) const {
    const Json *v = find(obj ? *obj : root_, key);
    if (!v) return fallback;
    if (!v->is_number() || !std::isfinite(v->number)) bad(key, "must be a finite number");
    return v->number;
  }

  bool boolean(const std::string &key, bool fallback) const {
    const Json *v = find(root_, key);
    if (!v) return fallback;
    if (!v->is_bool()) bad(key, "must be true or false");
    return v->boolean;
  }

  std::string string(const std::string &key, const std::string &fallback, const Json *obj = nullptr) const {
    const Json *v = find(obj ? *obj : root_, key);
    if (!v) return fallback;
    if (!v->is_string()) bad(key, "must be a string");
    return v->string;
  }

  const Json &root() const { return root_; }
  const std::string &path() const { return path_; }

 private:
  const Json &root_;
  const std::string &path_;
};

Activation parse_activation(const Reader &r, const std::string &key, const std::string &fallback) {
  std::string s = r.string(key, fallback);
  if (s == "gelu_new" || s == "gelu_pytorch_tanh" || s == "gelu_fast") return Activation::GeluTanh;
  if (s == "gelu") return Activation::GeluErf;
  if (s == "silu" || s == "swish") return Activation::Silu;
  if (s == "relu") return Activation::Relu;
  fail(code::kUnsupportedConfig, r.path() + ": activation '" + s + "' is not supported (gelu_new, gelu_pytorch_tanh, gelu, silu, relu)");
}

// One rope setting: `params` is a transformers-5 rope_parameters object (theta inside), else
// the classic top-level rope_theta (or `theta_key`) + rope_scaling. *partial receives
// partial_rotary_factor (1 when absent); families without partial rotary refuse other values.
RopeConfig parse_rope(const Reader &r, const Json *params, double *partial = nullptr, const char *theta_key = "rope_theta",
                      double theta_default = 10000.0, bool classic_scaling = true) {
  RopeConfig rope;
  const Json *scaling = classic_scaling ? r.find(r.root(), "rope_scaling") : nullptr;
  const Json *src = nullptr;
  if (params) {
    if (!params->is_object()) r.bad("rope_parameters", "must be an object");
    src = params;
    rope.theta = r.number("rope_theta", r.number(theta_key, theta_default), params);
  } else {
    rope.theta = r.number(theta_key, theta_default);
    if (scaling) {
      if (!scaling->is_object()) r.bad("rope_scaling", "must be an object or null");
      src = scaling;
    }
  }
  if (partial) *partial = 1.0;
  if (src) {
    std::string type = r.string("rope_type", r.string("type", "default", src), src);
    rope.type = type;
    if (type == "default") {
    } else if (type == "linear") {
      rope.factor = r.number("factor", 1.0, src);
    } else if (type == "llama3") {
      rope.factor = r.number("factor", 0.0, src);
      rope.low_freq_factor = r.number("low_freq_factor", 0.0, src);
      rope.high_freq_factor = r.number("high_freq_factor", 0.0, src);
      rope.original_max_position_embeddings = r.number("original_max_position_embeddings", 0.0, src);
      if (rope.factor <= 0 || rope.low_freq_factor <= 0 || rope.high_freq_factor <= rope.low_freq_factor ||
          rope.original_max_position_embeddings <= 0)
        fail(code::kConfigInvalid, r.path() + ": llama3 rope scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0");
    } else {
      fail(code::kUnsupportedConfig, r.path() + ": rope type '" + type + "' is not supported (default, linear, llama3)");
    }
    const double p = r.number("partial_rotary_factor", 1.0, src);
    if (partial) *partial = p;
    else if (p != 1.0) fail(code::kUnsupportedConfig, r.path() + ": partial_rotary_factor != 1 is not supported for this family");
  }
  if (!(rope.theta > 0)) r.bad("rope_theta", "must be positive");
  if (!(rope.factor > 0)) r.bad("factor", "must be positive");
  return rope;
}

// The sizes that follow from the dims (read within their own limits): d_head (derived for
// GPT-2 and GPT-NeoX), all heads together, and each weight matrix they imply.
void check_sizes(const Reader &r, const ModelConfig &c) {
  r.at_most("head_dim", c.d_head, limits::kDHead);
  r.at_most("heads x head_dim", static_cast<int64_t>(c.n_heads) * c.d_head, limits::kDModel);
  const int64_t d = c.d_model, dq = static_cast<int64_t>(c.n_heads) * c.d_head;
  r.at_most("vocab_size x hidden size", c.d_vocab * d, limits::kMatrix);
  r.at_most("intermediate size x hidden size", c.d_mlp * d, limits::kMatrix);
  r.at_most("heads x head_dim x hidden size", dq * d, limits::kMatrix);
}

}  // namespace

std::vector<float> rope_inv_freq(const RopeConfig &rope, int rotary_dim) {
  // HF computes base ** (arange(0, dim, 2) / dim) in float32; we round each step likewise.
  std::vector<float> inv(rotary_dim / 2);
  for (int i = 0; i < rotary_dim / 2; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    float p = static_cast<float>(std::pow(static_cast<double>(static_cast<float>(rope.theta)), static_cast<double>(exponent)));
    inv[i] = 1.0f / p;
  }
  if (rope.type == "linear") {
    for (float &f : inv) f = static_cast<float>(f / rope.factor);
  } else if (rope.type == "llama3") {
    const double old_len = rope.original_max_position_embeddings;
    const double low_wavelen = old_len / rope.low_freq_factor;
    const double high_wavelen = old_len / rope.high_freq_factor;
    for (float &f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      float scaled = wavelen > low_wavelen ? static_cast<float>(f / rope.factor) : f;
      if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
        const double smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
        scaled = static_cast<float>((1.0 - smooth) * scaled / rope.factor + smooth * scaled);
      }
      f = scaled;
    }
  }
  return inv;
}

ModelConfig parse_model_config(const std::string &text, const std::string &path) {
  Json root = json_parse(text.data(), text.size(), code::kConfigInvalid, path);
  if (!root.is_object()) fail(code::kConfigInvalid, path + ": not a JSON object");
  Reader r(root, path);
  ModelConfig c;
  std::string model_type = r.string("model_type", "");
  const Json *archs = r.find(root, "architectures");
  if (archs && archs->is_array() && !archs->array.empty() && archs->array[0].is_string())
    c.architecture = archs->array[0].string;
  const std::string &a = c.architecture;
  if (model_type == "gpt2" || a == "GPT2LMHeadModel" || a == "GPT2Model") c.family = Family::GPT2;
  else if (model_type == "llama" || a == "LlamaForCausalLM" || a == "LlamaModel") c.family = Family::Llama;
  else if (model_type == "mistral" || a == "MistralForCausalLM" || a == "MistralModel") c.family = Family::Mistral;
  else if (model_type == "qwen2" || a == "Qwen2ForCausalLM" || a == "Qwen2Model") c.family = Family::Qwen2;
  else if (model_type == "qwen3" || a == "Qwen3ForCausalLM" || a == "Qwen3Model") c.family = Family::Qwen3;
  else if (model_type == "gpt_neox" || a == "GPTNeoXForCausalLM" || a == "GPTNeoXModel") c.family = Family::GPTNeoX;
  else if (model_type == "gemma2" || a == "Gemma2ForCausalLM" || a == "Gemma2Model") c.family = Family::Gemma2;
  else if (model_type == "gemma3_text" || a == "Gemma3ForCausalLM" || a == "Gemma3TextModel") c.family = Family::Gemma3;
  else
    fail(code::kUnsupportedArch, path + ": architecture '" + (a.empty() ? std::string("(none)") : a) + "' (model_type '" + model_type +
                                     "') is not supported; supported: GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                                     "Qwen3ForCausalLM, GPTNeoXForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM (text)");
  if (c.architecture.empty()) c.architecture = model_type;

  if (c.family == Family::GPT2) {
    c.n_layers = r.positive_int("n_layer", limits::kLayers);
    c.d_model = r.positive_int("n_embd", limits::kDModel);
    c.n_heads = r.positive_int("n_head", limits::kHeads);
    c.n_kv_heads = c.n_heads;
    if (c.d_model % c.n_heads != 0) r.bad("n_embd", "must be divisible by n_head");
    c.d_head = c.d_model / c.n_heads;
    c.d_mlp = r.positive_int("n_inner", limits::kDMlp, 4 * c.d_model);
    c.d_vocab = r.positive_int("vocab_size", limits::kVocab);
    c.n_ctx = r.positive_int("n_positions", limits::kPositions);
    check_sizes(r, c);
    c.norm_eps = static_cast<float>(r.number("layer_norm_epsilon", 1e-5));
    c.norm = NormKind::LayerNorm;
    c.act = parse_activation(r, "activation_function", "gelu_new");
    c.gated_mlp = false;
    c.rotary = false;
    c.tied_embeddings = r.boolean("tie_word_embeddings", true);
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.attn_scale = r.boolean("scale_attn_weights", true) ? 1.0f / std::sqrt(static_cast<float>(c.d_head)) : 1.0f;
    c.scale_attn_by_inverse_layer_idx = r.boolean("scale_attn_by_inverse_layer_idx", false);
    c.sliding_window.assign(c.n_layers, 0);
    return c;
  }

  if (c.family == Family::GPTNeoX) {
    c.n_layers = r.positive_int("num_hidden_layers", limits::kLayers);
    c.d_model = r.positive_int("hidden_size", limits::kDModel);
    c.n_heads = r.positive_int("num_attention_heads", limits::kHeads);
    c.n_kv_heads = c.n_heads;
    if (c.d_model % c.n_heads != 0) r.bad("hidden_size", "must be divisible by num_attention_heads");
    c.d_head = c.d_model / c.n_heads;
    c.d_mlp = r.positive_int("intermediate_size", limits::kDMlp);
    c.d_vocab = r.positive_int("vocab_size", limits::kVocab);
    c.n_ctx = r.positive_int("max_position_embeddings", limits::kPositions, 2048);
    check_sizes(r, c);
    c.norm_eps = static_cast<float>(r.number("layer_norm_eps", 1e-5));
    c.norm = NormKind::LayerNorm;
    c.act = parse_activation(r, "hidden_act", "gelu");
    c.gated_mlp = false;
    c.rotary = true;
    c.tied_embeddings = r.boolean("tie_word_embeddings", false);
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", true);
    c.mlp_bias = true;
    c.parallel_residual = r.boolean("use_parallel_residual", true);
    c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.d_head));
    // transformers 5: rope_parameters {rope_theta, partial_rotary_factor}; classic: rotary_pct, rotary_emb_base.
    double partial = 1.0;
    c.rope = parse_rope(r, r.find(root, "rope_parameters"), &partial, "rotary_emb_base");
    if (!r.find(root, "rope_parameters")) partial = r.number("rotary_pct", 0.25);
    if (!(partial > 0.0 && partial <= 1.0)) r.bad("partial_rotary_factor", "must be in (0, 1]");
    c.rotary_dim = static_cast<int>(c.d_head * partial);  // HF: int(head_size * rotary_pct)
    if (c.rotary_dim < 2 || c.rotary_dim % 2 != 0) r.bad("rotary_pct", "must give an even number (>= 2) of rotary dims per head");
    c.inv_freq = rope_inv_freq(c.rope, c.rotary_dim);
    c.sliding_window.assign(c.n_layers, 0);
    return c;
  }

  // Llama-style decoder: Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3.
  const bool gemma = c.family == Family::Gemma2 || c.family == Family::Gemma3;
  c.n_layers = r.positive_int("num_hidden_layers", limits::kLayers);
  c.d_model = r.positive_int("hidden_size", limits::kDModel);
  c.n_heads = r.positive_int("num_attention_heads", limits::kHeads);
  c.n_kv_heads = r.positive_int("num_key_value_heads", limits::kHeads, c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0) r.bad("num_key_value_heads", "must divide num_attention_heads");
  if (!r.find(root, "head_dim") && c.d_model % c.n_heads != 0) r.bad("hidden_size", "must be divisible by num_attention_heads");
  c.d_head = r.positive_int("head_dim", limits::kDHead, c.d_model / c.n_heads);
  if (c.d_head % 2 != 0) r.bad("head_dim", "must be even for rotary embeddings");
  c.d_mlp = r.positive_int("intermediate_size", limits::kDMlp);
  c.d_vocab = r.positive_int("vocab_size", limits::kVocab);
  c.n_ctx = r.positive_int("max_position_embeddings", limits::kPositions, 2048);
  check_sizes(r, c);
  c.norm_eps = static_cast<float>(r.number("rms_norm_eps", 1e-6));
  c.norm = NormKind::RMSNorm;
  // Gemma configs name it hidden_activation (older ones also carry hidden_act, which HF ignores).
  c.act = gemma ? parse_activation(r, "hidden_activation", "gelu_pytorch_tanh") : parse_activation(r, "hidden_act", "silu");
  c.gated_mlp = true;
  c.rotary = true;
  c.tied_embeddings = r.boolean("tie_word_embeddings", gemma);
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.d_head));
  c.qk_norm = c.family == Family::Qwen3 || c.family == Family::Gemma3;
  if (gemma) {
    // HF: scaling = query_pre_attn_scalar ** -0.5 (a Python float, rounded to float32 in the matmul).
    const double scalar = r.number("query_pre_attn_scalar", c.d_head);
    if (!(scalar > 0)) r.bad("query_pre_attn_scalar", "must be positive");
    c.attn_scale = static_cast<float>(1.0 / std::sqrt(scalar));
    c.embed_scale = static_cast<float>(std::sqrt(static_cast<double>(c.d_model)));
    c.norm_plus_one = true;
    c.sandwich_norms = true;
    const double attn_cap = r.number("attn_logit_softcapping", 0.0), final_cap = r.number("final_logit_softcapping", 0.0);
    if (attn_cap < 0) r.bad("attn_logit_softcapping", "must be positive or null");
    if (final_cap < 0) r.bad("final_logit_softcapping", "must be positive or null");
    c.attn_softcap = static_cast<float>(attn_cap);
    c.final_softcap = static_cast<float>(final_cap);
  }
  if (gemma || c.family == Family::Qwen3) {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    c.mlp_bias = false;
  } else if (c.family == Family::Qwen2) {
    c.qkv_bias = true;
    c.o_bias = false;
    c.mlp_bias = false;
  } else {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    c.mlp_bias = r.boolean("mlp_bias", false);
  }
  if (r.number("pretraining_tp", 1.0) != 1.0) {
    // pretraining_tp only changes how HF splits matmuls; results are the same math.
  }
  c.rotary_dim = c.d_head;
  const Json *rope_params = r.find(root, "rope_parameters");
  if (c.family == Family::Gemma3) {
    // Global layers: full_attention (classic: rope_theta + rope_scaling); sliding layers:
    // sliding_attention (classic: rope_local_base_freq, unscaled).
    if (rope_params && rope_params->is_object() && rope_params->get("full_attention")) {
      c.rope = parse_rope(r, rope_params->get("full_attention"), nullptr, "rope_theta", 1e6);
      const Json *local = rope_params->get("sliding_attention");
      c.inv_freq_local = rope_inv_freq(local ? parse_rope(r, local, nullptr, "rope_theta", 10000.0) : RopeConfig{}, c.d_head);
    } else {
      c.rope = parse_rope(r, rope_params, nullptr, "rope_theta", 1e6);
      RopeConfig local;
      local.theta = r.number("rope_local_base_freq", 10000.0);
      if (!(local.theta > 0)) r.bad("rope_local_base_freq", "must be positive");
      c.inv_freq_local = rope_inv_freq(local, c.d_head);
    }
  } else {
    c.rope = parse_rope(r, rope_params);
  }
  c.inv_freq = rope_inv_freq(c.rope, c.d_head);

  // Sliding windows: transformers-5 configs list layer_types; older ones imply them.
  c.sliding_window.assign(c.n_layers, 0);
  int window = 0;
  if (const Json *w = r.find(root, "sliding_window")) {
    if (!w->is_number() || !w->is_integer || w->integer <= 0) r.bad("sliding_window", "must be a positive integer or null");
    window = static_cast<int>(std::min<int64_t>(w->integer, limits::kWindow));
  }
  const Json *layer_types = r.find(root, "layer_types");
  if (layer_types) {
    if (!layer_types->is_array() || static_cast<int>(layer_types->array.size()) != c.n_layers)
      r.bad("layer_types", "must list one type per layer");
    for (int i = 0; i < c.n_layers; ++i) {
      const Json &t = layer_types->array[i];
      if (!t.is_string()) r.bad("layer_types", "entries must be strings");
      if (t.string == "sliding_attention") {
        if (window == 0) r.bad("sliding_window", "is required when layer_types has sliding_attention");
        c.sliding_window[i] = window;
      } else if (t.string != "full_attention") {
        fail(code::kUnsupportedConfig, path + ": layer type '" + t.string + "' is not supported");
      }
    }
  } else if (c.family == Family::Mistral) {
    for (int i = 0; i < c.n_layers; ++i) c.sliding_window[i] = window;
  } else if (c.family == Family::Gemma2) {
    // Older Gemma 2 configs: even layers are local (sliding), odd ones global.
    for (int i = 0; i < c.n_layers; i += 2) c.sliding_window[i] = window;
  } else if (c.family == Family::Gemma3) {
    // Older Gemma 3 configs: every sliding_window_pattern-th layer is global.
    const int pattern = r.positive_int("sliding_window_pattern", limits::kLayers, 6);
    for (int i = 0; i < c.n_layers; ++i)
      if ((i + 1) % pattern != 0) c.sliding_window[i] = window;
  } else if (c.family == Family::Qwen2 || c.family == Family::Qwen3) {
    if (r.boolean("use_sliding_window", false)) {
      int max_window_layers = r.positive_int("max_window_layers", limits::kLayers, c.n_layers);
      for (int i = max_window_layers; i < c.n_layers; ++i) c.sliding_window[i] = window;
    }
  }
  return c;
}

}  // namespace nt
