// The backward pass: gradients of a metric on the logits (or of seed gradients at hooks) with
// respect to every hook's activation. The forward keeps each block's input (the residual
// stream); the backward recomputes one block at a time through Pass::layer with a tape (edits
// replayed, JS function outputs restored) and walks it back op by op, firing the gradient plan
// at each hook as the forward fires its plan. Tests: test/backward.test.ts (torch autograd).
#include "engine/backward.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/error.h"
#include "engine/pass.h"

namespace nt {

class Backward {
 public:
  Backward(Model &m, const BackwardRequest &req, HookPlan *plan, HookPlan *grad_plan);
  void run();

 private:
  using Slot = LayerTape::Slot;
  DeviceBuffer buf(int64_t floats) const { return DeviceBuffer(be_, static_cast<size_t>(floats) * sizeof(float)); }
  void zero(float *p, int64_t n);
  void copy(float *dst, const float *src, int64_t n);
  void add(float *acc, const float *x, int64_t n) { be_->check(api_.add(bx_, acc, x, n, acc), "add"); }
  void gemm_b(const Linear &l, const float *dC, int64_t rows, float *dA);
  // Seeds, the gradient plan and the VJP of the forward edits at hook (kind, layer) on g.
  void at_hook(HookKind kind, int layer, float *g, const LayerTape *tape);
  int hook(HookKind kind, int layer) const { return m_.hooks_->index(kind, layer); }
  bool wants(int idx) const;  // a seed or the gradient plan acts at idx
  void edits_vjp(int idx, float *g, const LayerTape *tape);
  // Backward of a norm (weight, then hook_normalized and hook_scale): dy -> dx over `rows`.
  void norm_back(const Norm &n, const float *x, const float *sc, int64_t rows, int64_t width, const float *dy, float *dx,
                 HookKind scale_kind, HookKind normalized_kind, int layer, bool detach_scale, const LayerTape *tape);
  void rotary_back(float *t, int64_t heads, const float *neg_freq);
  void head_back(float *g);                  // metric -> gradient at the last resid_post
  void head_seeds(float *g);                 // seeds at ln_final / unembed hooks -> the same
  void layer_back(int L, const LayerTape &t, float *g);
  void attn_back(int L, const LayerTape &t, float *da, float *dres);
  void mlp_back(int L, const LayerTape &t, float *dm, float *dres);
  bool split_inputs(int L) const;
  void split_back(int L, const LayerTape &t, float *dres);
  void metric_on_host(const std::vector<float> &logits, const std::vector<int64_t> &row_of, std::vector<float> &dlogits);

  Model &m_;
  const ModelConfig &c_;
  const BackwardRequest &req_;
  HookPlan *plan_, *gplan_;
  std::shared_ptr<Backend> be_;
  const nt_backend_api &api_;
  nt_backend *bx_;
  Pass pass_;
  int64_t S, B, T, M, Bs, Ms, d, H, G, D, dq, dkv, V;
  int n_run_;
  HookContext ctx_s_;            // the backward rows: replicas x batch
  std::vector<int32_t> pad_s_;
  DeviceBuffer pad_s_buf_, neg_freq_, neg_freq_local_;
  std::vector<DeviceBuffer> saved_;  // [n_run + 1] residual stream before each block's first hook
  std::map<const Edit *, DeviceEdit> uploaded_;
  std::vector<char> fired_;            // gradient captures written
  // Gradient buffers, reused across blocks.
  DeviceBuffer da_, dm_, dt1_, dt2_, dmlp1_, dmlp2_, dmlp3_, dz_, dq_, dk_, dv_, dp_, dn_, dscale_;
};

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
    fire_plan_on(be_, *m_.hooks_, *gplan_, idx, g, shape, ctx_s_, uploaded_);
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
    for (int64_t s = 0; s < S; ++s) {
      std::map<const Edit *, DeviceEdit> uploaded;
      fire_plan_on(be_, *m_.hooks_, one, idx, g + s * n, shape, ctx, uploaded);
    }
  }
}

