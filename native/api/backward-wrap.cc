// NativeModel.backward: copies run()'s options plus the metric (terms, dlogits or a JS metric
// function), seeds, stop-gradient masks and the gradient hook plan into an engine
// BackwardRequest on the JS thread, runs Model::backward on libuv's pool, and resolves to the
// captures, logits, gradient captures and per-row metric values. Tests: test/backward-api.test.ts.
#include <cmath>
#include <unordered_set>

#include "api/errors.h"
#include "api/model-wrap.h"
#include "api/run-options.h"
#include "api/worker.h"
#include "engine/backward.h"
#include "engine/error.h"

namespace nt {

namespace {

class BackwardWorker : public PromiseWorker {
 public:
  BackwardWorker(Napi::Env env, std::shared_ptr<Model> model, const HookTable &table)
      : PromiseWorker(env), model_(std::move(model)), args_(table.points().size()), grad_plan_(table.points().size()) {}

  std::shared_ptr<Model> model_;
  BackwardRequest req_;
  RunArgs args_;
  HookPlan grad_plan_;
  std::vector<size_t> grad_slots_;  // args_.buffers outputs of the gradient captures, in request order
  int metric_rows_slot_ = -1;

 protected:
  void work() override { model_->backward(req_, &args_.plan, &grad_plan_); }
  // Resolves to {captures, logits, grads: Float32Array[], metricRows: Float32Array | null}.
  void OnOK() override {
    if (args_.bridge) args_.bridge->release();
    Napi::Env env = Env();
    try {
      const std::vector<Napi::Value> out = args_.buffers.deliver(env);
      Napi::Object result = run_result(env, args_, out);
      Napi::Array grads = Napi::Array::New(env, grad_slots_.size());
      for (size_t i = 0; i < grad_slots_.size(); ++i) grads.Set(static_cast<uint32_t>(i), out[grad_slots_[i]]);
      result.Set("grads", grads);
      result.Set("metricRows", metric_rows_slot_ >= 0 ? out[static_cast<size_t>(metric_rows_slot_)] : env.Null());
      deferred_.Resolve(result);
    } catch (const Napi::Error &e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error &e) override {
    if (args_.bridge) args_.bridge->release();
    PromiseWorker::OnError(e);
  }
  Napi::Value js_error(Napi::Env env) override { return args_.bridge ? args_.bridge->error(env) : Napi::Value(); }
};

[[noreturn]] void bad(Napi::Env env, const std::string &message) { throw_coded(env, code::kInvalidInput, "backward(): " + message); }

bool given(const Napi::Value &v) { return !v.IsUndefined() && !v.IsNull(); }

// An integer-valued number field of `o` in [lo, hi].
int64_t integer(Napi::Env env, Napi::Object o, const char *key, int64_t lo, int64_t hi, const std::string &what) {
  Napi::Value v = o.Get(key);
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) || d != std::floor(d))
    bad(env, what + "." + key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int64_t>(d);
}

int hook_index(Napi::Env env, Napi::Object o, int n_hooks, const char *what) {
  Napi::Value v = o.Get("index");
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d < n_hooks) || d != std::floor(d))
    throw_coded(env, code::kUnknownHook, std::string("backward(): ") + what + " hook index " + (v.IsNumber() ? std::to_string(d) : "(missing)") + " is out of range");
  return static_cast<int>(d);
}

