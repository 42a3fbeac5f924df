// NativeKvCache, and the model methods that move a cache's rows (engine/cache-ops.cc) on
// libuv's pool: shiftCache(cache, delta) and admitToCache(cache, row, source | null, sourceRow?).
#include <functional>

#include "api/errors.h"
#include "api/model-wrap.h"
#include "api/run-options.h"
#include "api/worker.h"
#include "engine/error.h"

namespace nt {

namespace {

// Runs `op` off the JS thread, resolving to undefined. Holds the model and caches until it ends.
class CacheOpWorker : public PromiseWorker {
 public:
  CacheOpWorker(Napi::Env env, std::shared_ptr<Model> model, std::shared_ptr<KvCache> a, std::shared_ptr<KvCache> b, std::function<void()> op)
      : PromiseWorker(env), model_(std::move(model)), a_(std::move(a)), b_(std::move(b)), op_(std::move(op)) {}

 protected:
  void work() override { op_(); }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

 private:
  std::shared_ptr<Model> model_;
  std::shared_ptr<KvCache> a_, b_;
  std::function<void()> op_;
};

}  // namespace

std::shared_ptr<KvCache> CacheWrap::of(Napi::Env env, Napi::Value v, const Model &model, const char *what) {
  AddonData *addon = env.GetInstanceData<AddonData>();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon->cache_ctor.Value()))
    throw_coded(env, code::kInvalidInput, std::string(what) + " must be a KV cache made by this model");
  CacheWrap *cw = CacheWrap::Unwrap(v.As<Napi::Object>());
  if (cw->owner != &model || !cw->cache) throw_coded(env, code::kInvalidInput, std::string("the ") + what + " belongs to another model");
  return cw->cache;
}

Napi::Value ModelWrap::shift_cache(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() != 2 || !info[1].IsNumber()) throw_coded(env, code::kInvalidInput, "shiftCache(cache, delta: number)");
  std::shared_ptr<KvCache> cache = CacheWrap::of(env, info[0], *model, "cache");
  const double d = info[1].As<Napi::Number>().DoubleValue();
  if (!(d == static_cast<double>(static_cast<int64_t>(d))) || d > 1e15 || d < -1e15) throw_coded(env, code::kInvalidInput, "delta must be an integer");
  const int64_t delta = static_cast<int64_t>(d);
  Model *m = model.get();
  KvCache *c = cache.get();
  auto *w = new CacheOpWorker(env, model, cache, nullptr, [m, c, delta] { m->shift_cache(*c, delta); });
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

Napi::Value ModelWrap::admit_to_cache(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() < 3 || info.Length() > 4 || !info[1].IsNumber() || (info.Length() == 4 && !info[3].IsNumber()))
    throw_coded(env, code::kInvalidInput, "admitToCache(cache, row: number, source: cache | null, sourceRow?: number)");
  std::shared_ptr<KvCache> dst = CacheWrap::of(env, info[0], *model, "cache");
  std::shared_ptr<KvCache> src = info[2].IsNull() || info[2].IsUndefined() ? nullptr : CacheWrap::of(env, info[2], *model, "source cache");
  if (src == dst) throw_coded(env, code::kInvalidInput, "the source cache is the target cache");
  const double r = info[1].As<Napi::Number>().DoubleValue();
  if (!(r >= 0 && r < 1e15 && r == static_cast<double>(static_cast<int64_t>(r)))) throw_coded(env, code::kInvalidInput, "row must be a non-negative integer");
  const int64_t row = static_cast<int64_t>(r);
  const double sr = info.Length() == 4 ? info[3].As<Napi::Number>().DoubleValue() : 0.0;
  if (!(sr >= 0 && sr < 1e15 && sr == static_cast<double>(static_cast<int64_t>(sr)))) throw_coded(env, code::kInvalidInput, "sourceRow must be a non-negative integer");
  const int64_t src_row = static_cast<int64_t>(sr);
  Model *m = model.get();
  KvCache *d = dst.get(), *s = src.get();
  auto *w = new CacheOpWorker(env, model, dst, src, [m, d, row, s, src_row] { m->admit_to_cache(*d, row, s, src_row); });
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

Napi::Function CacheWrap::define(Napi::Env env, Napi::FunctionReference *ctor_out) {
  Napi::Function ctor = DefineClass(env, "NativeKvCache",
                                    {InstanceAccessor<&CacheWrap::length>("length"), InstanceAccessor<&CacheWrap::capacity>("capacity"),
                                     InstanceAccessor<&CacheWrap::batch>("batch"), InstanceAccessor<&CacheWrap::pads>("pads")});
  *ctor_out = Napi::Persistent(ctor);
  return ctor;
}

CacheWrap::CacheWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<CacheWrap>(info) {}

Napi::Value CacheWrap::length(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), cache ? static_cast<double>(cache->len) : 0); }
Napi::Value CacheWrap::capacity(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), cache ? static_cast<double>(cache->capacity) : 0);
}
Napi::Value CacheWrap::batch(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), cache ? static_cast<double>(cache->batch) : 0); }
Napi::Value CacheWrap::pads(const Napi::CallbackInfo &info) {
  Napi::Array out = Napi::Array::New(info.Env(), cache ? cache->pad.size() : 0);
  for (uint32_t i = 0; cache && i < cache->pad.size(); ++i) out.Set(i, Napi::Number::New(info.Env(), cache->pad[i]));
  return out;
}

}  // namespace nt
