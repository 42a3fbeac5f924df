// NativeModel and NativeKvCache methods and the load/run workers. Each call copies its JS
// arguments into plain structs (the "baton") on the JS thread; Execute() never touches JS
// except through the JS hook bridge.
#include "api/model-wrap.h"

#include <cmath>
#include <unordered_set>

#include "api/errors.h"
#include "api/js-hooks.h"
#include "api/run-buffers.h"
#include "api/worker.h"
#include "engine/error.h"

namespace nt {

namespace {

[[noreturn]] void throw_coded(Napi::Env env, const char *code, const std::string &message) { throw coded_error(env, code, message); }

AddonData *addon(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string dir, LoadOptions options) : PromiseWorker(env), dir_(std::move(dir)), options_(options) {}

 protected:
  void work() override { model_ = Model::load(dir_, options_); }
  void OnOK() override {
    auto *holder = new std::shared_ptr<Model>(std::move(model_));
    Napi::External<std::shared_ptr<Model>> ext =
        Napi::External<std::shared_ptr<Model>>::New(Env(), holder, [](Napi::Env, std::shared_ptr<Model> *p) { delete p; });
    deferred_.Resolve(addon(Env())->model_ctor.New({ext}));
  }

 private:
  std::string dir_;
  LoadOptions options_;
  std::unique_ptr<Model> model_;
};

class RunWorker : public PromiseWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<Model> model, const HookTable &table)
      : PromiseWorker(env), model_(std::move(model)), plan_(table.points().size()) {
    req_.hooks_version = table.version;
  }

  // Keeps a JS object (the KV cache) alive until the worker is destroyed.
  void keep(Napi::Object v) { refs_.push_back(Napi::Persistent(v)); }

  std::shared_ptr<Model> model_;
  std::shared_ptr<KvCache> cache_;
  std::shared_ptr<JsHookBridge> bridge_;
  HookPlan plan_;
  ForwardRequest req_;
  RunBuffers buffers_;                // every typed array the engine reads or writes
  std::vector<size_t> capture_slots_;  // buffers_ outputs of the captures, in request order
  int logits_slot_ = -1;

 protected:
  void work() override { model_->forward(req_, &plan_); }
  // Resolves to {captures: Float32Array[], logits: Float32Array | null}.
  void OnOK() override {
    if (bridge_) bridge_->release();
    Napi::Env env = Env();
    try {
      const std::vector<Napi::Value> out = buffers_.deliver(env);
      Napi::Object result = Napi::Object::New(env);
      Napi::Array captures = Napi::Array::New(env, capture_slots_.size());
      for (size_t i = 0; i < capture_slots_.size(); ++i) captures.Set(static_cast<uint32_t>(i), out[capture_slots_[i]]);
      result.Set("captures", captures);
      result.Set("logits", logits_slot_ >= 0 ? out[static_cast<size_t>(logits_slot_)] : env.Null());
      deferred_.Resolve(result);
    } catch (const Napi::Error &e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error &e) override {
    if (bridge_) bridge_->release();
    PromiseWorker::OnError(e);
  }
  Napi::Value js_error(Napi::Env env) override { return bridge_ ? bridge_->error(env) : Napi::Value(); }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

// Typed-array accessors that throw coded errors on the wrong type.
Napi::TypedArray typed(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char *what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw_coded(env, code::kInvalidInput, std::string(what) + " has the wrong type");
  return v.As<Napi::TypedArray>();
}

template <class T>
std::vector<T> int_list(Napi::Env env, Napi::Object o, const char *key) {
  std::vector<T> out;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return out;
  Napi::Int32Array a = typed(env, v, napi_int32_array, key).As<Napi::Int32Array>();
  for (size_t i = 0; i < a.ElementLength(); ++i) out.push_back(static_cast<T>(a[i]));
  return out;
}

size_t length_of(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char *what) {
  return typed(env, v, type, what).ElementLength();
}

float number_or(Napi::Object o, const char *key, float fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : fallback;
}

// Reads one edit action: {index, op, vector?, factor?, lo?, hi?, source?, positions?, last?,
// generated?, prompt?, rows?, heads?}.
Edit parse_edit(Napi::Env env, Napi::Object a, RunWorker *w) {
  static const std::pair<const char *, EditOp> ops[] = {{"add", EditOp::Add},
                                                         {"set", EditOp::Set},
                                                         {"zero", EditOp::Zero},
                                                         {"scale", EditOp::Scale},
                                                         {"projectOut", EditOp::ProjectOut},
                                                         {"projectionCap", EditOp::ProjectionCap},
                                                         {"patch", EditOp::Patch}};
  Edit e;
  const std::string op = a.Get("op").IsString() ? a.Get("op").As<Napi::String>().Utf8Value() : "";
  bool found = false;
  for (const auto &p : ops)
    if (op == p.first) {
      e.op = p.second;
      found = true;
    }
  if (!found) throw_coded(env, code::kInvalidInput, "unknown edit op '" + op + "'");
  Napi::Value vec = a.Get("vector");
  if (!vec.IsUndefined() && !vec.IsNull()) {
    Napi::Float32Array f = typed(env, vec, napi_float32_array, "edit vector").As<Napi::Float32Array>();
    e.vec.assign(f.Data(), f.Data() + f.ElementLength());
  }
  e.factor = number_or(a, "factor", 1.0f);
  e.lo = number_or(a, "lo", -INFINITY);
  e.hi = number_or(a, "hi", INFINITY);
  Napi::Value src = a.Get("source");
  if (!src.IsUndefined() && !src.IsNull()) {
    e.source_numel = static_cast<int64_t>(length_of(env, src, napi_float32_array, "patch source"));
    e.source = static_cast<const float *>(w->buffers_.input(env, src, napi_float32_array, "patch source"));
  }
  e.positions = int_list<int64_t>(env, a, "positions");
  e.rows = int_list<int32_t>(env, a, "rows");
  e.heads = int_list<int32_t>(env, a, "heads");
  e.last_only = a.Get("last").ToBoolean();
  e.generated_only = a.Get("generated").ToBoolean();
  e.prompt_only = a.Get("prompt").ToBoolean();
  return e;
}

}  // namespace

