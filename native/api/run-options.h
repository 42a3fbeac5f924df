// Parsing of the options run() and backward() share (tokens, padding, captures, logits, edits,
// JS functions, SAE read-outs) from JS into an engine ForwardRequest and HookPlan, on the JS
// thread. Used by native/api/model-wrap.cc and native/api/backward-wrap.cc.
#pragma once

#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "api/js-hooks.h"
#include "api/run-buffers.h"
#include "engine/model.h"

namespace nt {

// What one run owns besides its engine request: the hook plan, the copied inputs and output
// blocks, the JS hook bridge (made on the first callback) and the KV cache it holds.
struct RunArgs {
  explicit RunArgs(size_t n_hooks) : plan(n_hooks) {}
  HookPlan plan;
  RunBuffers buffers;                  // every typed array the engine reads or writes
  std::shared_ptr<JsHookBridge> bridge;
  std::shared_ptr<KvCache> cache;
  Napi::ObjectReference cache_object;  // keeps the JS KV cache alive while the run is in flight
  std::shared_ptr<TaskControl> control;  // cancellation (run options' `control`)
  std::vector<size_t> capture_slots;   // buffers outputs of the captures, in request order
  int logits_slot = -1;
  int sampled_slot = -1;               // buffers output of the sampled token ids, or -1
};

[[noreturn]] void throw_coded(Napi::Env env, const char *code, const std::string &message);

// Typed-array accessors that throw coded errors on the wrong type.
Napi::TypedArray typed(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char *what);
size_t length_of(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char *what);

// The JS hook bridge of `args`, made from `o.dispatcher` on first use.
JsHookBridge &bridge_of(Napi::Env env, Napi::Object o, RunArgs &args);

// Parses run()'s options `o` ({tokens, batch, pos, pad?, cache?, captures?, saeFeatures?,
// logitsLastOnly?, stopAtLayer?, logits?, sample?, actions?, dispatcher?}) into `req` and `args`.
// sample: {temperature?, topK?, topP?, rng?: Uint32Array(4) (advanced in place when the run
// settles), rows?: Uint8Array(batch)}; the tokens come back as the result's `sampled`.
// `allow_cache`: false refuses a KV cache (backward passes). Throws coded errors.
void parse_run_options(Napi::Env env, Napi::Object o, Model &model, const HookTable &table, ForwardRequest &req, RunArgs &args, bool allow_cache);

// {captures: Float32Array[] (request order), logits: Float32Array | null, sampled: Int32Array |
// null} from the delivered outputs.
Napi::Object run_result(Napi::Env env, const RunArgs &args, const std::vector<Napi::Value> &out);

// Parses an array of hook actions ({index, kind: 'edit' | 'callback', ...}) into `plan`.
void parse_actions(Napi::Env env, Napi::Object o, Napi::Value actions, int n_hooks, HookPlan &plan, RunArgs &args);

}  // namespace nt
