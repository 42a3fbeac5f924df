// NativeModel and NativeKvCache methods and the load/run workers. Each call copies its JS
// arguments into plain structs (the "baton") on the JS thread; Execute() never touches JS
// except through the JS hook bridge.
#include "api/model-wrap.h"

#include "api/errors.h"
#include "api/js-hooks.h"
#include "api/run-buffers.h"
#include "api/run-options.h"
#include "api/worker.h"
#include "engine/error.h"

namespace nt {

namespace {

AddonData *addon(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string dir, LoadOptions options, std::shared_ptr<TaskControl> control)
      : PromiseWorker(env), dir_(std::move(dir)), options_(std::move(options)), control_(std::move(control)) {
    options_.control = control_.get();
  }

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
  std::shared_ptr<TaskControl> control_;
  std::unique_ptr<Model> model_;
};

class RunWorker : public PromiseWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<Model> model, const HookTable &table)
      : PromiseWorker(env), model_(std::move(model)), args_(table.points().size()) {}

  std::shared_ptr<Model> model_;
  ForwardRequest req_;
  RunArgs args_;

 protected:
  void work() override { model_->forward(req_, &args_.plan); }
  // Resolves to {captures: Float32Array[], logits: Float32Array | null}.
  void OnOK() override {
    if (args_.bridge) args_.bridge->release();
    Napi::Env env = Env();
    try {
      const std::vector<Napi::Value> out = args_.buffers.deliver(env);
      deferred_.Resolve(run_result(env, args_, out));
    } catch (const Napi::Error &e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error &e) override {
    if (args_.bridge) args_.bridge->release();
    PromiseWorker::OnError(e);
  }
  Napi::Value js_error(Napi::Env env) override { return args_.bridge ? args_.bridge->error(env) : Napi::Value(); }
};

}  // namespace

Napi::Function ModelWrap::define(Napi::Env env, Napi::FunctionReference *ctor_out) {
  Napi::Function ctor = DefineClass(env, "NativeModel",
                                    {InstanceMethod<&ModelWrap::config>("config"), InstanceMethod<&ModelWrap::hooks>("hooks"),
                                     InstanceMethod<&ModelWrap::run>("run"), InstanceMethod<&ModelWrap::backward>("backward"),
                                     InstanceMethod<&ModelWrap::create_cache>("createCache"), InstanceMethod<&ModelWrap::shift_cache>("shiftCache"),
                                     InstanceMethod<&ModelWrap::admit_to_cache>("admitToCache"),
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
  o.Set("compute", checked(env)->compute() == NT_F32 ? "f32" : checked(env)->compute() == NT_F16 ? "f16" : "bf16");
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
  const std::shared_ptr<const HookTable> snapshot = model->hooks();
  auto *w = new RunWorker(env, model, *snapshot);
  Napi::Promise promise = w->promise();
  try {
    parse_run_options(env, info[0].As<Napi::Object>(), *model, *snapshot, w->req_, w->args_, true);
  } catch (...) {
    if (w->args_.bridge) w->args_.bridge->release();
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

// Strings of a JS array (non-strings skipped), or none where `v` is not an array.
static std::vector<std::string> string_list(const Napi::Value &v) {
  std::vector<std::string> out;
  if (!v.IsArray()) return out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++)
    if (a.Get(i).IsString()) out.push_back(a.Get(i).As<Napi::String>().Utf8Value());
  return out;
}

// loadModel(dir, { threads?, device?: 'cpu' | 'cuda', dtype?: 'f32' | 'f16' | 'bf16', compute?: 'f32' | 'bf16', backendDir?,
// libraryDirs?, control? })
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
    if (!o.Get("compute").IsUndefined()) {
      const std::string compute = o.Get("compute").IsString() ? o.Get("compute").As<Napi::String>().Utf8Value() : "";
      if (compute == "f32") options.compute = NT_F32;
      else if (compute == "bf16") options.compute = NT_BF16;
      else throw_coded(env, code::kInvalidInput, "compute must be f32 or bf16");
    }
    if (options.device != "cpu" && options.device != "cuda") throw_coded(env, code::kInvalidInput, "device must be cpu or cuda");
  }
  std::shared_ptr<TaskControl> control;
  if (info.Length() > 1 && info[1].IsObject()) control = task_control(env, info[1].As<Napi::Object>().Get("control"));
  auto *w = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), options, control);
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

Napi::Function TaskWrap::define(Napi::Env env, Napi::FunctionReference *ctor_out) {
  Napi::Function ctor =
      DefineClass(env, "NativeTaskControl", {InstanceMethod<&TaskWrap::cancel>("cancel"), InstanceMethod<&TaskWrap::progress>("progress")});
  *ctor_out = Napi::Persistent(ctor);
  return ctor;
}

TaskWrap::TaskWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<TaskWrap>(info) {}

Napi::Value TaskWrap::cancel(const Napi::CallbackInfo &info) {
  control->cancelled = true;
  return info.Env().Undefined();
}

Napi::Value TaskWrap::progress(const Napi::CallbackInfo &info) {
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, static_cast<double>(control->done.load()));
  a.Set(1u, static_cast<double>(control->total.load()));
  return a;
}

std::shared_ptr<TaskControl> task_control(Napi::Env env, Napi::Value v) {
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon(env)->task_ctor.Value()))
    throw_coded(env, code::kInvalidInput, "control must be a NativeTaskControl");
  return TaskWrap::Unwrap(v.As<Napi::Object>())->control;
}

}  // namespace nt