Napi::Function ModelWrap::define(Napi::Env env, Napi::FunctionReference *ctor_out) {
  Napi::Function ctor = DefineClass(env, "NativeModel",
                                    {InstanceMethod<&ModelWrap::config>("config"), InstanceMethod<&ModelWrap::hooks>("hooks"),
                                     InstanceMethod<&ModelWrap::run>("run"), InstanceMethod<&ModelWrap::create_cache>("createCache"),
                                     InstanceMethod<&ModelWrap::attach_sae>("attachSae"), InstanceMethod<&ModelWrap::detach_sae>("detachSae"),
                                     InstanceMethod<&ModelWrap::dispose>("dispose"), InstanceAccessor<&ModelWrap::disposed>("disposed")});
  *ctor_out = Napi::Persistent(ctor);
  return ctor;
}

ModelWrap::ModelWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<ModelWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw_coded(info.Env(), code::kInvalidInput, "NativeModel cannot be constructed directly; use loadModel()");
  model_ = *info[0].As<Napi::External<std::shared_ptr<Model>>>().Data();
}

std::shared_ptr<Model> ModelWrap::checked(Napi::Env env) {
  if (!model_) throw_coded(env, code::kDisposed, "the model has been disposed");
  return model_;
}

Napi::Value ModelWrap::config(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const ModelConfig &c = checked(env)->config();
  Napi::Object o = Napi::Object::New(env);
  o.Set("family", family_name(c.family));
  o.Set("architecture", c.architecture);
  o.Set("nLayers", c.n_layers);
  o.Set("dModel", c.d_model);
  o.Set("nHeads", c.n_heads);
  o.Set("nKvHeads", c.n_kv_heads);
  o.Set("dHead", c.d_head);
  o.Set("dMlp", c.d_mlp);
  o.Set("dVocab", c.d_vocab);
  o.Set("nCtx", c.n_ctx);
  o.Set("normEps", c.norm_eps);
  o.Set("normalization", c.norm == NormKind::LayerNorm ? "LN" : "RMS");
  o.Set("act", activation_name(c.act));
  o.Set("gatedMlp", c.gated_mlp);
  o.Set("positionalEmbedding", c.rotary ? "rotary" : "standard");
  o.Set("tiedEmbeddings", c.tied_embeddings);
  Napi::Array windows = Napi::Array::New(env, c.sliding_window.size());
  for (size_t i = 0; i < c.sliding_window.size(); ++i) windows.Set(static_cast<uint32_t>(i), c.sliding_window[i]);
  o.Set("slidingWindow", windows);
  if (c.rotary) {
    Napi::Object rope = Napi::Object::New(env);
    rope.Set("type", c.rope.type);
    rope.Set("theta", c.rope.theta);
    rope.Set("factor", c.rope.factor);
    rope.Set("rotaryDim", c.rotary_dim);
    o.Set("rope", rope);
  }
  o.Set("parallelResidual", c.parallel_residual);
  o.Set("sandwichNorms", c.sandwich_norms);
  o.Set("qkNorm", c.qk_norm);
  o.Set("attnSoftcap", c.attn_softcap);
  o.Set("finalSoftcap", c.final_softcap);
  o.Set("threads", checked(env)->threads());
  o.Set("device", checked(env)->backend().name());
  o.Set("deviceName", checked(env)->backend().device_name());
  o.Set("dtype", checked(env)->dtype() == NT_F32 ? "f32" : checked(env)->dtype() == NT_F16 ? "f16" : "bf16");
  return o;
}