void Backward::norm_back(const Norm &n, const float *x, const float *sc, int64_t rows, int64_t width, const float *dy, float *dx,
                         HookKind scale_kind, HookKind normalized_kind, int layer, bool detach_scale, const LayerTape *tape) {
  const int32_t ln = c_.norm == NormKind::LayerNorm ? 1 : 0;
  float *dn = dn_.f32(), *ds = dscale_.f32();
  be_->check(api_.mul_rows(bx_, dy, rows, width, n.w.f32(), dn), "mul_rows");
  at_hook(normalized_kind, layer, dn, tape);
  const int si = hook(scale_kind, layer);
  const bool scale_grad = !detach_scale || wants(si) || (plan_ && si >= 0 && !plan_->actions(si).empty());
  if (scale_grad) {
    be_->check(api_.norm_scale_backward(bx_, x, rows, width, ln, sc, dn, ds), "norm_scale_backward");
    at_hook(scale_kind, layer, ds, tape);
  }
  be_->check(api_.norm_backward(bx_, x, rows, width, ln, c_.norm_eps, sc, dn, detach_scale ? nullptr : ds, dx), "norm_backward");
}

void Backward::rotary_back(float *t, int64_t heads, const float *neg_freq) {
  const int64_t R = c_.rotary_dim;
  const int32_t *pad = static_cast<const int32_t *>(pad_s_buf_.data());
  if (R >= D) {
    be_->check(api_.rope(bx_, t, Bs, T, heads, D, neg_freq, 0, pad), "rope");
    return;
  }
  DeviceBuffer rot = buf(Ms * heads * R);
  const size_t rows = static_cast<size_t>(Ms * heads), row = static_cast<size_t>(R) * sizeof(float), pitch = static_cast<size_t>(D) * sizeof(float);
  be_->check(api_.copy_2d(bx_, rot.data(), row, t, pitch, row, rows), "rotary gather");
  be_->check(api_.rope(bx_, rot.f32(), Bs, T, heads, R, neg_freq, 0, pad), "rope");
  be_->check(api_.copy_2d(bx_, t, pitch, rot.data(), row, row, rows), "rotary scatter");
}

