// Parsing of run() and backward() options into engine requests (native/api/run-options.h).
// Tests: test/robustness.test.ts, test/errors.test.ts, test/backward-api.test.ts.
#include "api/run-options.h"

#include <cmath>
#include <unordered_set>

#include "api/errors.h"
#include "api/model-wrap.h"
#include "engine/error.h"

namespace nt {

void throw_coded(Napi::Env env, const char *code, const std::string &message) { throw coded_error(env, code, message); }

Napi::TypedArray typed(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char *what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw_coded(env, code::kInvalidInput, std::string(what) + " has the wrong type");
  return v.As<Napi::TypedArray>();
}

size_t length_of(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char *what) {
  return typed(env, v, type, what).ElementLength();
}

namespace {

template <class T>
std::vector<T> int_list(Napi::Env env, Napi::Object o, const char *key) {
  std::vector<T> out;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return out;
  Napi::Int32Array a = typed(env, v, napi_int32_array, key).As<Napi::Int32Array>();
  for (size_t i = 0; i < a.ElementLength(); ++i) out.push_back(static_cast<T>(a[i]));
  return out;
}

float number_or(Napi::Object o, const char *key, float fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : fallback;
}

// Reads one edit action: {index, op, vector?, factor?, lo?, hi?, source?, positions?, last?,
// generated?, prompt?, rows?, heads?, perRow?}.
Edit parse_edit(Napi::Env env, Napi::Object a, RunArgs &args) {
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
    e.source = static_cast<const float *>(args.buffers.input(env, src, napi_float32_array, "patch source"));
  }
  e.positions = int_list<int64_t>(env, a, "positions");
  e.rows = int_list<int32_t>(env, a, "rows");
  e.heads = int_list<int32_t>(env, a, "heads");
  e.last_only = a.Get("last").ToBoolean();
  e.generated_only = a.Get("generated").ToBoolean();
  e.prompt_only = a.Get("prompt").ToBoolean();
  e.per_row = a.Get("perRow").ToBoolean();
  return e;
}

// A number option of `o`, `fallback` when absent; anything else is ERR_INVALID_INPUT.
double sample_number(Napi::Env env, Napi::Object o, const char *key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw_coded(env, code::kInvalidInput, std::string("sample.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// sample: {temperature?, topK?, topP?, rng?, rows?} (engine/sampling.h; ranges checked by the engine).
void parse_sample(Napi::Env env, Napi::Value v, int64_t batch, ForwardRequest &req, RunArgs &args) {
  if (!v.IsObject()) throw_coded(env, code::kInvalidInput, "sample must be an object");
  Napi::Object o = v.As<Napi::Object>();
  SampleRequest &s = req.sampling;
  s.temperature = sample_number(env, o, "temperature", 0.0);
  const double k = sample_number(env, o, "topK", 0.0);
  if (!(k >= 0 && k <= 9007199254740991.0) || k != std::floor(k)) throw_coded(env, code::kInvalidInput, "sample.topK must be an integer >= 0");
  s.top_k = static_cast<int64_t>(k);
  s.top_p = sample_number(env, o, "topP", 1.0);
  Napi::Value rng = o.Get("rng");
  if (!rng.IsUndefined()) {
    if (length_of(env, rng, napi_uint32_array, "sample.rng") != 4) throw_coded(env, code::kBufferSize, "sample.rng must hold 4 words");
    s.rng = static_cast<uint32_t *>(args.buffers.output(env, "the random state", napi_uint32_array, 4, rng, /*copy_in=*/true));
  }
  Napi::Value rows = o.Get("rows");
  if (!rows.IsUndefined()) {
    if (static_cast<int64_t>(length_of(env, rows, napi_uint8_array, "sample.rows")) != batch)
      throw_coded(env, code::kBufferSize, "sample.rows must hold one entry per row");
    s.rows = static_cast<const uint8_t *>(args.buffers.input(env, rows, napi_uint8_array, "sample.rows"));
  }
  args.sampled_slot = static_cast<int>(args.buffers.outputs());
  s.tokens = static_cast<int32_t *>(args.buffers.output(env, "the sampled tokens", napi_int32_array, static_cast<size_t>(batch), env.Undefined()));
  req.sample = true;
}

}  // namespace

JsHookBridge &bridge_of(Napi::Env env, Napi::Object o, RunArgs &args) {
  if (!args.bridge) {
    Napi::Value dispatcher = o.Get("dispatcher");
    if (!dispatcher.IsFunction()) throw_coded(env, code::kInvalidInput, "callbacks need a dispatcher function");
    args.bridge = std::make_shared<JsHookBridge>(env, dispatcher.As<Napi::Function>());
  }
  return *args.bridge;
}

void parse_actions(Napi::Env env, Napi::Object o, Napi::Value actions, int n_hooks, HookPlan &plan, RunArgs &args) {
  if (!actions.IsArray()) return;
  Napi::Array arr = actions.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    if (!arr.Get(i).IsObject()) throw_coded(env, code::kInvalidInput, "hook actions must be objects");
    Napi::Object a = arr.Get(i).As<Napi::Object>();
    const int index = a.Get("index").IsNumber() ? a.Get("index").As<Napi::Number>().Int32Value() : -1;
    if (index < 0 || index >= n_hooks) throw_coded(env, code::kUnknownHook, "hook index " + std::to_string(index) + " is out of range");
    const std::string kind = a.Get("kind").IsString() ? a.Get("kind").As<Napi::String>().Utf8Value() : "";
    if (kind == "edit") {
      plan.add_edit(index, parse_edit(env, a, args));
    } else if (kind == "callback") {
      if (!a.Get("id").IsNumber()) throw_coded(env, code::kInvalidInput, "a callback action needs a numeric id");
      bridge_of(env, o, args);
      plan.add_callback(index, std::make_shared<JsHookCallback>(args.bridge, a.Get("id").As<Napi::Number>().Int32Value()));
    } else {
      throw_coded(env, code::kInvalidInput, "unknown hook action kind '" + kind + "'");
    }
  }
}

Napi::Object run_result(Napi::Env env, const RunArgs &args, const std::vector<Napi::Value> &out) {
  Napi::Object result = Napi::Object::New(env);
  Napi::Array captures = Napi::Array::New(env, args.capture_slots.size());
  for (size_t i = 0; i < args.capture_slots.size(); ++i) captures.Set(static_cast<uint32_t>(i), out[args.capture_slots[i]]);
  result.Set("captures", captures);
  result.Set("logits", args.logits_slot >= 0 ? out[static_cast<size_t>(args.logits_slot)] : env.Null());
  result.Set("sampled", args.sampled_slot >= 0 ? out[static_cast<size_t>(args.sampled_slot)] : env.Null());
  return result;
}

void parse_run_options(Napi::Env env, Napi::Object o, Model &model, const HookTable &table, ForwardRequest &req, RunArgs &args, bool allow_cache) {
  const size_t n_tokens = length_of(env, o.Get("tokens"), napi_int32_array, "tokens");
  if (!o.Get("batch").IsNumber() || !o.Get("pos").IsNumber()) throw_coded(env, code::kInvalidInput, "batch and pos must be numbers");
  const int64_t batch = o.Get("batch").As<Napi::Number>().Int64Value(), pos = o.Get("pos").As<Napi::Number>().Int64Value();
  if (batch < 1 || pos < 1 || static_cast<int64_t>(n_tokens) != batch * pos)
    throw_coded(env, code::kInvalidInput, "tokens must hold batch x pos ids with batch, pos >= 1");
  const int n_hooks = static_cast<int>(table.points().size());
  req.hooks_version = table.version;
  req.tokens = static_cast<const int32_t *>(args.buffers.input(env, o.Get("tokens"), napi_int32_array, "tokens"));
  req.batch = batch;
  req.pos = pos;
  args.control = task_control(env, o.Get("control"));
  req.control = args.control.get();
  Napi::Value right_pad = o.Get("rightPad");
  if (!right_pad.IsUndefined() && !right_pad.IsNull()) {
    if (static_cast<int64_t>(length_of(env, right_pad, napi_int32_array, "rightPad")) != batch) throw_coded(env, code::kInvalidInput, "rightPad must hold one entry per row");
    req.right_pad = static_cast<const int32_t *>(args.buffers.input(env, right_pad, napi_int32_array, "rightPad"));
  }
  Napi::Value pad = o.Get("pad");
  if (!pad.IsUndefined() && !pad.IsNull()) {
    if (static_cast<int64_t>(length_of(env, pad, napi_int32_array, "pad")) != batch) throw_coded(env, code::kInvalidInput, "pad must hold one entry per row");
    req.pad = static_cast<const int32_t *>(args.buffers.input(env, pad, napi_int32_array, "pad"));
  }
  int64_t key_pos = pos;
  Napi::Value cache = o.Get("cache");
  if (!cache.IsUndefined() && !cache.IsNull()) {
    if (!allow_cache) throw_coded(env, code::kInvalidInput, "a backward pass takes no KV cache");
    AddonData *addon = env.GetInstanceData<AddonData>();
    if (!cache.IsObject() || !cache.As<Napi::Object>().InstanceOf(addon->cache_ctor.Value()))
      throw_coded(env, code::kInvalidInput, "cache must be a KV cache made by this model");
    CacheWrap *cw = CacheWrap::Unwrap(cache.As<Napi::Object>());
    if (cw->owner != &model) throw_coded(env, code::kInvalidInput, "the KV cache belongs to another model");
    args.cache_object = Napi::Persistent(cache.As<Napi::Object>());
    args.cache = cw->cache;
    req.cache = cw->cache.get();
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
      args.capture_slots.push_back(args.buffers.outputs());
      float *dest = static_cast<float *>(args.buffers.output(env, what, napi_float32_array, static_cast<size_t>(need), c.Get("buffer")));
      args.plan.set_capture(index, dest, need);
    }
  }
  Napi::Value features = o.Get("saeFeatures");
  if (features.IsArray()) {
    Napi::Array arr = features.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      if (!arr.Get(i).IsObject() || !arr.Get(i).As<Napi::Object>().Get("index").IsNumber())
        throw_coded(env, code::kInvalidInput, "saeFeatures must be {index, ...} objects");
      Napi::Object t = arr.Get(i).As<Napi::Object>();
      SaeFeatures r;
      r.base = t.Get("index").As<Napi::Number>().Int32Value();
      r.k = t.Has("k") ? t.Get("k").As<Napi::Number>().Int64Value() : 0;
      if (r.k < 0) throw_coded(env, code::kInvalidInput, "top-k features need k >= 1");
      if (r.k > 0) {
        const size_t n = static_cast<size_t>(batch * pos * r.k);
        if (length_of(env, t.Get("indices"), napi_int32_array, "top-k indices") != n || length_of(env, t.Get("values"), napi_float32_array, "top-k values") != n)
          throw_coded(env, code::kBufferSize, "top-k feature buffers must hold batch x pos x k entries");
        r.indices = static_cast<int32_t *>(args.buffers.output(env, "the top-k indices", napi_int32_array, n, t.Get("indices")));
        r.values = static_cast<float *>(args.buffers.output(env, "the top-k values", napi_float32_array, n, t.Get("values")));
      }
      if (t.Has("counts")) {
        const size_t n = length_of(env, t.Get("counts"), napi_uint32_array, "feature counts");
        r.counts_len = static_cast<int64_t>(n);  // checked against d_sae under the run lock
        r.counts = static_cast<uint32_t *>(args.buffers.output(env, "the feature counts", napi_uint32_array, n, t.Get("counts"), true));
      }
      if (t.Has("rows")) {
        if (static_cast<int64_t>(length_of(env, t.Get("rows"), napi_uint8_array, "counted rows")) != batch * pos)
          throw_coded(env, code::kBufferSize, "counted rows must hold batch x pos entries");
        r.rows = static_cast<const uint8_t *>(args.buffers.input(env, t.Get("rows"), napi_uint8_array, "counted rows"));
      }
      req.sae_features.push_back(r);
    }
  }
  req.logits_last_only = o.Get("logitsLastOnly").ToBoolean();
  if (req.logits_last_only && !allow_cache) throw_coded(env, code::kInvalidInput, "a backward pass computes every position's logits (no logitsLastOnly)");
  Napi::Value stop = o.Get("stopAtLayer");
  if (!stop.IsUndefined() && !stop.IsNull()) {
    const double s = stop.IsNumber() ? stop.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(s >= 0 && s <= model.config().n_layers) || s != std::floor(s))
      throw_coded(env, code::kInvalidInput, "stopAtLayer must be an integer in [0, " + std::to_string(model.config().n_layers) + "]");
    req.stop_at_layer = static_cast<int>(s);
  }
  // logits: a Float32Array to fill, true for a new one, null or absent for none.
  Napi::Value logits = o.Get("logits");
  if (!logits.IsUndefined() && !logits.IsNull() && !(logits.IsBoolean() && !logits.As<Napi::Boolean>().Value())) {
    const int64_t need = (req.logits_last_only ? batch : batch * pos) * model.config().d_vocab;
    args.logits_slot = static_cast<int>(args.buffers.outputs());
    req.logits = static_cast<float *>(
        args.buffers.output(env, "the logits buffer", napi_float32_array, static_cast<size_t>(need), logits.IsBoolean() ? env.Undefined() : logits,
                            /*copy_in=*/false, /*overwritten=*/true));  // the head writes every element
  }
  Napi::Value sample = o.Get("sample");
  if (!sample.IsUndefined() && !sample.IsNull()) {
    if (!allow_cache) throw_coded(env, code::kInvalidInput, "a backward pass does not sample");
    parse_sample(env, sample, batch, req, args);
  }
  parse_actions(env, o, o.Get("actions"), n_hooks, args.plan, args);
}

}  // namespace nt