Napi::Value ModelWrap::hooks(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::shared_ptr<const HookTable> table = checked(env)->hooks();
  const auto &points = table->points();
  Napi::Array out = Napi::Array::New(env, points.size());
  for (size_t i = 0; i < points.size(); ++i) {
    Napi::Object h = Napi::Object::New(env);
    h.Set("name", points[i].name);
    h.Set("layer", points[i].layer);
    Napi::Array shape = Napi::Array::New(env, points[i].shape.size());
    for (size_t j = 0; j < points[i].shape.size(); ++j) {
      const int64_t dim = points[i].shape[j];
      const uint32_t at = static_cast<uint32_t>(j);
      if (dim == kDimBatch) shape.Set(at, "batch");
      else if (dim == kDimPos) shape.Set(at, "pos");
      else if (dim == kDimKeyPos) shape.Set(at, "key_pos");
      else shape.Set(at, static_cast<double>(dim));
    }
    h.Set("shape", shape);
    out.Set(static_cast<uint32_t>(i), h);
  }
  return out;
}

// run({tokens: Int32Array, batch, pos, pad?: Int32Array, cache?: NativeKvCache,
//      captures?: [{index, buffer: Float32Array}], logits?: Float32Array | null,
//      logitsLastOnly?: boolean, actions?: [{index, kind: 'edit' | 'callback', ...}],
//      dispatcher?: Function}): Promise<void>
Napi::Value ModelWrap::run(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() != 1 || !info[0].IsObject()) throw_coded(env, code::kInvalidInput, "run(options): bad arguments");
  Napi::Object o = info[0].As<Napi::Object>();
  const size_t n_tokens = length_of(env, o.Get("tokens"), napi_int32_array, "tokens");
  if (!o.Get("batch").IsNumber() || !o.Get("pos").IsNumber()) throw_coded(env, code::kInvalidInput, "run(): batch and pos must be numbers");
  const int64_t batch = o.Get("batch").As<Napi::Number>().Int64Value(), pos = o.Get("pos").As<Napi::Number>().Int64Value();
  if (batch < 1 || pos < 1 || static_cast<int64_t>(n_tokens) != batch * pos)
    throw_coded(env, code::kInvalidInput, "tokens must hold batch x pos ids with batch, pos >= 1");

  const std::shared_ptr<const HookTable> snapshot = model->hooks();
  const HookTable &table = *snapshot;
  auto *w = new RunWorker(env, model, table);
  Napi::Promise promise = w->promise();
  try {
    const int n_hooks = static_cast<int>(table.points().size());
    w->req_.tokens = static_cast<const int32_t *>(w->buffers_.input(env, o.Get("tokens"), napi_int32_array, "tokens"));
    w->req_.batch = batch;
    w->req_.pos = pos;
    Napi::Value pad = o.Get("pad");
    if (!pad.IsUndefined() && !pad.IsNull()) {
      if (static_cast<int64_t>(length_of(env, pad, napi_int32_array, "pad")) != batch) throw_coded(env, code::kInvalidInput, "pad must hold one entry per row");
      w->req_.pad = static_cast<const int32_t *>(w->buffers_.input(env, pad, napi_int32_array, "pad"));
    }
    int64_t key_pos = pos;
    Napi::Value cache = o.Get("cache");
    if (!cache.IsUndefined() && !cache.IsNull()) {
      if (!cache.IsObject() || !cache.As<Napi::Object>().InstanceOf(addon(env)->cache_ctor.Value()))
        throw_coded(env, code::kInvalidInput, "cache must be a KV cache made by this model");
      CacheWrap *cw = CacheWrap::Unwrap(cache.As<Napi::Object>());
      if (cw->owner != model.get()) throw_coded(env, code::kInvalidInput, "the KV cache belongs to another model");
      w->keep(cache.As<Napi::Object>());
      w->cache_ = cw->cache;
      w->req_.cache = cw->cache.get();
      key_pos += cw->cache->len;
    }
    Napi::Value caps = o.Get("captures");
    if (caps.IsArray()) {
      Napi::Array arr = caps.As<Napi::Array>();
      std::unordered_set<int> seen;
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        if (!arr.Get(i).IsObject() || !arr.Get(i).As<Napi::Object>().Get("index").IsNumber())
          throw_coded(env, code::kInvalidInput, "captures must be {index, buffer?} objects");
        Napi::Object c = arr.Get(i).As<Napi::Object>();
        const int index = c.Get("index").As<Napi::Number>().Int32Value();
        if (index < 0 || index >= n_hooks) throw_coded(env, code::kUnknownHook, "hook index " + std::to_string(index) + " is out of range");
        if (!seen.insert(index).second)
          throw_coded(env, code::kInvalidInput, "hook '" + table.points()[static_cast<size_t>(index)].name + "' is captured twice");
        const int64_t need = table.numel(index, batch, pos, key_pos);
        const std::string what = "the output buffer for '" + table.points()[static_cast<size_t>(index)].name + "'";
        w->capture_slots_.push_back(w->buffers_.outputs());
        float *dest = static_cast<float *>(w->buffers_.output(env, what, napi_float32_array, static_cast<size_t>(need), c.Get("buffer")));
        w->plan_.set_capture(index, dest, need);
      }
    }
    Napi::Value features = o.Get("saeFeatures");
    if (features.IsArray()) {
      Napi::Array arr = features.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Object t = arr.Get(i).As<Napi::Object>();
        SaeFeatures r;
        r.base = t.Get("index").As<Napi::Number>().Int32Value();
        r.k = t.Has("k") ? t.Get("k").As<Napi::Number>().Int64Value() : 0;
        if (r.k < 0) throw_coded(env, code::kInvalidInput, "top-k features need k >= 1");
        if (r.k > 0) {
          const size_t n = static_cast<size_t>(batch * pos * r.k);
          if (length_of(env, t.Get("indices"), napi_int32_array, "top-k indices") != n || length_of(env, t.Get("values"), napi_float32_array, "top-k values") != n)
            throw_coded(env, code::kBufferSize, "top-k feature buffers must hold batch x pos x k entries");
          r.indices = static_cast<int32_t *>(w->buffers_.output(env, "the top-k indices", napi_int32_array, n, t.Get("indices")));
          r.values = static_cast<float *>(w->buffers_.output(env, "the top-k values", napi_float32_array, n, t.Get("values")));
        }
        if (t.Has("counts")) {
          const size_t n = length_of(env, t.Get("counts"), napi_uint32_array, "feature counts");
          r.counts_len = static_cast<int64_t>(n);  // checked against d_sae under the run lock
          r.counts = static_cast<uint32_t *>(w->buffers_.output(env, "the feature counts", napi_uint32_array, n, t.Get("counts"), true));
        }
        if (t.Has("rows")) {
          if (static_cast<int64_t>(length_of(env, t.Get("rows"), napi_uint8_array, "counted rows")) != batch * pos)
            throw_coded(env, code::kBufferSize, "counted rows must hold batch x pos entries");
          r.rows = static_cast<const uint8_t *>(w->buffers_.input(env, t.Get("rows"), napi_uint8_array, "counted rows"));
        }
        w->req_.sae_features.push_back(r);
      }
    }
    w->req_.logits_last_only = o.Get("logitsLastOnly").ToBoolean();
    Napi::Value stop = o.Get("stopAtLayer");
    if (!stop.IsUndefined() && !stop.IsNull()) {
      const double s = stop.IsNumber() ? stop.As<Napi::Number>().DoubleValue() : -1.0;
      if (!(s >= 0 && s <= model->config().n_layers) || s != std::floor(s))
        throw_coded(env, code::kInvalidInput, "stopAtLayer must be an integer in [0, " + std::to_string(model->config().n_layers) + "]");
      w->req_.stop_at_layer = static_cast<int>(s);
    }
    // logits: a Float32Array to fill, true for a new one, null or absent for none.
    Napi::Value logits = o.Get("logits");
    if (!logits.IsUndefined() && !logits.IsNull() && !(logits.IsBoolean() && !logits.As<Napi::Boolean>().Value())) {
      const int64_t need = (w->req_.logits_last_only ? batch : batch * pos) * model->config().d_vocab;
      w->logits_slot_ = static_cast<int>(w->buffers_.outputs());
      w->req_.logits = static_cast<float *>(
          w->buffers_.output(env, "the logits buffer", napi_float32_array, static_cast<size_t>(need), logits.IsBoolean() ? env.Undefined() : logits));
    }
    Napi::Value actions = o.Get("actions");
    if (actions.IsArray()) {
      Napi::Array arr = actions.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        if (!arr.Get(i).IsObject()) throw_coded(env, code::kInvalidInput, "hook actions must be objects");
        Napi::Object a = arr.Get(i).As<Napi::Object>();
        const int index = a.Get("index").IsNumber() ? a.Get("index").As<Napi::Number>().Int32Value() : -1;
        if (index < 0 || index >= n_hooks) throw_coded(env, code::kUnknownHook, "hook index " + std::to_string(index) + " is out of range");
        const std::string kind = a.Get("kind").IsString() ? a.Get("kind").As<Napi::String>().Utf8Value() : "";
        if (kind == "edit") {
          w->plan_.add_edit(index, parse_edit(env, a, w));
        } else if (kind == "callback") {
          if (!w->bridge_) {
            Napi::Value dispatcher = o.Get("dispatcher");
            if (!dispatcher.IsFunction()) throw_coded(env, code::kInvalidInput, "callbacks need a dispatcher function");
            w->bridge_ = std::make_shared<JsHookBridge>(env, dispatcher.As<Napi::Function>());
          }
          w->plan_.add_callback(index, std::make_shared<JsHookCallback>(w->bridge_, a.Get("id").As<Napi::Number>().Int32Value()));
        } else {
          throw_coded(env, code::kInvalidInput, "unknown hook action kind '" + kind + "'");
        }
      }
    }
  } catch (...) {
    if (w->bridge_) w->bridge_->release();
    delete w;
    throw;
  }
  w->Queue();
  return promise;
}