// terms: [{kind: 0 | 1 | 2, row, pos, a, b?, weight?}] (engine MetricTerm).
std::vector<MetricTerm> parse_terms(Napi::Env env, Napi::Array arr, int64_t batch, int64_t pos, int64_t vocab) {
  std::vector<MetricTerm> out;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    if (!arr.Get(i).IsObject()) bad(env, "metric terms must be objects");
    Napi::Object t = arr.Get(i).As<Napi::Object>();
    const std::string what = "terms[" + std::to_string(i) + "]";
    MetricTerm m;
    m.kind = static_cast<MetricTerm::Kind>(integer(env, t, "kind", 0, 2, what));
    m.row = integer(env, t, "row", 0, batch - 1, what);
    m.pos = integer(env, t, "pos", 0, pos - 1, what);
    m.a = static_cast<int32_t>(integer(env, t, "a", 0, vocab - 1, what));
    if (m.kind == MetricTerm::LogitDiff) m.b = static_cast<int32_t>(integer(env, t, "b", 0, vocab - 1, what));
    if (given(t.Get("weight"))) {
      const double w = t.Get("weight").IsNumber() ? t.Get("weight").As<Napi::Number>().DoubleValue() : NAN;
      if (!std::isfinite(w)) bad(env, what + ".weight must be a finite number");
      m.weight = static_cast<float>(w);
    }
    out.push_back(m);
  }
  return out;
}

}  // namespace

