// Runs JS hook functions synchronously in the middle of a native forward: the worker thread
// hands the activation to the JS thread through a ThreadSafeFunction and waits. JS sees a
// Float32Array over a JS-owned copy, copied back and detached when the call returns.
#pragma once

#include <napi.h>

#include <condition_variable>
#include <memory>
#include <mutex>

#include "engine/edits.h"

namespace nt {

// Shared by the hook callbacks of one run and its worker.
class JsHookBridge {
 public:
  // `dispatcher(id, f32array, shape, ctx)` calls the user's function `id` (src/hooks/).
  JsHookBridge(Napi::Env env, Napi::Function dispatcher);
  ~JsHookBridge();

  // Worker thread: runs JS function `id` on `data` and waits for it. Throws
  // EngineError(ERR_HOOK_FAILED) if it threw (the JS error is kept for the rejection).
  void call(int id, int hook_index, float *data, const std::vector<int64_t> &shape, const HookContext &ctx);
  // JS thread, after the run: the error a hook threw, if any.
  Napi::Value error(Napi::Env env);
  // JS thread: releases the ThreadSafeFunction so the event loop can exit.
  void release();
  // JS thread: records what a hook threw (any JS value); the first one wins.
  void keep_error(Napi::Env env, Napi::Value thrown);

 private:
  Napi::ThreadSafeFunction tsfn_;
  bool released_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  Napi::ObjectReference error_;  // {value: what the hook threw}
  bool failed_ = false;
  friend void js_hook_run(Napi::Env env, Napi::Function dispatcher, struct JsHookCall *call);
  friend struct JsHookCall;
};

// The engine-side HookCallback for one JS function.
class JsHookCallback : public HookCallback {
 public:
  JsHookCallback(std::shared_ptr<JsHookBridge> bridge, int id) : bridge_(std::move(bridge)), id_(id) {}
  void call(int hook_index, float *data, const std::vector<int64_t> &shape, const HookContext &ctx) override {
    bridge_->call(id_, hook_index, data, shape, ctx);
  }

 private:
  std::shared_ptr<JsHookBridge> bridge_;
  int id_;
};

}  // namespace nt