Napi::Value ModelWrap::create_cache(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsNumber())
    throw_coded(env, code::kInvalidInput, "createCache(batch: number, capacity: number)");
  std::shared_ptr<KvCache> cache;
  try {
    cache = model->create_cache(info[0].As<Napi::Number>().Int64Value(), info[1].As<Napi::Number>().Int64Value());
  } catch (const EngineError &e) {
    throw_coded(env, e.code().c_str(), e.what());
  } catch (const std::bad_alloc &) {
    throw_coded(env, code::kOutOfMemory, "out of memory allocating the KV cache");
  }
  Napi::Object obj = addon(env)->cache_ctor.New({});
  CacheWrap *cw = CacheWrap::Unwrap(obj);
  cw->cache = std::move(cache);
  cw->owner = model.get();
  return obj;
}

Napi::Value ModelWrap::dispose(const Napi::CallbackInfo &info) {
  model_.reset();
  return info.Env().Undefined();
}

Napi::Value ModelWrap::disposed(const Napi::CallbackInfo &info) { return Napi::Boolean::New(info.Env(), !model_); }

Napi::Function CacheWrap::define(Napi::Env env, Napi::FunctionReference *ctor_out) {
  Napi::Function ctor = DefineClass(env, "NativeKvCache",
                                    {InstanceAccessor<&CacheWrap::length>("length"), InstanceAccessor<&CacheWrap::capacity>("capacity"),
                                     InstanceAccessor<&CacheWrap::batch>("batch")});
  *ctor_out = Napi::Persistent(ctor);
  return ctor;
}