// backward({...run options (no cache, no logitsLastOnly), terms?, dlogits?: Float32Array,
//           metricCallbackId?, seeds?: [{index, data: Float32Array}], replicas?,
//           detach?: [{pattern?, normScale?, mlpAct?}] (per layer), finalNormScaleDetached?,
//           gradCaptures?: [{index}], gradActions?: NativeAction[]}): Promise<...>
Napi::Value ModelWrap::backward(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Model> model = checked(env);
  if (info.Length() != 1 || !info[0].IsObject()) throw_coded(env, code::kInvalidInput, "backward(options): bad arguments");
  Napi::Object o = info[0].As<Napi::Object>();
  const std::shared_ptr<const HookTable> snapshot = model->hooks();
  const HookTable &table = *snapshot;
  const int n_hooks = static_cast<int>(table.points().size());
  const ModelConfig &config = model->config();
  auto *w = new BackwardWorker(env, model, table);
  Napi::Promise promise = w->promise();
  try {
    BackwardRequest &req = w->req_;
    parse_run_options(env, o, *model, table, req.forward, w->args_, false);
    const int64_t batch = req.forward.batch, pos = req.forward.pos;

    if (given(o.Get("replicas"))) req.replicas = integer(env, o, "replicas", 1, INT32_MAX, "options");
    if (given(o.Get("keepBytes"))) req.keep_bytes = integer(env, o, "keepBytes", 0, int64_t(1) << 52, "options");
    // The metric: exactly one of terms, dlogits, metricCallbackId and seeds.
    const bool has_terms = given(o.Get("terms")), has_dlogits = given(o.Get("dlogits")), has_fn = given(o.Get("metricCallbackId")),
               has_seeds = given(o.Get("seeds"));
    if (int(has_terms) + int(has_dlogits) + int(has_fn) + int(has_seeds) != 1)
      bad(env, "give exactly one of terms, dlogits, metricCallbackId and seeds");
    if (!has_seeds && req.replicas != 1) bad(env, "replicas > 1 needs seeds (a metric gives one backward pass)");
    if (has_terms) {
      if (!o.Get("terms").IsArray() || o.Get("terms").As<Napi::Array>().Length() == 0) bad(env, "terms must be a non-empty array");
      req.terms = parse_terms(env, o.Get("terms").As<Napi::Array>(), batch, pos, config.d_vocab);
      w->metric_rows_slot_ = static_cast<int>(w->args_.buffers.outputs());
      req.metric_rows = static_cast<float *>(w->args_.buffers.output(env, "the metric per row", napi_float32_array, static_cast<size_t>(batch), env.Undefined()));
    }
    if (has_dlogits) {
      const size_t need = static_cast<size_t>(batch * pos * config.d_vocab);
      if (length_of(env, o.Get("dlogits"), napi_float32_array, "dlogits") != need)
        throw_coded(env, code::kBufferSize, "backward(): dlogits must hold batch x pos x vocab = " + std::to_string(need) + " floats");
      req.custom.dlogits = static_cast<const float *>(w->args_.buffers.input(env, o.Get("dlogits"), napi_float32_array, "dlogits"));
    }
    if (has_fn) {
      if (!o.Get("metricCallbackId").IsNumber()) bad(env, "metricCallbackId must be a number");
      bridge_of(env, o, w->args_);
      req.custom.callback = std::make_shared<JsHookCallback>(w->args_.bridge, o.Get("metricCallbackId").As<Napi::Number>().Int32Value());
    }
    if (has_seeds) {
      if (!o.Get("seeds").IsArray() || o.Get("seeds").As<Napi::Array>().Length() == 0) bad(env, "seeds must be a non-empty array");
      Napi::Array arr = o.Get("seeds").As<Napi::Array>();
      std::unordered_set<int> seen;
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        if (!arr.Get(i).IsObject()) bad(env, "seeds must be {index, data} objects");
        Napi::Object s = arr.Get(i).As<Napi::Object>();
        Seed seed;
        seed.index = hook_index(env, s, n_hooks, "seed");
        const std::string &name = table.points()[static_cast<size_t>(seed.index)].name;
        if (!seen.insert(seed.index).second) bad(env, "two seeds at '" + name + "'");
        const size_t need = static_cast<size_t>(req.replicas * table.numel(seed.index, batch, pos, pos));
        if (length_of(env, s.Get("data"), napi_float32_array, "seed data") != need)
          throw_coded(env, code::kBufferSize, "backward(): the seed at '" + name + "' must hold replicas x the hook's size = " + std::to_string(need) + " floats");
        seed.data = static_cast<const float *>(w->args_.buffers.input(env, s.Get("data"), napi_float32_array, "seed data"));
        req.seeds.push_back(seed);
      }
    }
    Napi::Value detach = o.Get("detach");
    if (given(detach)) {
      if (!detach.IsArray() || detach.As<Napi::Array>().Length() > static_cast<uint32_t>(config.n_layers))
        bad(env, "detach must be an array of at most one entry per layer (" + std::to_string(config.n_layers) + ")");
      Napi::Array arr = detach.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Detach d;
        if (arr.Get(i).IsObject()) {
          Napi::Object l = arr.Get(i).As<Napi::Object>();
          d.pattern = l.Get("pattern").ToBoolean();
          d.norm_scale = l.Get("normScale").ToBoolean();
          d.mlp_act = l.Get("mlpAct").ToBoolean();
        } else if (given(arr.Get(i))) {
          bad(env, "detach entries must be {pattern?, normScale?, mlpAct?} objects");
        }
        req.detach.push_back(d);
      }
    }
    req.final_norm_scale_detached = o.Get("finalNormScaleDetached").ToBoolean();

    Napi::Value caps = o.Get("gradCaptures");
    if (given(caps)) {
      if (!caps.IsArray()) bad(env, "gradCaptures must be an array of {index}");
      Napi::Array arr = caps.As<Napi::Array>();
      std::unordered_set<int> seen;
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        if (!arr.Get(i).IsObject()) bad(env, "gradCaptures must be {index} objects");
        const int index = hook_index(env, arr.Get(i).As<Napi::Object>(), n_hooks, "gradient capture");
        const std::string &name = table.points()[static_cast<size_t>(index)].name;
        if (!seen.insert(index).second) bad(env, "the gradient at '" + name + "' is captured twice");
        const int64_t need = req.replicas * table.numel(index, batch, pos, pos);
        w->grad_slots_.push_back(w->args_.buffers.outputs());
        float *dest = static_cast<float *>(
            w->args_.buffers.output(env, "the gradient buffer for '" + name + "'", napi_float32_array, static_cast<size_t>(need), env.Undefined()));
        w->grad_plan_.set_capture(index, dest, need);
      }
    }
    parse_actions(env, o, o.Get("gradActions"), n_hooks, w->grad_plan_, w->args_);
  } catch (...) {
    if (w->args_.bridge) w->args_.bridge->release();
    delete w;
    throw;
  }
  w->Queue();
  return promise;
}

}  // namespace nt
