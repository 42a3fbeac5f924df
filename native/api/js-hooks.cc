// JsHookBridge: one BlockingCall per hook firing; the JS side signals completion through a
// condition variable. JS gets a copy of the activation in a JS-owned buffer, copied back after
// the call and then detached, so nothing a hook keeps or transfers can reach native memory.
#include "api/js-hooks.h"

#include <cstring>

#include "api/errors.h"
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
  return error_.Value().Get("value");
}

// JS thread. Keeps the first value a hook threw, whatever it is: it sits in a holder object
// because a reference cannot be taken on a primitive (`throw 'x'`, `throw null`).
void JsHookBridge::keep_error(Napi::Env env, Napi::Value thrown) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failed_) return;
  failed_ = true;
  try {
    Napi::Object holder = Napi::Object::New(env);
    holder.Set("value", thrown);
    error_ = Napi::Persistent(holder);
  } catch (...) {  // the environment is closing: the run fails with ERR_HOOK_FAILED instead
  }
}

namespace {

// Runs the dispatcher on a copy of the activation and copies the result back. Throws what the
// hook threw (as Napi::Error, which carries any JS value).
void run_hook(Napi::Env env, Napi::Function dispatcher, const JsHookCall &call) {
  int64_t n = 1;
  for (int64_t d : *call.shape) n *= d;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, bytes);
  std::memcpy(buffer.Data(), call.data, bytes);
  Napi::Array shape = Napi::Array::New(env, call.shape->size());
  for (size_t i = 0; i < call.shape->size(); ++i) shape.Set(static_cast<uint32_t>(i), static_cast<double>((*call.shape)[i]));
  Napi::Object ctx = Napi::Object::New(env);
  ctx.Set("hookIndex", call.hook_index);
  ctx.Set("pos0", static_cast<double>(call.ctx->pos0));
  ctx.Set("step", call.ctx->step);
  ctx.Set("promptLength", static_cast<double>(call.ctx->prompt_len));
  dispatcher.Call({Napi::Number::New(env, call.id), Napi::Float32Array::New(env, static_cast<size_t>(n), buffer, 0), shape, ctx});
  // A hook that transferred the buffer (postMessage, structuredClone) took its edits with it.
  if (buffer.IsDetached())
    throw coded_error(env, code::kHookReturn, "a JS hook detached (transferred) its activation's buffer; copy act.data instead of transferring it");
  std::memcpy(call.data, buffer.Data(), bytes);
  buffer.Detach();  // a view kept past the call reads as empty
}

}  // namespace

void js_hook_run(Napi::Env env, Napi::Function dispatcher, JsHookCall *call) {
  JsHookBridge *bridge = call->bridge;
  // Whatever happens here, the worker must be woken: an exception escaping this callback would
  // leave it waiting forever.
  try {
    run_hook(env, dispatcher, *call);
  } catch (const Napi::Error &e) {
    bridge->keep_error(env, e.Value());
  } catch (const std::exception &e) {
    bridge->keep_error(env, coded_error(env, code::kHookFailed, std::string("calling a JS hook failed: ") + e.what()).Value());
  } catch (...) {
    bridge->keep_error(env, coded_error(env, code::kHookFailed, "calling a JS hook failed").Value());
  }
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