CacheWrap::CacheWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<CacheWrap>(info) {}

Napi::Value CacheWrap::length(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), cache ? static_cast<double>(cache->len) : 0); }
Napi::Value CacheWrap::capacity(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), cache ? static_cast<double>(cache->capacity) : 0);
}
Napi::Value CacheWrap::batch(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), cache ? static_cast<double>(cache->batch) : 0); }

// Strings of a JS array (non-strings skipped), or none where `v` is not an array.
static std::vector<std::string> string_list(const Napi::Value &v) {
  std::vector<std::string> out;
  if (!v.IsArray()) return out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++)
    if (a.Get(i).IsString()) out.push_back(a.Get(i).As<Napi::String>().Utf8Value());
  return out;
}

// loadModel(dir, { threads?, device?: 'cpu' | 'cuda', dtype?: 'f32' | 'f16' | 'bf16', backendDir?, libraryDirs? })
Napi::Value load_model(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_coded(env, code::kInvalidInput, "loadModel(dir: string, options?: object)");
  LoadOptions options;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    if (o.Get("threads").IsNumber()) options.threads = o.Get("threads").As<Napi::Number>().Int32Value();
    if (o.Get("device").IsString()) options.device = o.Get("device").As<Napi::String>().Utf8Value();
    if (o.Get("backendDir").IsString()) options.backend_dir = o.Get("backendDir").As<Napi::String>().Utf8Value();
    options.library_dirs = string_list(o.Get("libraryDirs"));
    const std::string dtype = o.Get("dtype").IsString() ? o.Get("dtype").As<Napi::String>().Utf8Value() : "f32";
    if (dtype == "f32") options.dtype = NT_F32;
    else if (dtype == "f16") options.dtype = NT_F16;
    else if (dtype == "bf16") options.dtype = NT_BF16;
    else throw_coded(env, code::kInvalidInput, "dtype must be f32, f16 or bf16");
    if (options.device != "cpu" && options.device != "cuda") throw_coded(env, code::kInvalidInput, "device must be cpu or cuda");
  }
  auto *w = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), options);
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

// probeBackend(name, backendDir, libraryDirs?): { available, reason, device }
Napi::Value probe_backend(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) throw_coded(env, code::kInvalidInput, "probeBackend(name, dir)");
  std::string device;
  const std::string reason = Backend::probe(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(), &device,
                                            info.Length() > 2 ? string_list(info[2]) : std::vector<std::string>{});
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", reason.empty());
  o.Set("reason", reason);
  o.Set("device", device);
  return o;
}

}  // namespace nt
