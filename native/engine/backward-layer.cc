// One block's backward pass, op by op in reverse of Pass::layer (engine/pass.cc): MLP, then
// attention (the per-head input path where TransformerLens's split inputs are in play), the norms
// with their hooks, rotary by the negated angles. Gradient hooks fire where the forward's hooks
// fire. Tests: test/backward.test.ts (torch autograd), test/backward-fd.test.ts.
#include <algorithm>

#include "engine/backward-pass.h"

namespace nt {

void Backward::norm_back(const Norm &n, const float *x, const float *sc, int64_t rows, int64_t width, const float *dy, float *dx,
                         HookKind scale_kind, HookKind normalized_kind, int layer, bool detach_scale, const LayerTape *tape) {
  const int32_t ln = c_.norm == NormKind::LayerNorm ? 1 : 0;
  float *dn = dn_, *ds = dscale_;
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

// Block L backward: g is the gradient at resid_post's output on entry and at the block's input
// (resid_pre before its hook) on return.
void Backward::layer_back(int L, const LayerTape &t, float *g) {
  at_hook(HookKind::ResidPost, L, g, &t);
  float *dres = dt2_;
  if (c_.parallel_residual) {  // x + attn(ln1(x)) + mlp(ln2(x))
    copy(dm_, g, Ms * d);
    copy(da_, g, Ms * d);
    mlp_back(L, t, dm_, dres);
    add(g, dres, Ms * d);
    attn_back(L, t, da_, dres);
    add(g, dres, Ms * d);
  } else {
    copy(dm_, g, Ms * d);
    mlp_back(L, t, dm_, dres);
    add(g, dres, Ms * d);
    at_hook(HookKind::ResidMid, L, g, &t);
    copy(da_, g, Ms * d);
    attn_back(L, t, da_, dres);
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
    norm_back(lw.ln2_post, t.get(Slot::M), t.get(Slot::ScaleLn2Post), Ms, d, dm, dt1_, HookKind::Ln2PostScale, HookKind::Ln2PostNormalized,
              L, det.norm_scale, &t);
    dmo = dt1_;
  }
  float *dpost = dmlp1_, *dpre = dmlp2_;
  gemm_b(lw.down, dmo, Ms, dpost);
  at_hook(HookKind::MlpPost, L, dpost, &t);
  const nt_activation act = static_cast<nt_activation>(c_.act);
  float *dh = dt1_;
  if (c_.gated_mlp) {
    float *dup = dmlp3_;
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
    norm_back(lw.ln1_post, t.get(Slot::O), t.get(Slot::ScaleLn1Post), Ms, d, da, dt1_, HookKind::Ln1PostScale, HookKind::Ln1PostNormalized,
              L, det.norm_scale, &t);
    dout = dt1_;
  }
  // attn_out = sum over heads of result + b_O: each head's result sees the same gradient.
  float *dz = dz_;
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
                        static_cast<const int32_t *>(pad_s_buf_.data()), NT_COMPUTE_F32};
  if (c_.scale_attn_by_inverse_layer_idx) as.scale /= static_cast<float>(L + 1);
  float *dp = dp_, *dqv = dq_, *dkk = dk_, *dvv = dv_;
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
  float *dh = dt1_, *part = dm_;  // dm_ is free once the MLP's backward has run
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
  const float *dproj[3] = {dq_, dk_, dv_};
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
      float *ds = det.norm_scale ? nullptr : dscale_;
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

}  // namespace nt
