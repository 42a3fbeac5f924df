// NativeModel: the JS object wrapping one engine Model (src/bindings/native.ts types it).
// Work runs on libuv's pool through AsyncWorkers; the JS thread only copies arguments.
#pragma once

#include <napi.h>

#include <memory>

#include "engine/model.h"

namespace nt {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  // Wraps an already-loaded model in a new JS NativeModel.
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<Model> model);

  explicit ModelWrap(const Napi::CallbackInfo &info);

 private:
  std::shared_ptr<Model> checked(Napi::Env env);
  Napi::Value config(const Napi::CallbackInfo &info);
  Napi::Value hooks(const Napi::CallbackInfo &info);
  Napi::Value run(const Napi::CallbackInfo &info);
  Napi::Value dispose(const Napi::CallbackInfo &info);
  Napi::Value disposed(const Napi::CallbackInfo &info);

  // Shared with in-flight workers: dispose() drops this reference, the last worker frees it.
  std::shared_ptr<Model> model_;
};

// loadModel(dir: string, threads: number): Promise<NativeModel>
Napi::Value load_model(const Napi::CallbackInfo &info);

}  // namespace nt
