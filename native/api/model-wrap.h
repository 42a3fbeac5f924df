// NativeModel and NativeKvCache: the JS objects wrapping an engine Model and a KV cache
// (src/bindings/native.ts types them). Work runs on libuv's pool through AsyncWorkers.
#pragma once

#include <napi.h>

#include <memory>

#include "engine/model.h"

namespace nt {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  // Also used by sae-wrap.cc.
  std::shared_ptr<Model> checked(Napi::Env env);

  static Napi::Function define(Napi::Env env, Napi::FunctionReference *ctor_out);
  explicit ModelWrap(const Napi::CallbackInfo &info);

 private:
  Napi::Value config(const Napi::CallbackInfo &info);
  Napi::Value hooks(const Napi::CallbackInfo &info);
  Napi::Value run(const Napi::CallbackInfo &info);
  Napi::Value backward(const Napi::CallbackInfo &info);  // backward-wrap.cc
  Napi::Value create_cache(const Napi::CallbackInfo &info);
  Napi::Value shift_cache(const Napi::CallbackInfo &info);     // cache-wrap.cc
  Napi::Value admit_to_cache(const Napi::CallbackInfo &info);  // cache-wrap.cc
  Napi::Value attach_sae(const Napi::CallbackInfo &info);  // sae-wrap.cc
  Napi::Value detach_sae(const Napi::CallbackInfo &info);
  Napi::Value dispose(const Napi::CallbackInfo &info);
  Napi::Value disposed(const Napi::CallbackInfo &info);

  // Shared with in-flight workers: dispose() drops this reference, the last worker frees it.
  std::shared_ptr<Model> model_;
};

class CacheWrap : public Napi::ObjectWrap<CacheWrap> {
 public:
  static Napi::Function define(Napi::Env env, Napi::FunctionReference *ctor_out);
  explicit CacheWrap(const Napi::CallbackInfo &info);

  std::shared_ptr<KvCache> cache;
  const Model *owner = nullptr;

  // The cache of `v` when it is a NativeKvCache of `model`; throws a coded error naming `what` otherwise.
  static std::shared_ptr<KvCache> of(Napi::Env env, Napi::Value v, const Model &model, const char *what);

 private:
  Napi::Value length(const Napi::CallbackInfo &info);
  Napi::Value capacity(const Napi::CallbackInfo &info);
  Napi::Value batch(const Napi::CallbackInfo &info);
  Napi::Value pads(const Napi::CallbackInfo &info);  // a copy of each row's left padding
};

// NativeTaskControl: JS's handle on a load or run in flight (cancel(), progress()).
class TaskWrap : public Napi::ObjectWrap<TaskWrap> {
 public:
  static Napi::Function define(Napi::Env env, Napi::FunctionReference *ctor_out);
  explicit TaskWrap(const Napi::CallbackInfo &info);

  std::shared_ptr<TaskControl> control = std::make_shared<TaskControl>();

 private:
  Napi::Value cancel(const Napi::CallbackInfo &info);
  Napi::Value progress(const Napi::CallbackInfo &info);  // [done, total]
};

struct AddonData {
  Napi::FunctionReference model_ctor;
  Napi::FunctionReference cache_ctor;
  Napi::FunctionReference task_ctor;
};

// The TaskControl of a NativeTaskControl option value; null when `v` is undefined.
std::shared_ptr<TaskControl> task_control(Napi::Env env, Napi::Value v);

// loadModel(dir: string, options): Promise<NativeModel>
Napi::Value load_model(const Napi::CallbackInfo &info);
// probeBackend(name: string, dir: string): { available, reason, device }
Napi::Value probe_backend(const Napi::CallbackInfo &info);

}  // namespace nt
