// NativeModel methods and the load/run AsyncWorkers. Execute() never touches JS: arguments
// are copied into plain structs (the "baton") on the JS thread first.
#include "api/model-wrap.h"

#include <new>
#include <unordered_set>

#include "api/errors.h"
#include "engine/error.h"

namespace nt {

namespace {

struct AddonData {
  Napi::FunctionReference model_ctor;
};

// Runs `body`, converting any C++ failure into (code, message) for the JS thread.
template <class F>
bool guarded(F body, std::string *code_out, std::string *message_out) {
  try {
    body();
    return true;
  } catch (const EngineError &e) {
    *code_out = e.code();
    *message_out = e.what();
  } catch (const std::bad_alloc &) {
    *code_out = code::kOutOfMemory;
    *message_out = "out of memory";
  } catch (const std::exception &e) {
    *code_out = code::kInternal;
    *message_out = std::string("internal error: ") + e.what();
  }
  return false;
}

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (!guarded([this] { work(); }, &code_, &message_)) SetError(message_);
  }
  void OnError(const Napi::Error &) override { deferred_.Reject(coded_error(Env(), code_, message_).Value()); }
  virtual void work() = 0;

  Napi::Promise::Deferred deferred_;
  std::string code_, message_;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string dir, LoadOptions options) : PromiseWorker(env), dir_(std::move(dir)), options_(options) {}

 protected:
  void work() override { model_ = Model::load(dir_, options_); }
  void OnOK() override { deferred_.Resolve(ModelWrap::wrap(Env(), std::shared_ptr<Model>(std::move(model_)))); }

 private:
  std::string dir_;
  LoadOptions options_;
  std::unique_ptr<Model> model_;
};

// Copies captured activations straight into the JS-owned typed arrays.
class CaptureSink : public HookSink {
 public:
  explicit CaptureSink(size_t n_hooks) : dest_(n_hooks, nullptr) {}
  void set(int index, float *dest) { dest_[static_cast<size_t>(index)] = dest; }
  bool active(int index) const override { return dest_[static_cast<size_t>(index)] != nullptr; }
  void fire(int index, float *data, const std::vector<int64_t> &shape) override {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::copy(data, data + n, dest_[static_cast<size_t>(index)]);
  }

 private:
  std::vector<float *> dest_;
};

class RunWorker : public PromiseWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<Model> model) : PromiseWorker(env), model_(std::move(model)), sink_(model_->hooks().points().size()) {}

  // Keeps a JS value (a typed array) alive until the worker is destroyed.
  void keep(Napi::Value v) { refs_.push_back(Napi::Persistent(v.As<Napi::Object>())); }

  std::shared_ptr<Model> model_;
  CaptureSink sink_;
  ForwardRequest req_;

 protected:
  void work() override { model_->forward(req_, &sink_); }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

[[noreturn]] void throw_coded(Napi::Env env, const char *code, const std::string &message) { throw coded_error(env, code, message); }

}  // namespace

Napi::Function ModelWrap::define(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "NativeModel",
                                    {InstanceMethod<&ModelWrap::config>("config"), InstanceMethod<&ModelWrap::hooks>("hooks"),
                                     InstanceMethod<&ModelWrap::run>("run"), InstanceMethod<&ModelWrap::dispose>("dispose"),
                                     InstanceAccessor<&ModelWrap::disposed>("disposed")});
  AddonData *data = new AddonData();
  data->model_ctor = Napi::Persistent(ctor);
  env.SetInstanceData<AddonData>(data);
  return ctor;
}

Napi::Object ModelWrap::wrap(Napi::Env env, std::shared_ptr<Model> model) {
  auto *holder = new std::shared_ptr<Model>(std::move(model));
  Napi::External<std::shared_ptr<Model>> ext =
      Napi::External<std::shared_ptr<Model>>::New(env, holder, [](Napi::Env, std::shared_ptr<Model> *p) { delete p; });
  return env.GetInstanceData<AddonData>()->model_ctor.New({ext});
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
    o.Set("rope", rope);
  }
  o.Set("threads", checked(env)->threads());
  return o;
}

Napi::Value ModelWrap::hooks(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const HookTable &table = checked(env)->hooks();
  const auto &points = table.points();
  Napi::Array out = Napi::Array::New(env, points.size());
  for (size_t i = 0; i < points.size(); ++i) {
    Napi::Object h = Napi::Object::New(env);
    h.Set("name", points[i].name);
    h.Set("layer", points[i].layer);
    Napi::Array shape = Napi::Array::New(env, points[i].shape.size());
    for (size_t j = 0; j < points[i].shape.size(); ++j) {
      const int64_t dim = points[i].shape[j];
      if (dim == kDimBatch) shape.Set(static_cast<uint32_t>(j), "batch");
      else if (dim == kDimPos) shape.Set(static_cast<uint32_t>(j), "pos");
      else shape.Set(static_cast<uint32_t>(j), static_cast<double>(dim));
    }
    h.Set("shape", shape);
    out.Set(static_cast<uint32_t>(i), h);
  }
  return out;
}

