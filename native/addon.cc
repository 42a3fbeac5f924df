// Addon entry point: registers the exported functions and classes only.
#include <napi.h>

#include "api/model-wrap.h"
#include "engine/hooks.h"

namespace {

Napi::Value cpu_features(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  o.Set("avx2", Napi::Boolean::New(env, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
  o.Set("avx512f", Napi::Boolean::New(env, __builtin_cpu_supports("avx512f")));
#else
  o.Set("avx2", Napi::Boolean::New(env, false));
  o.Set("avx512f", Napi::Boolean::New(env, false));
#endif
  return o;
}

// The hook table's kinds in order, for TypeScript's typed names (test/hooks.test.ts); SAE
// hooks (`{hook}.hook_sae_*`) have `sae: true`.
Napi::Value hook_kinds(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const size_t n = static_cast<size_t>(nt::HookKind::Count);
  Napi::Array out = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; ++i) {
    Napi::Object k = Napi::Object::New(env);
    k.Set("suffix", nt::hook_kind_suffix(static_cast<nt::HookKind>(i)));
    k.Set("perBlock", nt::hook_kind_per_block(static_cast<nt::HookKind>(i)));
    k.Set("sae", i >= static_cast<size_t>(nt::HookKind::SaeInput));
    out.Set(static_cast<uint32_t>(i), k);
  }
  return out;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto *data = new nt::AddonData();
  env.SetInstanceData<nt::AddonData>(data);
  exports.Set("NativeModel", nt::ModelWrap::define(env, &data->model_ctor));
  exports.Set("NativeKvCache", nt::CacheWrap::define(env, &data->cache_ctor));
  exports.Set("NativeTaskControl", nt::TaskWrap::define(env, &data->task_ctor));
  exports.Set("loadModel", Napi::Function::New(env, nt::load_model, "loadModel"));
  exports.Set("probeBackend", Napi::Function::New(env, nt::probe_backend, "probeBackend"));
  exports.Set("hookKinds", Napi::Function::New(env, hook_kinds, "hookKinds"));
  exports.Set("cpuFeatures", Napi::Function::New(env, cpu_features, "cpuFeatures"));
  return exports;
}

}  // namespace

NODE_API_MODULE(neurotap, init)