void Backward::run() {
  // Forward, keeping each block's input.
  pass_.embed();
  saved_.reserve(static_cast<size_t>(n_run_ + 1));
  for (int L = 0; L < n_run_; ++L) {
    saved_.push_back(buf(M * d));
    copy(saved_.back().f32(), pass_.x().f32(), M * d);
    pass_.layer(L, nullptr);
  }
  saved_.push_back(buf(M * d));
  copy(saved_.back().f32(), pass_.x().f32(), M * d);
  if (n_run_ == c_.n_layers) pass_.head();
  be_->check(api_.synchronize(bx_), "synchronize");
  pass_.mode_ = Pass::Mode::Replay;
  pass_.plan_ = plan_;

  const int64_t wide = std::max<int64_t>({d, dq, c_.d_mlp});
  da_ = buf(Ms * d);
  dm_ = buf(Ms * d);
  dt1_ = buf(Ms * wide);
  dt2_ = buf(Ms * wide);
  dmlp1_ = buf(Ms * c_.d_mlp);
  dmlp2_ = buf(Ms * c_.d_mlp);
  if (c_.gated_mlp) dmlp3_ = buf(Ms * c_.d_mlp);
  dz_ = buf(Ms * dq);
  dq_ = buf(Ms * dq);
  dk_ = buf(Ms * dkv);
  dv_ = buf(Ms * dkv);
  dp_ = buf(Bs * H * T * T);
  dn_ = buf(Ms * std::max(d, dq));
  dscale_ = buf(Ms * std::max(H, G));
  DeviceBuffer g = buf(Ms * d);

  int start = n_run_ - 1;
  bool head_seeded = false;
  for (const Seed &s : req_.seeds) head_seeded |= m_.hooks_->points()[static_cast<size_t>(s.index)].after_blocks;
  if (req_.seeds.empty()) {
    head_back(g.f32());
  } else if (head_seeded) {
    head_seeds(g.f32());
  } else {
    zero(g.f32(), Ms * d);
    start = -1;
    for (const Seed &s : req_.seeds) start = std::max(start, m_.hooks_->points()[static_cast<size_t>(s.index)].layer);
  }
  LayerTape tape;  // one for every block: its buffers are reused
  tape.replicas = S;
  for (int L = start; L >= 0; --L) {
    tape.pre_edit.clear();
    copy(pass_.x().f32(), saved_[static_cast<size_t>(L)].f32(), M * d);
    pass_.layer(L, &tape);
    layer_back(L, tape, g.f32());
  }
  // Embeddings: x = hook_embed + hook_pos_embed, both see the gradient at resid_pre of block 0.
  for (HookKind k : {HookKind::PosEmbed, HookKind::Embed}) {
    const int idx = hook(k, -1);
    if (!wants(idx)) continue;
    DeviceBuffer e = buf(Ms * d);
    copy(e.f32(), g.f32(), Ms * d);
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


// Block L backward: g is the gradient at resid_post's output on entry and at the block's input
// (resid_pre before its hook) on return.
void Backward::layer_back(int L, const LayerTape &t, float *g) {
  at_hook(HookKind::ResidPost, L, g, &t);
  float *dres = dt2_.f32();
  if (c_.parallel_residual) {  // x + attn(ln1(x)) + mlp(ln2(x))
    copy(dm_.f32(), g, Ms * d);
    copy(da_.f32(), g, Ms * d);
    mlp_back(L, t, dm_.f32(), dres);
    add(g, dres, Ms * d);
    attn_back(L, t, da_.f32(), dres);
    add(g, dres, Ms * d);
  } else {
    copy(dm_.f32(), g, Ms * d);
    mlp_back(L, t, dm_.f32(), dres);
    add(g, dres, Ms * d);
    at_hook(HookKind::ResidMid, L, g, &t);
    copy(da_.f32(), g, Ms * d);
    attn_back(L, t, da_.f32(), dres);
    add(g, dres, Ms * d);
  }
  at_hook(HookKind::ResidPre, L, g, &t);
}

// dm: the gradient at mlp_out; dres: the gradient this path adds at ln2's input.
void Backward::mlp_back(int L, const LayerTape &t, float *dm, float *dres) {
  const LayerWeights &lw = m_.layers_[static_cast<size_t>(L)];
  const Detach det = req_.detach.empty() ? Detach{} : req_.detach[static_cast<size_t>(L)];
  const int64_t n = Ms * c_.d_mlp;
  at_hook(HookKind::MlpOut, L, dm, &t);
  const float *dmo = dm;
  if (c_.sandwich_norms) {
    norm_back(lw.ln2_post, t.get(Slot::M), t.get(Slot::ScaleLn2Post), Ms, d, dm, dt1_.f32(), HookKind::Ln2PostScale, HookKind::Ln2PostNormalized,
              L, det.norm_scale, &t);
    dmo = dt1_.f32();
  }
  float *dpost = dmlp1_.f32(), *dpre = dmlp2_.f32();
  gemm_b(lw.down, dmo, Ms, dpost);
  at_hook(HookKind::MlpPost, L, dpost, &t);
  const nt_activation act = static_cast<nt_activation>(c_.act);
  float *dh = dt1_.f32();
  if (c_.gated_mlp) {
    float *dup = dmlp3_.f32();
    be_->check(api_.gated_activation_backward(bx_, act, t.get(Slot::Pre), t.get(Slot::Up), dpost, n, det.mlp_act ? nullptr : dpre, dup),
               "gated_activation_backward");
    if (det.mlp_act) zero(dpre, n);
    at_hook(HookKind::MlpPreLinear, L, dup, &t);
    at_hook(HookKind::MlpPre, L, dpre, &t);
    gemm_b(lw.up, dup, Ms, dh);
    gemm_b(lw.gate, dpre, Ms, dres);
    add(dh, dres, Ms * d);
  } else {
    if (det.mlp_act)
      zero(dpre, n);
    else
      be_->check(api_.activation_backward(bx_, act, t.get(Slot::Pre), dpost, n, dpre), "activation_backward");
    at_hook(HookKind::MlpPre, L, dpre, &t);
    gemm_b(lw.up, dpre, Ms, dh);
  }
  const bool mlp_in = t.get(Slot::MlpIn) != nullptr;
  const float *x = mlp_in ? t.get(Slot::MlpIn) : c_.parallel_residual ? t.get(Slot::X1) : t.get(Slot::X2);
  norm_back(lw.ln2, x, t.get(Slot::ScaleLn2), Ms, d, dh, dres, HookKind::Ln2Scale, HookKind::Ln2Normalized, L, det.norm_scale, &t);
  at_hook(HookKind::MlpIn, L, dres, &t);  // hook_mlp_in is ln2's input (a copy of it when hooked)
}

// da: the gradient at attn_out; dres: the gradient this path adds at resid_pre (after its hook).
void Backward::attn_back(int L, const LayerTape &t, float *da, float *dres) {
  const LayerWeights &lw = m_.layers_[static_cast<size_t>(L)];
  const Detach det = req_.detach.empty() ? Detach{} : req_.detach[static_cast<size_t>(L)];
  at_hook(HookKind::AttnOut, L, da, &t);
  const float *dout = da;
  if (c_.sandwich_norms) {
    norm_back(lw.ln1_post, t.get(Slot::O), t.get(Slot::ScaleLn1Post), Ms, d, da, dt1_.f32(), HookKind::Ln1PostScale, HookKind::Ln1PostNormalized,
              L, det.norm_scale, &t);
    dout = dt1_.f32();
  }
  // attn_out = sum over heads of result + b_O: each head's result sees the same gradient.
  float *dz = dz_.f32();
  const int ri = hook(HookKind::AttnResult, L);
  if (wants(ri) || (plan_ && ri >= 0 && !plan_->actions(ri).empty())) {
    DeviceBuffer dr = buf(Ms * H * d), full = buf(Ms * dq);
    const size_t row = static_cast<size_t>(d) * sizeof(float);
    for (int64_t hh = 0; hh < H; ++hh)
      be_->check(api_.copy_2d(bx_, dr.f32() + hh * d, static_cast<size_t>(H) * row, dout, row, row, static_cast<size_t>(Ms)), "copy");
    at_hook(HookKind::AttnResult, L, dr.f32(), &t);
    DeviceBuffer part = buf(Ms * d);
    const size_t hrow = static_cast<size_t>(D) * sizeof(float), zpitch = static_cast<size_t>(dq) * sizeof(float);
    for (int64_t hh = 0; hh < H; ++hh) {  // head hh's z reaches only its result
      be_->check(api_.copy_2d(bx_, part.f32(), row, dr.f32() + hh * d, static_cast<size_t>(H) * row, row, static_cast<size_t>(Ms)), "copy");
      gemm_b(lw.o, part.f32(), Ms, full.f32());
      be_->check(api_.copy_2d(bx_, dz + hh * D, zpitch, full.f32() + hh * D, zpitch, hrow, static_cast<size_t>(Ms)), "copy");
    }
  } else {
    gemm_b(lw.o, dout, Ms, dz);
  }
  at_hook(HookKind::AttnZ, L, dz, &t);

  nt_attention_shape as{Bs, T, H, G, D, T, T, 0, c_.attn_scale, c_.sliding_window[static_cast<size_t>(L)],
                        static_cast<const int32_t *>(pad_s_buf_.data())};
  if (c_.scale_attn_by_inverse_layer_idx) as.scale /= static_cast<float>(L + 1);
  float *dp = dp_.f32(), *dqv = dq_.f32(), *dkk = dk_.f32(), *dvv = dv_.f32();
  const int64_t np = Bs * H * T * T;
  be_->check(api_.attention_apply_backward(bx_, &as, t.get(Slot::Pattern), t.get(Slot::V), dz, dp, dvv), "attention_apply_backward");
  at_hook(HookKind::AttnPattern, L, dp, &t);
  if (det.pattern) {
    const int si = hook(HookKind::AttnScores, L);
    if (wants(si)) {
      zero(dp, np);
      at_hook(HookKind::AttnScores, L, dp, &t);
    }
    zero(dqv, Ms * dq);
    zero(dkk, Ms * dkv);
  } else {
    be_->check(api_.softmax_rows_backward(bx_, t.get(Slot::Pattern), dp, Bs * H * T, T, dp), "softmax_rows_backward");
    at_hook(HookKind::AttnScores, L, dp, &t);
    if (c_.attn_softcap > 0.0f) be_->check(api_.softcap_backward(bx_, t.get(Slot::Capped), dp, np, c_.attn_softcap, dp), "softcap_backward");
    be_->check(api_.attention_scores_backward(bx_, &as, t.get(Slot::Q), t.get(Slot::K), dp, dqv, dkk), "attention_scores_backward");
  }
  if (c_.rotary) {
    at_hook(HookKind::AttnRotQ, L, dqv, &t);
    at_hook(HookKind::AttnRotK, L, dkk, &t);
    const bool local = c_.sliding_window[static_cast<size_t>(L)] > 0;
    const float *nf = local && !neg_freq_local_.empty() ? neg_freq_local_.f32() : neg_freq_.f32();
    rotary_back(dqv, H, nf);
    rotary_back(dkk, G, nf);
  }
  if (c_.qk_norm) {
    norm_back(lw.q_norm, t.get(Slot::QPre), t.get(Slot::ScaleQ), Ms * H, D, dqv, dqv, HookKind::AttnQNormScale, HookKind::AttnQNormNormalized, L,
              det.norm_scale, &t);
    norm_back(lw.k_norm, t.get(Slot::KPre), t.get(Slot::ScaleK), Ms * G, D, dkk, dkk, HookKind::AttnKNormScale, HookKind::AttnKNormNormalized, L,
              det.norm_scale, &t);
  }
  at_hook(HookKind::AttnQ, L, dqv, &t);
  at_hook(HookKind::AttnK, L, dkk, &t);
  at_hook(HookKind::AttnV, L, dvv, &t);
  if (split_inputs(L)) {
    split_back(L, t, dres);
    return;
  }
  // q, k, v = ln1(x) through W_Q, W_K, W_V.
  float *dh = dt1_.f32(), *part = dm_.f32();  // dm_ is free once the MLP's backward has run
  gemm_b(lw.q, dqv, Ms, dh);
  gemm_b(lw.k, dkk, Ms, part);
  add(dh, part, Ms * d);
  gemm_b(lw.v, dvv, Ms, part);
  add(dh, part, Ms * d);
  norm_back(lw.ln1, t.get(Slot::X1), t.get(Slot::ScaleLn1), Ms, d, dh, dres, HookKind::Ln1Scale, HookKind::Ln1Normalized, L, det.norm_scale, &t);
}

// Whether block L's attention input goes through TransformerLens's per-head copies in the
// backward pass: one of hook_attn_in / hook_q,k,v_input is hooked in the forward, or its
// gradient is wanted.
bool Backward::split_inputs(int L) const {
  for (HookKind k : {HookKind::AttnIn, HookKind::QInput, HookKind::KInput, HookKind::VInput}) {
    const int idx = hook(k, L);
    if (idx >= 0 && ((plan_ && plan_->active(idx)) || wants(idx))) return true;
  }
  return false;
}

// The per-head path: head hh of q (k, v) is ln1 of its own copy of resid_pre through its rows
// of W_Q (W_K, W_V), so each copy's gradient comes from that head's columns alone. The copies'
// gradients meet at hook_attn_in (when there is one) and sum over heads into dres.
void Backward::split_back(int L, const LayerTape &t, float *dres) {
  const LayerWeights &lw = m_.layers_[static_cast<size_t>(L)];
  const Detach det = req_.detach.empty() ? Detach{} : req_.detach[static_cast<size_t>(L)];
  const int32_t ln = c_.norm == NormKind::LayerNorm ? 1 : 0;
  const Linear *proj[3] = {&lw.q, &lw.k, &lw.v};
  const float *dproj[3] = {dq_.f32(), dk_.f32(), dv_.f32()};
  const int64_t heads[3] = {H, G, G};
  const HookKind kinds[3] = {HookKind::QInput, HookKind::KInput, HookKind::VInput};
  const size_t row = static_cast<size_t>(d) * sizeof(float), hrow = static_cast<size_t>(D) * sizeof(float);
  const int ain = hook(HookKind::AttnIn, L);
  DeviceBuffer xrow = buf(Ms * d), normed = buf(Ms * d), sc = buf(Ms), full = buf(Ms * std::max(dq, dkv)), dh = buf(Ms * d), dx = buf(Ms * d);
  DeviceBuffer din[3];
  zero(dres, Ms * d);
  for (int i = 0; i < 3; ++i) {
    const int64_t nh = heads[i], width = nh * D;
    const float *copies = t.get(static_cast<Slot>(Slot::SplitQ + i));
    if (!copies && t.get(Slot::AttnIn)) copies = t.get(Slot::AttnIn);
    din[i] = buf(Ms * nh * d);
    for (int64_t hh = 0; hh < nh; ++hh) {
      if (copies)
        be_->check(api_.copy_2d(bx_, xrow.data(), row, copies + hh * d, static_cast<size_t>(nh) * row, row, static_cast<size_t>(Ms)), "copy");
      else
        copy(xrow.f32(), t.get(Slot::X1), Ms * d);
      if (ln)
        be_->check(api_.layer_norm(bx_, xrow.f32(), Ms, d, nullptr, nullptr, c_.norm_eps, normed.f32(), sc.f32()), "layer_norm");
      else
        be_->check(api_.rms_norm(bx_, xrow.f32(), Ms, d, nullptr, c_.norm_eps, normed.f32(), sc.f32()), "rms_norm");
      zero(full.f32(), Ms * width);
      const size_t pitch = static_cast<size_t>(width) * sizeof(float);
      be_->check(api_.copy_2d(bx_, full.f32() + hh * D, pitch, dproj[i] + hh * D, pitch, hrow, static_cast<size_t>(Ms)), "copy");
      gemm_b(*proj[i], full.f32(), Ms, dh.f32());
      be_->check(api_.mul_rows(bx_, dh.f32(), Ms, d, lw.ln1.w.f32(), dh.f32()), "mul_rows");
      float *ds = det.norm_scale ? nullptr : dscale_.f32();
      if (ds) be_->check(api_.norm_scale_backward(bx_, xrow.f32(), Ms, d, ln, sc.f32(), dh.f32(), ds), "norm_scale_backward");
      be_->check(api_.norm_backward(bx_, xrow.f32(), Ms, d, ln, c_.norm_eps, sc.f32(), dh.f32(), ds, dx.f32()), "norm_backward");
      be_->check(api_.copy_2d(bx_, din[i].f32() + hh * d, static_cast<size_t>(nh) * row, dx.data(), row, row, static_cast<size_t>(Ms)), "copy");
    }
    at_hook(kinds[i], L, din[i].f32(), &t);
  }
  auto sum_heads = [&](const float *g, int64_t nh) {
    for (int64_t hh = 0; hh < nh; ++hh) {
      be_->check(api_.copy_2d(bx_, dx.data(), row, g + hh * d, static_cast<size_t>(nh) * row, row, static_cast<size_t>(Ms)), "copy");
      add(dres, dx.f32(), Ms * d);
    }
  };
  if (ain >= 0 && ((plan_ && plan_->active(ain)) || wants(ain))) {  // q, k and v inputs were copies of hook_attn_in
    add(din[0].f32(), din[1].f32(), Ms * H * d);
    add(din[0].f32(), din[2].f32(), Ms * H * d);
    at_hook(HookKind::AttnIn, L, din[0].f32(), &t);
    sum_heads(din[0].f32(), H);
  } else {
    for (int i = 0; i < 3; ++i) sum_heads(din[i].f32(), heads[i]);
  }
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
  copy(pass_.x().f32(), saved_.back().f32(), M * d);
  DeviceBuffer h = buf(M * d);
  pass_.tape_ = &tape;
  pass_.norm_rows(m_.ln_final_, pass_.x().f32(), h.f32(), M, d, pass_.scale_.f32(), HookKind::LnFinalScale, HookKind::LnFinalNormalized, -1,
                  &tape, Slot::ScaleLn1);
  pass_.fire(pass_.active(HookKind::UnembedIn, -1), h.f32());
  const DeviceBuffer &head = m_.lm_head_.empty() ? m_.embed_ : m_.lm_head_;
  const nt_dtype head_dtype = m_.lm_head_.empty() ? m_.dtype_ : m_.lm_head_dtype_;
  DeviceBuffer hr;
  const float *hin = h.f32();
  const size_t row = static_cast<size_t>(d) * sizeof(float);
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
  (void)row;
  at_hook(HookKind::UnembedIn, -1, dh.f32(), &tape);
  norm_back(m_.ln_final_, saved_.back().f32(), tape.get(Slot::ScaleLn1), M, d, dh.f32(), g, HookKind::LnFinalScale, HookKind::LnFinalNormalized,
            -1, req_.final_norm_scale_detached, &tape);
}

// Seeds at the head's hooks: the backward starts at unembed.hook_out (when seeded or its
// gradient is wanted) or unembed.hook_in with zeros, the seeds added where they sit, through
// W_U and ln_final (tiled for the seeds' rows) into g [S x M, d].
void Backward::head_seeds(float *g) {
  LayerTape tape;
  tape.replicas = S;
  copy(pass_.x().f32(), saved_.back().f32(), M * d);
  pass_.keep(&tape, Slot::X1, saved_.back().f32(), M * d);
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
