// The backward pass: gradients of a metric on the logits (or of seed gradients at hooks) with
// respect to every hook's activation. The forward keeps each block's input (the residual
// stream); the backward recomputes one block at a time through Pass::layer with a tape (edits
// replayed, JS function outputs restored) and walks it back op by op, firing the gradient plan
// at each hook as the forward fires its plan. Tests: test/backward.test.ts (torch autograd).
#include "engine/backward-pass.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/error.h"
#include "engine/pass.h"

namespace nt {

Backward::Backward(Model &m, const BackwardRequest &req, HookPlan *plan, HookPlan *grad_plan)
    : m_(m),
      c_(m.config_),
      req_(req),
      plan_(plan),
      gplan_(grad_plan),
      be_(m.be_),
      api_(m.be_->api()),
      bx_(m.be_->ctx()),
      pass_(m, req.forward, plan, Pass::Mode::Save) {
  S = req.replicas;
  B = req.forward.batch;
  T = req.forward.pos;
  M = B * T;
  Bs = S * B;
  Ms = S * M;
  d = c_.d_model;
  H = c_.n_heads;
  G = c_.n_kv_heads;
  D = c_.d_head;
  dq = H * D;
  dkv = G * D;
  V = c_.d_vocab;
  n_run_ = req.forward.stop_at_layer >= 0 ? std::min(req.forward.stop_at_layer, c_.n_layers) : c_.n_layers;
  ctx_s_ = pass_.context();
  ctx_s_.batch = Bs;
  if (req.forward.pad) {
    for (int64_t s = 0; s < S; ++s) pad_s_.insert(pad_s_.end(), req.forward.pad, req.forward.pad + B);
    ctx_s_.pad = pad_s_.data();
    pad_s_buf_ = DeviceBuffer::upload(be_, pad_s_.data(), pad_s_.size() * sizeof(int32_t));
  }
  auto negate = [&](const std::vector<float> &f) {
    std::vector<float> n(f.size());
    for (size_t i = 0; i < f.size(); ++i) n[i] = -f[i];
    return DeviceBuffer::upload(be_, n.data(), n.size() * sizeof(float));
  };
  if (c_.rotary) {
    neg_freq_ = negate(c_.inv_freq);
    if (!c_.inv_freq_local.empty()) neg_freq_local_ = negate(c_.inv_freq_local);
  }
  fired_.assign(m.hooks_->points().size(), 0);
}

void Backward::zero(float *p, int64_t n) {
  static const std::vector<float> zeros(1 << 16, 0.0f);
  for (int64_t i = 0; i < n; i += static_cast<int64_t>(zeros.size())) {
    const int64_t k = std::min<int64_t>(n - i, static_cast<int64_t>(zeros.size()));
    be_->check(api_.copy_to_device(bx_, p + i, zeros.data(), static_cast<size_t>(k) * sizeof(float)), "zero");
  }
}

void Backward::copy(float *dst, const float *src, int64_t n) {
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  be_->check(api_.copy_2d(bx_, dst, bytes, src, bytes, bytes, 1), "copy");
}

void Backward::gemm_b(const Linear &l, const float *dC, int64_t rows, float *dA) {
  be_->check(api_.gemm_backward(bx_, dC, rows, l.out, l.w.data(), l.dtype, l.in, dA), "gemm_backward");
}

bool Backward::wants(int idx) const {
  if (idx < 0) return false;
  if (gplan_ && gplan_->active(idx)) return true;
  for (const Seed &s : req_.seeds)
    if (s.index == idx) return true;
  return false;
}

void Backward::at_hook(HookKind kind, int layer, float *g, const LayerTape *tape) {
  const int idx = hook(kind, layer);
  if (idx < 0) return;
  const int64_t n = m_.hooks_->numel(idx, B, T, T);
  for (const Seed &s : req_.seeds) {
    if (s.index != idx) continue;
    DeviceBuffer seed = DeviceBuffer::upload(be_, s.data, static_cast<size_t>(S * n) * sizeof(float));
    add(g, seed.f32(), S * n);
  }
  if (gplan_ && gplan_->active(idx)) {
    std::vector<int64_t> shape = m_.hooks_->shape(idx, B, T, T);
    shape[0] *= S;
    fire_plan_on(be_, *m_.hooks_, *gplan_, idx, g, shape, ctx_s_, uploaded_, static_cast<const int32_t *>(pad_s_buf_.data()));
    fired_[static_cast<size_t>(idx)] = 1;
  }
  if (plan_ && !plan_->actions(idx).empty()) edits_vjp(idx, g, tape);
}

// The vector-Jacobian product of the forward's edits at idx, last first, per backward row block:
// add passes the gradient, set / zero / patch zero it where they wrote, scale scales it,
// projectOut projects it, projectionCap projects it where it clamped. JS functions pass it.
void Backward::edits_vjp(int idx, float *g, const LayerTape *tape) {
  const std::vector<int64_t> shape = m_.hooks_->shape(idx, B, T, T);
  const int64_t n = m_.hooks_->numel(idx, B, T, T);
  const HookKind kind = m_.hooks_->points()[static_cast<size_t>(idx)].kind;
  const HookContext &ctx = pass_.context();
  const std::vector<HookPlan::Action> &actions = plan_->actions(idx);
  for (auto a = actions.rbegin(); a != actions.rend(); ++a) {
    if (!a->edit || a->edit->op == EditOp::Add) continue;
    const Edit &e = *a->edit;
    if (e.op == EditOp::ProjectionCap) {
      auto snap = tape ? tape->pre_edit.find(idx) : std::map<int, DeviceBuffer>::const_iterator();
      if (!tape || snap == tape->pre_edit.end()) fail(code::kInternal, "projectionCap gradient without its forward value");
      std::vector<float> before(static_cast<size_t>(n)), after, grad(static_cast<size_t>(S * n));
      be_->check(api_.copy_to_host(bx_, before.data(), snap->second.f32(), before.size() * sizeof(float)), "to host");
      be_->check(api_.copy_to_host(bx_, grad.data(), g, grad.size() * sizeof(float)), "to host");
      after = before;
      apply_edit(e, kind, after.data(), shape, ctx);
      const int64_t w = unit_layout(kind, shape).width;
      for (int64_t u = 0; u < n / w; ++u) {
        bool clamped = false;
        for (int64_t i = 0; i < w && !clamped; ++i) clamped = before[static_cast<size_t>(u * w + i)] != after[static_cast<size_t>(u * w + i)];
        if (!clamped) continue;
        for (int64_t s = 0; s < S; ++s) {
          float *gu = grad.data() + s * n + u * w;
          double dot = 0;
          for (int64_t i = 0; i < w; ++i) dot += static_cast<double>(gu[i]) * e.vec[static_cast<size_t>(i)];
          for (int64_t i = 0; i < w; ++i) gu[i] -= static_cast<float>(dot * e.vec[static_cast<size_t>(i)]);
        }
      }
      be_->check(api_.copy_to_device(bx_, g, grad.data(), grad.size() * sizeof(float)), "to device");
      continue;
    }
    HookPlan one(m_.hooks_->points().size());
    Edit v = e;
    v.source = nullptr;
    v.source_numel = 0;
    v.vec.clear();
    if (e.op == EditOp::Set || e.op == EditOp::Zero || e.op == EditOp::Patch) v.op = EditOp::Zero;
    if (e.op == EditOp::ProjectOut) v.vec = e.vec;
    one.add_edit(idx, v);
    std::map<const Edit *, DeviceEdit> uploaded;  // once for every row block
    for (int64_t s = 0; s < S; ++s) fire_plan_on(be_, *m_.hooks_, one, idx, g + s * n, shape, ctx, uploaded, pass_.device_pad());
  }
}

void Backward::run() {
  // Where the backward starts: the top block, or the highest seeded one.
  int start = n_run_ - 1;
  bool head_seeded = false;
  for (const Seed &s : req_.seeds) head_seeded |= m_.hooks_->points()[static_cast<size_t>(s.index)].after_blocks;
  if (!req_.seeds.empty() && !head_seeded) {
    start = -1;
    for (const Seed &s : req_.seeds) start = std::max(start, m_.hooks_->points()[static_cast<size_t>(s.index)].layer);
  }
  if (!m_.tape_) m_.tape_ = std::make_shared<LayerTape>();
  LayerTape &tape = *m_.tape_;  // for recomputed blocks, every run: its buffers are reused
  tape.replicas = S;
  // Blocks whose tapes the forward keeps (the top one, and those below it that fit keep_bytes):
  // their backward needs no recompute.
  const int64_t per_block = static_cast<int64_t>(sizeof(float)) * tape_floats();
  const int kept_blocks = static_cast<int>(std::min<int64_t>(start + 1, 1 + req_.keep_bytes / std::max<int64_t>(per_block, 1)));
  std::vector<LayerTape> kept(static_cast<size_t>(std::max(kept_blocks, 0)));
  auto kept_tape = [&](int L) -> LayerTape * {
    const int i = start - L;
    return i >= 0 && i < kept_blocks ? &kept[static_cast<size_t>(i)] : nullptr;
  };
  for (LayerTape &t : kept) t.replicas = S;

  // Forward, keeping each block's input and the kept blocks' tapes.
  pass_.embed();
  // Buffers live in the model's workspace (slots 14 and up), reused across runs like the
  // forward's, so repeated backward passes allocate and page-fault nothing.
  saved_ = m_.scratch(14, (n_run_ + 1) * M * d).f32();
  for (int L = 0; L < n_run_; ++L) {
    copy(saved_at(L), pass_.x().f32(), M * d);
    pass_.layer(L, kept_tape(L));
  }
  copy(saved_at(n_run_), pass_.x().f32(), M * d);
  if (n_run_ == c_.n_layers) pass_.head();
  be_->check(api_.synchronize(bx_), "synchronize");
  pass_.mode_ = Pass::Mode::Replay;
  pass_.plan_ = plan_;

  const int64_t wide = std::max<int64_t>({d, dq, c_.d_mlp});
  size_t slot = 15;
  auto ws = [&](int64_t floats) { return m_.scratch(slot++, floats).f32(); };
  da_ = ws(Ms * d);
  dm_ = ws(Ms * d);
  dt1_ = ws(Ms * wide);
  dt2_ = ws(Ms * wide);
  dmlp1_ = ws(Ms * c_.d_mlp);
  dmlp2_ = ws(Ms * c_.d_mlp);
  dmlp3_ = ws(c_.gated_mlp ? Ms * c_.d_mlp : 0);
  dz_ = ws(Ms * dq);
  dq_ = ws(Ms * dq);
  dk_ = ws(Ms * dkv);
  dv_ = ws(Ms * dkv);
  dp_ = ws(Bs * H * T * T);
  dn_ = ws(Ms * std::max(d, dq));
  dscale_ = ws(Ms * std::max(H, G));
  float *g = ws(Ms * d);
  if (req_.seeds.empty())
    head_back(g);
  else if (head_seeded)
    head_seeds(g);
  else
    zero(g, Ms * d);
  for (int L = start; L >= 0; --L) {
    if (LayerTape *k = kept_tape(L)) {
      layer_back(L, *k, g);
      *k = LayerTape();  // its memory goes as soon as its block is done
      continue;
    }
    copy(pass_.x().f32(), saved_at(L), M * d);
    pass_.layer(L, &tape);
    layer_back(L, tape, g);
  }
  // Embeddings: x = hook_embed + hook_pos_embed, both see the gradient at resid_pre of block 0.
  for (HookKind k : {HookKind::PosEmbed, HookKind::Embed}) {
    const int idx = hook(k, -1);
    if (!wants(idx)) continue;
    DeviceBuffer e = buf(Ms * d);
    copy(e.f32(), g, Ms * d);
    at_hook(k, -1, e.f32(), nullptr);
  }
  // Gradient captures the backward never reached (past the metric, above the seeds) are zero.
  if (gplan_)
    for (size_t i = 0; i < fired_.size(); ++i)
      if (!fired_[i] && gplan_->has_capture(static_cast<int>(i))) {
        float *dst = gplan_->capture(static_cast<int>(i));
        std::fill(dst, dst + gplan_->capture_numel(static_cast<int>(i)), 0.0f);
      }
  be_->check(api_.synchronize(bx_), "synchronize");
}


// Floats of one block's tape (Pass::layer's keep slots), replicas included.
int64_t Backward::tape_floats() const {
  int64_t per_row = 2 * d + dq + 2 * dkv + 6 + c_.d_mlp * (c_.gated_mlp ? 2 : 1);
  if (c_.qk_norm) per_row += dq + dkv + H + G;
  if (c_.sandwich_norms) per_row += 2 * d;
  const int64_t pattern = B * H * T * T * (c_.attn_softcap > 0.0f ? 2 : 1);
  return S * (M * per_row + pattern);
}

// The metric's rows through the head: ln_final (its hooks replayed), the logits the metric
// reads (every position when an unembed hook or a custom metric needs them), the metric on the
// host, then back through the soft-cap, W_U and ln_final into g [M, d].
void Backward::head_back(float *g) {
  const bool custom = req_.custom.dlogits || req_.custom.callback;
  auto involved = [&](int idx) { return idx >= 0 && ((plan_ && plan_->active(idx)) || wants(idx)); };
  const bool full = custom || involved(hook(HookKind::UnembedIn, -1)) || involved(hook(HookKind::UnembedOut, -1));
  std::vector<int64_t> row_of(static_cast<size_t>(M), -1), rows;
  for (int64_t m = 0; full && m < M; ++m) {
    row_of[static_cast<size_t>(m)] = m;
    rows.push_back(m);
  }
  for (const MetricTerm &t : req_.terms) {
    int64_t &r = row_of[static_cast<size_t>(t.row * T + t.pos)];
    if (r < 0) {
      r = static_cast<int64_t>(rows.size());
      rows.push_back(t.row * T + t.pos);
    }
  }
  const int64_t R = static_cast<int64_t>(rows.size());

  LayerTape tape;
  tape.clear();
  copy(pass_.x().f32(), saved_at(n_run_), M * d);
  DeviceBuffer h = buf(M * d);
  pass_.tape_ = &tape;
  pass_.norm_rows(m_.ln_final_, pass_.x().f32(), h.f32(), M, d, pass_.scale_.f32(), HookKind::LnFinalScale, HookKind::LnFinalNormalized, -1,
                  &tape, Slot::ScaleLn1);
  pass_.fire(pass_.active(HookKind::UnembedIn, -1), h.f32());
  const DeviceBuffer &head = m_.lm_head_.empty() ? m_.embed_ : m_.lm_head_;
  const nt_dtype head_dtype = m_.lm_head_.empty() ? m_.dtype_ : m_.lm_head_dtype_;
  DeviceBuffer hr;
  const float *hin = h.f32();
  if (!full) {  // only the rows the metric reads
    hr = buf(std::max<int64_t>(R, 1) * d);
    for (int64_t r = 0; r < R; ++r) copy(hr.f32() + r * d, h.f32() + rows[static_cast<size_t>(r)] * d, d);
    hin = hr.f32();
  }
  DeviceBuffer logits = buf(std::max<int64_t>(R, 1) * V);
  if (R > 0) be_->check(api_.gemm(bx_, hin, R, d, head.data(), head_dtype, V, nullptr, logits.f32()), "gemm");
  if (full) pass_.fire(pass_.active(HookKind::UnembedOut, -1), logits.f32());
  pass_.tape_ = nullptr;
  if (c_.final_softcap > 0.0f && R > 0) be_->check(api_.softcap(bx_, logits.f32(), R * V, c_.final_softcap), "softcap");

  std::vector<float> host(static_cast<size_t>(R * V)), dl(static_cast<size_t>(R * V), 0.0f);
  if (R > 0) be_->check(api_.copy_to_host(bx_, host.data(), logits.f32(), host.size() * sizeof(float)), "logits to host");
  if (req_.custom.dlogits) {
    std::copy(req_.custom.dlogits, req_.custom.dlogits + M * V, dl.begin());
  } else if (req_.custom.callback) {
    dl = host;
    req_.custom.callback->call(-1, dl.data(), {B, T, V}, pass_.context());
  } else {
    metric_on_host(host, row_of, dl);
  }
  DeviceBuffer dlog = DeviceBuffer::upload(be_, dl.data(), std::max<size_t>(dl.size(), 1) * sizeof(float));
  if (c_.final_softcap > 0.0f && R > 0)
    be_->check(api_.softcap_backward(bx_, logits.f32(), dlog.f32(), R * V, c_.final_softcap, dlog.f32()), "softcap_backward");
  if (full) at_hook(HookKind::UnembedOut, -1, dlog.f32(), &tape);
  DeviceBuffer dh = buf(M * d);
  if (full) {
    be_->check(api_.gemm_backward(bx_, dlog.f32(), M, V, head.data(), head_dtype, d, dh.f32()), "gemm_backward");
  } else {
    zero(dh.f32(), M * d);
    if (R > 0) {
      DeviceBuffer dhr = buf(R * d);
      be_->check(api_.gemm_backward(bx_, dlog.f32(), R, V, head.data(), head_dtype, d, dhr.f32()), "gemm_backward");
      for (int64_t r = 0; r < R; ++r) copy(dh.f32() + rows[static_cast<size_t>(r)] * d, dhr.f32() + r * d, d);
    }
  }
  at_hook(HookKind::UnembedIn, -1, dh.f32(), &tape);
  norm_back(m_.ln_final_, saved_at(n_run_), tape.get(Slot::ScaleLn1), M, d, dh.f32(), g, HookKind::LnFinalScale, HookKind::LnFinalNormalized,
            -1, req_.final_norm_scale_detached, &tape);
}

// Seeds at the head's hooks: the backward starts at unembed.hook_out (when seeded or its
// gradient is wanted) or unembed.hook_in with zeros, the seeds added where they sit, through
// W_U and ln_final (tiled for the seeds' rows) into g [S x M, d].
void Backward::head_seeds(float *g) {
  LayerTape tape;
  tape.clear();
  tape.replicas = S;
  copy(pass_.x().f32(), saved_at(n_run_), M * d);
  pass_.keep(&tape, Slot::X1, saved_at(n_run_), M * d);
  DeviceBuffer h = buf(M * d);
  pass_.tape_ = &tape;
  pass_.norm_rows(m_.ln_final_, pass_.x().f32(), h.f32(), M, d, pass_.scale_.f32(), HookKind::LnFinalScale, HookKind::LnFinalNormalized, -1,
                  &tape, Slot::ScaleLn1);
  pass_.fire(pass_.active(HookKind::UnembedIn, -1), h.f32());
  const int uo = hook(HookKind::UnembedOut, -1);
  if (plan_ && uo >= 0 && !plan_->actions(uo).empty()) {  // its edits' VJPs may need the forward value
    DeviceBuffer logits = buf(M * V);
    const DeviceBuffer &head = m_.lm_head_.empty() ? m_.embed_ : m_.lm_head_;
    be_->check(api_.gemm(bx_, h.f32(), M, d, head.data(), m_.lm_head_.empty() ? m_.dtype_ : m_.lm_head_dtype_, V, nullptr, logits.f32()), "gemm");
    pass_.fire(pass_.active(HookKind::UnembedOut, -1), logits.f32());
  }
  pass_.tape_ = nullptr;
  DeviceBuffer dh = buf(Ms * d);
  zero(dh.f32(), Ms * d);
  if (wants(uo)) {
    DeviceBuffer dl = buf(Ms * V);
    zero(dl.f32(), Ms * V);
    at_hook(HookKind::UnembedOut, -1, dl.f32(), &tape);
    const DeviceBuffer &head = m_.lm_head_.empty() ? m_.embed_ : m_.lm_head_;
    be_->check(api_.gemm_backward(bx_, dl.f32(), Ms, V, head.data(), m_.lm_head_.empty() ? m_.dtype_ : m_.lm_head_dtype_, d, dh.f32()),
               "gemm_backward");
  }
  at_hook(HookKind::UnembedIn, -1, dh.f32(), &tape);
  norm_back(m_.ln_final_, tape.get(Slot::X1), tape.get(Slot::ScaleLn1), Ms, d, dh.f32(), g, HookKind::LnFinalScale, HookKind::LnFinalNormalized, -1,
            req_.final_norm_scale_detached, &tape);
}

// The metric's terms over the logits rows (row_of: padded (b, t) -> logits row): value per
// batch row into metric_rows, d metric / d logits into dl. In double, per row once.
void Backward::metric_on_host(const std::vector<float> &logits, const std::vector<int64_t> &row_of, std::vector<float> &dl) {
  std::vector<double> value(static_cast<size_t>(B), 0.0);
  std::map<int64_t, double> lse;  // logits row -> log-sum-exp
  for (const MetricTerm &t : req_.terms) {
    const int64_t r = row_of[static_cast<size_t>(t.row * T + t.pos)];
    const float *l = logits.data() + r * V;
    float *g = dl.data() + r * V;
    double v = 0;
    switch (t.kind) {
      case MetricTerm::Logit:
        v = l[t.a];
        g[t.a] += t.weight;
        break;
      case MetricTerm::LogitDiff:
        v = static_cast<double>(l[t.a]) - l[t.b];
        g[t.a] += t.weight;
        g[t.b] -= t.weight;
        break;
      case MetricTerm::LogProb: {
        auto it = lse.find(r);
        if (it == lse.end()) {
          double mx = -INFINITY, sum = 0;
          for (int64_t j = 0; j < V; ++j) mx = std::max<double>(mx, l[j]);
          for (int64_t j = 0; j < V; ++j) sum += std::exp(static_cast<double>(l[j]) - mx);
          it = lse.emplace(r, mx + std::log(sum)).first;
        }
        v = l[t.a] - it->second;
        for (int64_t j = 0; j < V; ++j) g[j] -= static_cast<float>(t.weight * std::exp(static_cast<double>(l[j]) - it->second));
        g[t.a] += t.weight;
        break;
      }
    }
    value[static_cast<size_t>(t.row)] += t.weight * v;
  }
  if (req_.metric_rows)
    for (int64_t b = 0; b < B; ++b) req_.metric_rows[b] = static_cast<float>(value[static_cast<size_t>(b)]);
}

void Model::backward(const BackwardRequest &req, HookPlan *plan, HookPlan *grad_plan) {
  const ModelConfig &c = config_;
  std::lock_guard<std::mutex> lock(run_mutex_);
  const ForwardRequest &f = req.forward;
  if (f.cache) fail(code::kInvalidInput, "a backward pass cannot use a KV cache");
  if (f.logits_last_only) fail(code::kInvalidInput, "a backward pass returns every position's logits or none");
  validate_request(f, plan);
  const nt_backend_api &api = be_->api();
  if (!api.gemm_backward || !api.norm_backward || !api.norm_scale_backward || !api.activation_backward || !api.gated_activation_backward ||
      !api.softcap_backward || !api.softmax_rows_backward || !api.attention_apply_backward || !api.attention_scores_backward)
    fail(code::kDeviceUnavailable, std::string("the ") + api.name + " backend has no backward ops");
  if (!saes_.empty()) fail(code::kInvalidInput, "backward passes through an attached SAE are not supported: detach it first");
  const bool custom = req.custom.dlogits || req.custom.callback;
  const int sources = (req.terms.empty() ? 0 : 1) + (custom ? 1 : 0) + (req.seeds.empty() ? 0 : 1);
  if (sources != 1) fail(code::kInvalidInput, "a backward pass needs exactly one of a metric, a custom metric gradient and seeds");
  if (req.replicas < 1 || (req.replicas > 1 && req.seeds.empty()))
    fail(code::kInvalidInput, "replicas (a seed's leading axis) must be >= 1, and > 1 only with seeds");
  check_finite_size(req.replicas * f.batch * f.pos, std::max<int64_t>(c.d_vocab, c.d_mlp), "replicas x batch x pos x width");
  const bool stopping = f.stop_at_layer >= 0 && f.stop_at_layer < c.n_layers;
  if (stopping && req.seeds.empty()) fail(code::kInvalidInput, "a metric needs the logits, which are not computed when stopping at layer " +
                                                                   std::to_string(f.stop_at_layer) + "; give seeds instead");
  for (const MetricTerm &t : req.terms) {
    if (t.row < 0 || t.row >= f.batch || t.pos < 0 || t.pos >= f.pos)
      fail(code::kInvalidInput, "metric position (row " + std::to_string(t.row) + ", position " + std::to_string(t.pos) + ") is outside the input [" +
                                    std::to_string(f.batch) + ", " + std::to_string(f.pos) + "]");
    if (t.a < 0 || t.a >= c.d_vocab || (t.kind == MetricTerm::LogitDiff && (t.b < 0 || t.b >= c.d_vocab)))
      fail(code::kTokenOutOfRange, "metric token id is outside the vocabulary [0, " + std::to_string(c.d_vocab) + ")");
    if (t.kind != MetricTerm::Logit && t.kind != MetricTerm::LogitDiff && t.kind != MetricTerm::LogProb)
      fail(code::kInvalidInput, "unknown metric kind");
  }
  if (!req.detach.empty() && static_cast<int>(req.detach.size()) != c.n_layers)
    fail(code::kInvalidInput, "detach masks need one entry per layer (" + std::to_string(c.n_layers) + ")");
  const auto &points = hooks_->points();
  auto reached = [&](const HookPoint &hp) { return !stopping || (hp.layer < f.stop_at_layer && !hp.after_blocks); };
  for (const Seed &s : req.seeds) {
    if (s.index < 0 || s.index >= static_cast<int>(points.size()) || !s.data) fail(code::kInvalidInput, "a seed needs a hook and its gradient");
    const HookPoint &hp = points[static_cast<size_t>(s.index)];
    if (!reached(hp)) fail(code::kInvalidInput, "seed hook '" + hp.name + "' is not reached when stopping at layer " + std::to_string(f.stop_at_layer));
  }
  for (size_t i = 0; i < points.size(); ++i) {
    const int idx = static_cast<int>(i);
    const HookPoint &hp = points[i];
    if (!grad_plan || !grad_plan->active(idx)) continue;
    if (!reached(hp)) fail(code::kInvalidInput, "the gradient at '" + hp.name + "' is not computed when stopping at layer " + std::to_string(f.stop_at_layer));
    std::vector<int64_t> shape = hooks_->shape(idx, f.batch, f.pos, f.pos);
    shape[0] *= req.replicas;
    for (const Edit *e : grad_plan->edits(idx)) validate_edit(*e, hp, shape);
    const int64_t n = req.replicas * hooks_->numel(idx, f.batch, f.pos, f.pos);
    if (grad_plan->has_capture(idx) && grad_plan->capture_numel(idx) != n)
      fail(code::kBufferSize, "gradient buffer for '" + hp.name + "' has " + std::to_string(grad_plan->capture_numel(idx)) + " floats, needs " + std::to_string(n));
  }
  // With per-head inputs each head has its own ln1 (TransformerLens gives ln1 a head axis then):
  // ln1's hooks cannot be edited or take gradients in a block whose backward goes per head.
  auto wanted = [&](int idx) {
    if (idx < 0) return false;
    if (grad_plan && grad_plan->active(idx)) return true;
    for (const Seed &s : req.seeds)
      if (s.index == idx) return true;
    return false;
  };
  for (int L = 0; L < c.n_layers; ++L) {
    bool split = false;
    for (HookKind k : {HookKind::AttnIn, HookKind::QInput, HookKind::KInput, HookKind::VInput}) {
      const int idx = hooks_->index(k, L);
      split |= idx >= 0 && ((plan && plan->active(idx)) || wanted(idx));
    }
    if (!split) continue;
    for (HookKind k : {HookKind::Ln1Scale, HookKind::Ln1Normalized}) {
      const int idx = hooks_->index(k, L);
      if (idx >= 0 && (wanted(idx) || (plan && !plan->actions(idx).empty())))
        fail(code::kInvalidInput, "'" + points[static_cast<size_t>(idx)].name +
                                      "' cannot be edited or take gradients while a per-head input of its block (hook_attn_in, hook_q/k/v_input) is hooked");
    }
  }
  Backward(*this, req, plan, grad_plan).run();
}

}  // namespace nt
