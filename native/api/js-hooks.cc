// JsHookBridge: one BlockingCall per hook firing; the JS side signals completion through a
// condition variable. A view over native memory is detached after the call so a hook that
// keeps a reference sees an empty array instead of freed memory.
#include "api/js-hooks.h"

#include <cstring>

#include "engine/error.h"

namespace nt {

struct JsHookCall {
  JsHookBridge *bridge;
  int id;
  int hook_index;
  float *data;
  const std::vector<int64_t> *shape;
  const HookContext *ctx;
  bool done = false;
};

JsHookBridge::JsHookBridge(Napi::Env env, Napi::Function dispatcher) {
  tsfn_ = Napi::ThreadSafeFunction::New(env, dispatcher, "neurotap-hook", 0, 1);
}

JsHookBridge::~JsHookBridge() = default;

void JsHookBridge::release() {
  if (!released_) {
    released_ = true;
    tsfn_.Release();
  }
}

Napi::Value JsHookBridge::error(Napi::Env) {
  if (!failed_ || error_.IsEmpty()) return Napi::Value();
  return error_.Value();
}

void js_hook_run(Napi::Env env, Napi::Function dispatcher, JsHookCall *call) {
  JsHookBridge *bridge = call->bridge;
  int64_t n = 1;
  for (int64_t d : *call->shape) n *= d;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  bool external = true;
  Napi::ArrayBuffer buffer;
  try {
    buffer = Napi::ArrayBuffer::New(env, call->data, bytes);
  } catch (const Napi::Error &) {
    // Runtimes that forbid external buffers: copy in and out instead.
    external = false;
    buffer = Napi::ArrayBuffer::New(env, bytes);
    std::memcpy(buffer.Data(), call->data, bytes);
  }
  Napi::Array shape = Napi::Array::New(env, call->shape->size());
  for (size_t i = 0; i < call->shape->size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>((*call->shape)[i]));
  Napi::Object ctx = Napi::Object::New(env);
  ctx.Set("hookIndex", call->hook_index);
  ctx.Set("pos0", static_cast<double>(call->ctx->pos0));
  ctx.Set("step", call->ctx->step);
  ctx.Set("promptLength", static_cast<double>(call->ctx->prompt_len));
  try {
    dispatcher.Call({Napi::Number::New(env, call->id), Napi::Float32Array::New(env, static_cast<size_t>(n), buffer, 0), shape, ctx});
    if (!external) std::memcpy(call->data, buffer.Data(), bytes);
  } catch (const Napi::Error &e) {
    std::lock_guard<std::mutex> lock(bridge->mu_);
    if (!bridge->failed_) {
      bridge->failed_ = true;
      bridge->error_ = Napi::Reference<Napi::Value>::New(e.Value(), 1);
    }
  }
  if (!buffer.IsDetached()) buffer.Detach();
  {
    std::lock_guard<std::mutex> lock(bridge->mu_);
    call->done = true;
  }
  bridge->cv_.notify_all();
}

void JsHookBridge::call(int id, int hook_index, float *data, const std::vector<int64_t> &shape, const HookContext &ctx) {
  JsHookCall call{this, id, hook_index, data, &shape, &ctx};
  napi_status status = tsfn_.BlockingCall(&call, [](Napi::Env env, Napi::Function fn, JsHookCall *c) {
    if (env == nullptr) {  // the environment is shutting down
      std::lock_guard<std::mutex> lock(c->bridge->mu_);
      c->bridge->failed_ = true;
      c->done = true;
      c->bridge->cv_.notify_all();
      return;
    }
    js_hook_run(env, fn, c);
  });
  if (status != napi_ok) fail(code::kHookFailed, "could not call the JS hook (the environment is closing)");
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return call.done; });
  if (failed_) fail(code::kHookFailed, "a JS hook threw");
}

}  // namespace nt
