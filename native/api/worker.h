// AsyncWorker base for promise-returning calls: Execute() runs `work()` on libuv's pool and
// turns engine exceptions into a coded rejection (or the JS error a hook threw).
#pragma once

#include <napi.h>

#include <string>

#include "api/errors.h"

namespace nt {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override;
  void OnError(const Napi::Error &) override;
  virtual void work() = 0;
  // A JS value to reject with instead of a coded error (set by JS hook callbacks).
  virtual Napi::Value js_error(Napi::Env) { return Napi::Value(); }

  Napi::Promise::Deferred deferred_;
  std::string code_, message_;
};

}  // namespace nt