// run(tokens: Int32Array, batch, pos, hookIndices: Int32Array, buffers: Float32Array[],
//     logits: Float32Array | null): Promise<void>
Napi::Value ModelWrap::run(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() != 6 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsTypedArray() ||
      !info[4].IsArray())
    throw_coded(env, code::kInvalidInput, "run(tokens, batch, pos, hookIndices, buffers, logits): bad arguments");
  Napi::TypedArray tok = info[0].As<Napi::TypedArray>();
  if (tok.TypedArrayType() != napi_int32_array) throw_coded(env, code::kInvalidInput, "tokens must be an Int32Array");
  const int64_t batch = info[1].As<Napi::Number>().Int64Value(), pos = info[2].As<Napi::Number>().Int64Value();
  if (batch < 1 || pos < 1 || static_cast<int64_t>(tok.ElementLength()) != batch * pos)
    throw_coded(env, code::kInvalidInput, "tokens must hold batch x pos ids with batch, pos >= 1");

  RunWorker *w = new RunWorker(env, model);
  Napi::Promise promise = w->promise();
  try {
    w->keep(tok);
    w->req_.tokens = tok.As<Napi::Int32Array>().Data();
    w->req_.batch = batch;
    w->req_.pos = pos;
    const HookTable &table = model->hooks();
    Napi::TypedArray idx_arr = info[3].As<Napi::TypedArray>();
    if (idx_arr.TypedArrayType() != napi_int32_array) throw_coded(env, code::kInvalidInput, "hookIndices must be an Int32Array");
    Napi::Int32Array indices = idx_arr.As<Napi::Int32Array>();
    Napi::Array bufs = info[4].As<Napi::Array>();
    if (bufs.Length() != indices.ElementLength()) throw_coded(env, code::kInvalidInput, "one buffer per hook index is required");
    std::unordered_set<int> seen;
    for (uint32_t i = 0; i < bufs.Length(); ++i) {
      const int index = indices[i];
      if (index < 0 || index >= static_cast<int>(table.points().size()))
        throw_coded(env, code::kUnknownHook, "hook index " + std::to_string(index) + " is out of range");
      if (!seen.insert(index).second)
        throw_coded(env, code::kInvalidInput, "hook '" + table.points()[static_cast<size_t>(index)].name + "' is captured twice");
      Napi::Value b = bufs.Get(i);
      if (!b.IsTypedArray() || b.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw_coded(env, code::kInvalidInput, "capture buffers must be Float32Arrays");
      Napi::Float32Array f = b.As<Napi::Float32Array>();
      const int64_t need = table.numel(index, batch, pos);
      if (static_cast<int64_t>(f.ElementLength()) != need)
        throw_coded(env, code::kBufferSize, "buffer for '" + table.points()[static_cast<size_t>(index)].name + "' has " +
                                                std::to_string(f.ElementLength()) + " floats, needs " + std::to_string(need));
      w->keep(f);
      w->sink_.set(index, f.Data());
    }
    if (!info[5].IsNull() && !info[5].IsUndefined()) {
      if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw_coded(env, code::kInvalidInput, "logits must be a Float32Array or null");
      Napi::Float32Array f = info[5].As<Napi::Float32Array>();
      const int64_t need = batch * pos * model->config().d_vocab;
      if (static_cast<int64_t>(f.ElementLength()) != need)
        throw_coded(env, code::kBufferSize, "logits buffer has " + std::to_string(f.ElementLength()) + " floats, needs " + std::to_string(need));
      w->keep(f);
      w->req_.logits = f.Data();
    }
  } catch (...) {
    delete w;
    throw;
  }
  w->Queue();
  return promise;
}

Napi::Value ModelWrap::dispose(const Napi::CallbackInfo &info) {
  model_.reset();
  return info.Env().Undefined();
}

Napi::Value ModelWrap::disposed(const Napi::CallbackInfo &info) { return Napi::Boolean::New(info.Env(), !model_); }

Napi::Value load_model(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_coded(env, code::kInvalidInput, "loadModel(dir: string, threads?: number)");
  LoadOptions options;
  if (info.Length() > 1 && info[1].IsNumber()) options.threads = info[1].As<Napi::Number>().Int32Value();
  LoadWorker *w = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), options);
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

}  // namespace nt
