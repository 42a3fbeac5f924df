// NativeModel.attachSae / detachSae: copies the SAE's float32 tensors (src/sae/) into an
// engine SaeParams on the JS thread; packing the encoder and waiting for running forwards
// happen on libuv's pool.
#include <napi.h>

#include "api/errors.h"
#include "api/model-wrap.h"
#include "api/worker.h"
#include "engine/error.h"

namespace nt {

namespace {

class SaeWorker : public PromiseWorker {
 public:
  SaeWorker(Napi::Env env, std::shared_ptr<Model> model, int base) : PromiseWorker(env), model_(std::move(model)), base_(base) {}
  bool attach = false;
  bool use_error_term = false;
  SaeParams params;

 protected:
  void work() override {
    if (attach) model_->attach_sae(base_, std::move(params), use_error_term);
    else model_->detach_sae(base_);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

 private:
  std::shared_ptr<Model> model_;
  int base_;
};

[[noreturn]] void bad(Napi::Env env, const std::string &message) { throw coded_error(env, code::kInvalidInput, message); }

std::vector<float> floats(Napi::Env env, Napi::Object o, const char *key, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) bad(env, std::string("attachSae: missing tensor ") + key);
    return {};
  }
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    bad(env, std::string("attachSae: ") + key + " must be a Float32Array");
  Napi::Float32Array f = v.As<Napi::Float32Array>();
  return std::vector<float>(f.Data(), f.Data() + f.ElementLength());
}

int64_t integer(Napi::Env env, Napi::Object o, const char *key) {
  if (!o.Get(key).IsNumber()) bad(env, std::string("attachSae: ") + key + " must be a number");
  return o.Get(key).As<Napi::Number>().Int64Value();
}

}  // namespace

// attachSae(index, {architecture, normalization, dIn, dSae, k?, rescaleActsByDecoderNorm?,
//   applyBDecToInput, normScale?,
//   W_enc, b_enc, W_dec, b_dec, threshold?, r_mag?, b_mag?}, useErrorTerm): Promise<void>
Napi::Value ModelWrap::attach_sae(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsObject()) bad(env, "attachSae(index, sae, useErrorTerm): bad arguments");
  Napi::Object o = info[1].As<Napi::Object>();
  auto *w = new SaeWorker(env, model, info[0].As<Napi::Number>().Int32Value());
  try {
    SaeParams &p = w->params;
    const std::string arch = o.Get("architecture").ToString().Utf8Value(), norm = o.Get("normalization").ToString().Utf8Value();
    if (arch == "standard") p.arch = SaeArch::Standard;
    else if (arch == "jumprelu") p.arch = SaeArch::JumpRelu;
    else if (arch == "topk") p.arch = SaeArch::TopK;
    else if (arch == "gated") p.arch = SaeArch::Gated;
    else bad(env, "attachSae: unknown architecture '" + arch + "'");
    if (norm == "none") p.norm = SaeNorm::None;
    else if (norm == "scale") p.norm = SaeNorm::Scale;
    else if (norm == "constant_norm_rescale") p.norm = SaeNorm::ConstantNormRescale;
    else if (norm == "layer_norm") p.norm = SaeNorm::LayerNorm;
    else bad(env, "attachSae: unknown normalization '" + norm + "'");
    p.d_in = integer(env, o, "dIn");
    p.d_sae = integer(env, o, "dSae");
    if (p.arch == SaeArch::TopK) p.k = integer(env, o, "k");
    p.rescale_acts_by_decoder_norm = o.Get("rescaleActsByDecoderNorm").ToBoolean();
    p.apply_b_dec_to_input = o.Get("applyBDecToInput").ToBoolean();
    if (o.Get("normScale").IsNumber()) p.norm_scale = o.Get("normScale").As<Napi::Number>().FloatValue();
    p.W_enc = floats(env, o, "W_enc", true);
    p.b_enc = floats(env, o, "b_enc", true);
    p.W_dec = floats(env, o, "W_dec", true);
    p.b_dec = floats(env, o, "b_dec", true);
    p.threshold = floats(env, o, "threshold", p.arch == SaeArch::JumpRelu);
    p.r_mag = floats(env, o, "r_mag", p.arch == SaeArch::Gated);
    p.b_mag = floats(env, o, "b_mag", p.arch == SaeArch::Gated);
    w->attach = true;
    w->use_error_term = info[2].ToBoolean();
  } catch (...) {
    delete w;
    throw;
  }
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

// detachSae(index): Promise<void>
Napi::Value ModelWrap::detach_sae(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() != 1 || !info[0].IsNumber()) bad(env, "detachSae(index): bad arguments");
  auto *w = new SaeWorker(env, model, info[0].As<Napi::Number>().Int32Value());
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

}  // namespace nt
