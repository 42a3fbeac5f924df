// The units of one forward pass (engine/pass.h): the embeddings, one block and the head, with
// hooks fired through the run's plan. Reference: HF modeling_gpt2.py / modeling_llama.py;
// whole-model tests in test/fidelity.test.ts.
#include "engine/pass.h"

#include <algorithm>

#include "engine/error.h"

namespace nt {

DeviceEdit upload_edit(const std::shared_ptr<Backend> &be, const Edit &edit) {
  DeviceEdit d;
  d.e.op = static_cast<nt_edit_op>(edit.op);
  d.e.factor = edit.factor;
  d.e.lo = edit.lo;
  d.e.hi = edit.hi;
  d.e.last_only = edit.last_only;
  d.e.generated_only = edit.generated_only;
  d.e.prompt_only = edit.prompt_only;
  d.e.per_row = edit.per_row;
  if (!edit.vec.empty()) {
    d.vec = DeviceBuffer::upload(be, edit.vec.data(), edit.vec.size() * sizeof(float));
    d.e.vec = d.vec.f32();
  }
  if (edit.source) {
    d.source = DeviceBuffer::upload(be, edit.source, static_cast<size_t>(edit.source_numel) * sizeof(float));
    d.e.source = d.source.f32();
  }
  if (!edit.positions.empty()) {
    d.positions = DeviceBuffer::upload(be, edit.positions.data(), edit.positions.size() * sizeof(int64_t));
    d.e.positions = static_cast<const int64_t *>(d.positions.data());
    d.e.n_positions = static_cast<int64_t>(edit.positions.size());
  }
  if (!edit.rows.empty()) {
    d.rows = DeviceBuffer::upload(be, edit.rows.data(), edit.rows.size() * sizeof(int32_t));
    d.e.rows = static_cast<const int32_t *>(d.rows.data());
    d.e.n_rows = static_cast<int64_t>(edit.rows.size());
  }
  if (!edit.heads.empty()) {
    d.heads = DeviceBuffer::upload(be, edit.heads.data(), edit.heads.size() * sizeof(int32_t));
    d.e.heads = static_cast<const int32_t *>(d.heads.data());
    d.e.n_heads = static_cast<int64_t>(edit.heads.size());
  }
  return d;
}

void fire_plan_on(const std::shared_ptr<Backend> &be, const HookTable &table, HookPlan &plan, int idx, float *data,
                  const std::vector<int64_t> &shape, const HookContext &ctx, std::map<const Edit *, DeviceEdit> &uploaded, const int32_t *device_pad,
                  bool edits_only) {
  if (be->host_memory() && !edits_only) {
    plan.fire(table, idx, data, shape, ctx);
    return;
  }
  if (be->host_memory()) {
    for (const HookPlan::Action &a : plan.actions(idx))
      if (a.edit) apply_edit(*a.edit, table.points()[static_cast<size_t>(idx)].kind, data, shape, ctx);
    return;
  }
  const nt_backend_api &api = be->api();
  nt_backend *bx = be->ctx();
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  const UnitLayout u = unit_layout(table.points()[static_cast<size_t>(idx)].kind, shape);
  std::vector<float> staging;
  DeviceBuffer pad;
  for (const HookPlan::Action &a : plan.actions(idx)) {
    if (a.edit) {
      auto it = uploaded.find(a.edit.get());
      if (it == uploaded.end()) it = uploaded.emplace(a.edit.get(), upload_edit(be, *a.edit)).first;
      if (ctx.pad && !device_pad && pad.empty()) pad = DeviceBuffer::upload(be, ctx.pad, static_cast<size_t>(ctx.batch) * sizeof(int32_t));
      const int64_t T = u.head_major ? shape[2] : shape[1];
      const int32_t *dpad = ctx.pad ? (device_pad ? device_pad : static_cast<const int32_t *>(pad.data())) : nullptr;
      nt_edit_context ec{shape[0], T, u.heads, u.width, ctx.pos0, ctx.prompt_len, u.head_major ? 1 : 0, dpad};
      be->check(api.apply_edit(bx, &it->second.e, &ec, data), "apply_edit");
    } else if (!edits_only) {
      staging.resize(static_cast<size_t>(n));
      be->check(api.copy_to_host(bx, staging.data(), data, static_cast<size_t>(n) * sizeof(float)), "copy to host");
      a.callback->call(idx, staging.data(), shape, ctx);
      be->check(api.copy_to_device(bx, data, staging.data(), static_cast<size_t>(n) * sizeof(float)), "copy to device");
    }
  }
  if (float *dest = plan.capture(idx); dest && !edits_only)
    be->check(api.copy_to_host(bx, dest, data, static_cast<size_t>(n) * sizeof(float)), "capture");
}

Pass::Pass(Model &model, const ForwardRequest &req, HookPlan *plan, Mode mode)
    : m_(model),
      c_(model.config_),
      req_(req),
      plan_(plan),
      mode_(mode),
      be_(model.be_),
      api_(model.be_->api()),
      bx_(model.be_->ctx()),
      cache_(req.cache),
      B(req.batch),
      T(req.pos),
      M(B * T),
      d(c_.d_model),
      H(c_.n_heads),
      G(c_.n_kv_heads),
      D(c_.d_head),
      dq(H * D),
      dkv(G * D),
      pos0(cache_ ? cache_->len : 0),
      KV(pos0 + T),
      R(c_.rotary_dim),
      partial_(c_.rotary && c_.rotary_dim < c_.d_head),
      // Activations, one row per token: [M, width]. They live in the model's workspace, reused
      // across runs (runs are serialized), so a steady loop allocates and page-faults nothing.
      x_(model.scratch(0, M * d)),        // residual stream
      h_(model.scratch(1, M * d)),        // normalized input of attn / mlp / unembed
      scale_(model.scratch(2, M)),        // norm scales [B, T, 1]
      q_(model.scratch(3, M * dq)),       // [B, T, H, D]
      k_(model.scratch(4, M * dkv)),      // [B, T, G, D]
      v_(model.scratch(5, M * dkv)),      // [B, T, G, D]
      z_(model.scratch(6, M * dq)),       // [B, T, H, D]
      out_(model.scratch(7, M * d)),      // attn_out / mlp_out / position embeddings
      mlp_a_(model.scratch(8, M * c_.d_mlp)),                       // pre (gate) -> post
      mlp_b_(model.scratch(9, c_.gated_mlp ? M * c_.d_mlp : 0)),    // pre_linear (up)
      mlp_out_(model.scratch(10, c_.parallel_residual ? M * d : 0)),  // parallel residual: mlp_out beside attn_out
      head_scale_(model.scratch(11, c_.qk_norm ? M * std::max(H, G) : 0)),  // QK-norm scales [B, T, heads]
      rot_(model.scratch(12, partial_ ? M * std::max(H, G) * R : 0)),  // partial rotary: the rotated slice
      logits_(req.logits ? req.logits : req.sample ? model.sample_logits(B * c_.d_vocab) : nullptr) {
  if (cache_ && pos0 == 0) {
    for (int64_t b = 0; b < B; ++b) cache_->pad[static_cast<size_t>(b)] = req.pad ? req.pad[b] : 0;
    cache_->prompt_len = T;
  }
  const int32_t *host_pad = cache_ ? cache_->pad.data() : req.pad;
  ctx_.batch = B;
  ctx_.pos = T;
  ctx_.pos0 = pos0;
  ctx_.kv_len = KV;
  ctx_.pad = host_pad;
  ctx_.prompt_len = cache_ ? cache_->prompt_len : T;
  ctx_.step = cache_ ? cache_->steps : 0;
  // Host-memory backends read the ids and padding where they are (a decode step allocates nothing).
  if (be_->host_memory()) {
    tokens_ptr_ = req.tokens;
    pad_ = host_pad;
  } else {
    tokens_ = DeviceBuffer::upload(be_, req.tokens, static_cast<size_t>(M) * sizeof(int32_t));
    tokens_ptr_ = static_cast<const int32_t *>(tokens_.data());
    if (host_pad) pad_buf_ = DeviceBuffer::upload(be_, host_pad, static_cast<size_t>(B) * sizeof(int32_t));
    pad_ = static_cast<const int32_t *>(pad_buf_.data());
  }
}

int Pass::active(HookKind kind, int layer) const {
  const int idx = m_.hooks_->index(kind, layer);
  if (idx < 0) return -1;
  return ((plan_ && plan_->active(idx)) || (!m_.saes_.empty() && m_.sae_at(idx))) ? idx : -1;
}

bool Pass::edited(int idx) const {
  return idx >= 0 && ((plan_ && !plan_->actions(idx).empty()) || (!m_.saes_.empty() && m_.sae_at(idx)));
}

void Pass::fire_plan(int idx, float *data) {
  if (!plan_ || !plan_->active(idx)) return;
  const std::vector<int64_t> shape = m_.hooks_->shape(idx, B, T, KV);
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  bool has_callback = false;
  for (const HookPlan::Action &a : plan_->actions(idx)) has_callback |= a.callback != nullptr;
  if (mode_ == Mode::Replay) {
    auto saved = js_out.find(idx);
    if (saved != js_out.end()) {  // JS functions do not run twice: their output is restored
      be_->check(api_.copy_to_device(bx_, data, saved->second.data(), bytes), "restore hook output");
      return;
    }
    fire_plan_on(be_, *m_.hooks_, *plan_, idx, data, shape, ctx_, uploaded_, pad_, /*edits_only=*/true);
    return;
  }
  fire_plan_on(be_, *m_.hooks_, *plan_, idx, data, shape, ctx_, uploaded_, pad_);
  if (mode_ == Mode::Save && has_callback) {
    std::vector<float> &saved = js_out[idx];
    saved.resize(static_cast<size_t>(n));
    be_->check(api_.copy_to_host(bx_, saved.data(), data, bytes), "save hook output");
  }
}

// The plan at idx, then the SAE attached there (host memory only), which replaces `data`.
void Pass::fire(int idx, float *data) {
  if (idx < 0) return;
  if (tape_ && plan_ && !plan_->actions(idx).empty()) {
    bool cap = false;
    for (const HookPlan::Action &a : plan_->actions(idx)) cap |= a.edit && a.edit->op == EditOp::ProjectionCap;
    if (cap) {  // the projectionCap VJP needs the value the edit saw
      const int64_t n = m_.hooks_->numel(idx, B, T, KV);
      DeviceBuffer copy = buf(n);
      const size_t bytes = static_cast<size_t>(n) * sizeof(float);
      be_->check(api_.copy_2d(bx_, copy.data(), bytes, data, bytes, bytes, 1), "snapshot");
      tape_->pre_edit[idx] = std::move(copy);
    }
  }
  fire_plan(idx, data);
  AttachedSae *sae = m_.saes_.empty() ? nullptr : m_.sae_at(idx);
  if (!sae) return;
  const SaeFeatures *features = nullptr;
  for (const SaeFeatures &t : req_.sae_features)
    if (t.base == idx) features = &t;
  const int first = sae->first();
  sae->run(
      data, M, [&](int which, float *dd) { fire_plan(first + which, dd); },
      [&](int which) { return plan_ && !plan_->actions(first + which).empty(); }, features);
}

void Pass::keep(LayerTape *tape, int slot, const float *src, int64_t n) {
  if (!tape) return;
  tape->live[static_cast<size_t>(slot)] = 1;
  DeviceBuffer &dst = tape->slots[slot];
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  if (dst.bytes() != bytes * static_cast<size_t>(tape->replicas)) dst = buf(n * tape->replicas);
  for (int64_t r = 0; r < tape->replicas; ++r)
    be_->check(api_.copy_2d(bx_, dst.f32() + r * n, bytes, src, bytes, bytes, 1), "tape");
}

void Pass::embed() {
  be_->check(api_.embed(bx_, m_.embed_.data(), m_.dtype_, tokens_ptr_, M, d, x_.f32()), "embed");
  if (!m_.embed_scale_.empty()) be_->check(api_.mul_rows(bx_, x_.f32(), M, d, m_.embed_scale_.f32(), x_.f32()), "embed scale");
  fire(active(HookKind::Embed, -1), x_.f32());
  if (c_.rotary) return;
  // Learned positions count real tokens: row b's token t sits at pos0 + t - pad[b].
  const int pe = active(HookKind::PosEmbed, -1);
  if (pe >= 0) {  // materialize [B, T, d] only for the hook
    std::vector<float> zeros(static_cast<size_t>(M * d), 0.0f);
    be_->check(api_.copy_to_device(bx_, out_.data(), zeros.data(), zeros.size() * sizeof(float)), "zero");
    be_->check(api_.add_positions(bx_, m_.pos_embed_.data(), m_.dtype_, B, T, d, pos0, pad_, out_.f32()), "add_positions");
    fire(pe, out_.f32());
    be_->check(api_.add(bx_, x_.f32(), out_.f32(), M * d, x_.f32()), "add");
  } else {
    be_->check(api_.add_positions(bx_, m_.pos_embed_.data(), m_.dtype_, B, T, d, pos0, pad_, x_.f32()), "add_positions");
  }
}

// x += vec on each of `rows` rows of `width` (a bias), through the backend's add edit.
void Pass::add_row_vector(float *t, int64_t rows, int64_t width, const float *vec) {
  nt_edit e{};
  e.op = NT_EDIT_ADD;
  e.vec = vec;
  const nt_edit_context ec{1, rows, 1, width, 0, rows, 0, nullptr};
  be_->check(api_.apply_edit(bx_, &e, &ec, t), "add row vector");
}

// Fires hook_scale where it is edited, and divides the normalized rows `o` by the scale the
// hook left instead of the computed one (TransformerLens divides by the hooked scale). A host
// round trip per changed row: edits of a norm's scale are rare and the rows are short.
void Pass::fire_scale_edited(int si, float *sc, float *o, int64_t rows, int64_t width) {
  std::vector<float> before(static_cast<size_t>(rows)), after(static_cast<size_t>(rows)), row(static_cast<size_t>(width));
  be_->check(api_.copy_to_host(bx_, before.data(), sc, before.size() * sizeof(float)), "scale to host");
  fire(si, sc);
  be_->check(api_.copy_to_host(bx_, after.data(), sc, after.size() * sizeof(float)), "scale to host");
  const size_t row_bytes = row.size() * sizeof(float);
  for (int64_t r = 0; r < rows; ++r) {
    if (before[static_cast<size_t>(r)] == after[static_cast<size_t>(r)]) continue;
    const double ratio = static_cast<double>(before[static_cast<size_t>(r)]) / static_cast<double>(after[static_cast<size_t>(r)]);
    be_->check(api_.copy_to_host(bx_, row.data(), o + r * width, row_bytes), "row to host");
    for (float &v : row) v = static_cast<float>(v * ratio);
    be_->check(api_.copy_to_device(bx_, o + r * width, row.data(), row_bytes), "row to device");
  }
}

// Norm of `rows` rows of `width` from `in` into `o` (may alias) with TransformerLens's hooks:
// hook_scale, then hook_normalized = (x - mean) / scale for LayerNorm and x / scale for
// RMSNorm, before the weight (and bias). `sc` holds the scales. The kernel applies the weight
// itself unless one of the two hooks is active or the scale is edited. With a tape, the scale
// the rows were divided by is kept in `tape_slot`.
void Pass::norm_rows(const Norm &n, const float *in, float *o, int64_t rows, int64_t width, float *sc, HookKind scale_kind,
                     HookKind normalized_kind, int layer, LayerTape *tape, int tape_slot) {
  const int si = active(scale_kind, layer), ni = active(normalized_kind, layer);
  float *scale_out = si >= 0 || tape ? sc : nullptr;
  const bool layer_norm = c_.norm == NormKind::LayerNorm;
  const bool fused = ni < 0 && !edited(si);
  const float *w = fused ? n.w.f32() : nullptr, *b = fused && layer_norm ? n.b.f32() : nullptr;
  if (layer_norm)
    be_->check(api_.layer_norm(bx_, in, rows, width, w, b, c_.norm_eps, o, scale_out), "layer_norm");
  else
    be_->check(api_.rms_norm(bx_, in, rows, width, w, c_.norm_eps, o, scale_out), "rms_norm");
  if (fused) {
    fire(si, sc);
    keep(tape, tape_slot, sc, rows);
    return;
  }
  if (edited(si))
    fire_scale_edited(si, sc, o, rows, width);
  else
    fire(si, sc);
  keep(tape, tape_slot, sc, rows);
  fire(ni, o);
  be_->check(api_.mul_rows(bx_, o, rows, width, n.w.f32(), o), "mul_rows");
  if (layer_norm && !n.b.empty()) add_row_vector(o, rows, width, n.b.f32());
}

// Rotary on [B, T, heads, D] with `freq`; a partial rotary (GPT-NeoX) turns only the first R
// dims of each head: gathered into `rot`, turned, scattered back.
void Pass::rotary(float *t, int64_t heads, const float *freq) {
  if (!partial_) {
    be_->check(api_.rope(bx_, t, B, T, heads, D, freq, pos0, pad_), "rope");
    return;
  }
  const size_t rows = static_cast<size_t>(M * heads), row = static_cast<size_t>(R) * sizeof(float), pitch = static_cast<size_t>(D) * sizeof(float);
  be_->check(api_.copy_2d(bx_, rot_.data(), row, t, pitch, row, rows), "rotary gather");
  be_->check(api_.rope(bx_, rot_.f32(), B, T, heads, R, freq, pos0, pad_), "rope");
  be_->check(api_.copy_2d(bx_, t, pitch, rot_.data(), row, row, rows), "rotary scatter");
}

void Pass::linear(const Linear &l, const float *in, float *o) {
  be_->check(api_.gemm(bx_, in, M, l.in, l.w.data(), l.dtype, l.out, l.b.empty() ? nullptr : l.b.f32(), o), "gemm");
}

// `width` floats of each of the M rows of `src` into `dst` (pitches in floats): one head's
// columns, or whole rows (a row per token keeps each copy within a device's pitch limit).
void Pass::copy_head(float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch, int64_t width) {
  be_->check(api_.copy_2d(bx_, dst, static_cast<size_t>(dst_pitch) * sizeof(float), src, static_cast<size_t>(src_pitch) * sizeof(float),
                          static_cast<size_t>(width) * sizeof(float), static_cast<size_t>(M)),
             "copy head");
}

// TransformerLens's split inputs: `heads` copies of the [M, d] residual stream, [M, heads, d].
void Pass::repeat_heads(const float *src, int64_t heads, DeviceBuffer &dst) {
  dst = buf(M * heads * d);
  for (int64_t hh = 0; hh < heads; ++hh) copy_head(dst.f32() + hh * d, heads * d, src, d, d);
}

// q, k or v from per-head inputs [M, heads, d]: head hh is ln1 of its own copy through its
// rows of the projection (`l.out` = heads x D). Only runs while a split input is edited.
void Pass::linear_per_head(const Norm &n, const Linear &l, const float *in, int64_t heads, float *o) {
  DeviceBuffer row = buf(M * d), full = buf(M * l.out);
  for (int64_t hh = 0; hh < heads; ++hh) {
    copy_head(row.f32(), d, in + hh * d, heads * d, d);
    if (c_.norm == NormKind::LayerNorm)
      be_->check(api_.layer_norm(bx_, row.f32(), M, d, n.w.f32(), n.b.f32(), c_.norm_eps, row.f32(), nullptr), "layer_norm");
    else
      be_->check(api_.rms_norm(bx_, row.f32(), M, d, n.w.f32(), c_.norm_eps, row.f32(), nullptr), "rms_norm");
    linear(l, row.f32(), full.f32());
    copy_head(o + hh * D, l.out, full.f32() + hh * D, l.out, D);
  }
}

void Pass::layer(int L, LayerTape *tape) {
  tape_ = tape;
  if (tape) tape->clear();
  const LayerWeights &lw = m_.layers_[static_cast<size_t>(L)];
  fire(active(HookKind::ResidPre, L), x_.f32());
  keep(tape, LayerTape::X1, x_.f32(), M * d);

  // Attention. The split inputs (hook_attn_in, hook_q/k/v_input) exist only while hooked;
  // once one is edited, the projections it feeds read ln1 of each head's own copy.
  const int ain = active(HookKind::AttnIn, L);
  const int split_in[3] = {active(HookKind::QInput, L), active(HookKind::KInput, L), active(HookKind::VInput, L)};
  const int64_t split_heads[3] = {H, G, G};
  DeviceBuffer attn_in, split[3];  // [B, T, heads, d]
  if (ain >= 0) {
    repeat_heads(x_.f32(), H, attn_in);
    fire(ain, attn_in.f32());
    keep(tape, LayerTape::AttnIn, attn_in.f32(), M * H * d);
  }
  for (int i = 0; i < 3; ++i) {
    if (split_in[i] < 0 && !edited(ain)) continue;
    if (ain >= 0) {  // q, k and v inputs are copies of hook_attn_in (n_kv_heads == n_heads there)
      split[i] = buf(M * H * d);
      copy_head(split[i].f32(), H * d, attn_in.f32(), H * d, H * d);
    } else {
      repeat_heads(x_.f32(), split_heads[i], split[i]);
    }
    fire(split_in[i], split[i].f32());
    keep(tape, LayerTape::SplitQ + i, split[i].f32(), M * split_heads[i] * d);
  }
  norm_rows(lw.ln1, x_.f32(), h_.f32(), M, d, scale_.f32(), HookKind::Ln1Scale, HookKind::Ln1Normalized, L, tape, LayerTape::ScaleLn1);
  const Linear *proj[3] = {&lw.q, &lw.k, &lw.v};
  DeviceBuffer *proj_out[3] = {&q_, &k_, &v_};
  for (int i = 0; i < 3; ++i) {
    if (!split[i].empty() && (edited(split_in[i]) || edited(ain)))
      linear_per_head(lw.ln1, *proj[i], split[i].f32(), split_heads[i], proj_out[i]->f32());
    else
      linear(*proj[i], h_.f32(), proj_out[i]->f32());
  }
  fire(active(HookKind::AttnQ, L), q_.f32());
  fire(active(HookKind::AttnK, L), k_.f32());
  fire(active(HookKind::AttnV, L), v_.f32());
  keep(tape, LayerTape::V, v_.f32(), M * dkv);
  if (c_.qk_norm) {
    keep(tape, LayerTape::QPre, q_.f32(), M * dq);
    keep(tape, LayerTape::KPre, k_.f32(), M * dkv);
    norm_rows(lw.q_norm, q_.f32(), q_.f32(), M * H, D, head_scale_.f32(), HookKind::AttnQNormScale, HookKind::AttnQNormNormalized, L, tape,
              LayerTape::ScaleQ);
    norm_rows(lw.k_norm, k_.f32(), k_.f32(), M * G, D, head_scale_.f32(), HookKind::AttnKNormScale, HookKind::AttnKNormNormalized, L, tape,
              LayerTape::ScaleK);
  }
  const bool local = c_.sliding_window[static_cast<size_t>(L)] > 0;
  if (c_.rotary) {
    const float *freq = local && !m_.inv_freq_local_.empty() ? m_.inv_freq_local_.f32() : m_.inv_freq_.f32();
    rotary(q_.f32(), H, freq);
    rotary(k_.f32(), G, freq);
    fire(active(HookKind::AttnRotQ, L), q_.f32());
    fire(active(HookKind::AttnRotK, L), k_.f32());
  }
  keep(tape, LayerTape::Q, q_.f32(), M * dq);
  keep(tape, LayerTape::K, k_.f32(), M * dkv);
  // Keys and values: this forward's own, or the cache after appending them.
  const float *keys = k_.f32(), *values = v_.f32();
  int64_t S = T;
  if (cache_) {
    float *ck = cache_->k[static_cast<size_t>(L)].f32(), *cv = cache_->v[static_cast<size_t>(L)].f32();
    const size_t row = static_cast<size_t>(T * dkv) * sizeof(float), pitch = static_cast<size_t>(cache_->capacity * dkv) * sizeof(float);
    be_->check(api_.copy_2d(bx_, ck + pos0 * dkv, pitch, k_.f32(), row, row, static_cast<size_t>(B)), "kv append");
    be_->check(api_.copy_2d(bx_, cv + pos0 * dkv, pitch, v_.f32(), row, row, static_cast<size_t>(B)), "kv append");
    keys = ck;
    values = cv;
    S = cache_->capacity;
  }
  nt_attention_shape as{B, T, H, G, D, S, KV, pos0, c_.attn_scale, c_.sliding_window[static_cast<size_t>(L)], pad_,
                        m_.compute_ == NT_BF16 ? NT_COMPUTE_BF16 : NT_COMPUTE_F32};
  if (c_.scale_attn_by_inverse_layer_idx) as.scale /= static_cast<float>(L + 1);
  const int scores_i = active(HookKind::AttnScores, L), pattern_i = active(HookKind::AttnPattern, L);
  if (scores_i >= 0 || pattern_i >= 0 || c_.attn_softcap > 0.0f || tape) {  // soft-capping and the backward need the scores
    const int64_t np = B * H * T * KV;
    if (pattern_.bytes() != static_cast<size_t>(np) * sizeof(float)) pattern_ = buf(np);
    be_->check(api_.attention_scores(bx_, &as, q_.f32(), keys, pattern_.f32()), "attention_scores");
    if (c_.attn_softcap > 0.0f) {
      be_->check(api_.softcap(bx_, pattern_.f32(), np, c_.attn_softcap), "softcap");
      keep(tape, LayerTape::Capped, pattern_.f32(), np);
    }
    fire(scores_i, pattern_.f32());
    be_->check(api_.softmax_rows(bx_, pattern_.f32(), B * H * T, KV), "softmax_rows");
    fire(pattern_i, pattern_.f32());
    keep(tape, LayerTape::Pattern, pattern_.f32(), np);
    be_->check(api_.attention_apply(bx_, &as, pattern_.f32(), values, z_.f32()), "attention_apply");
  } else {
    be_->check(api_.attention(bx_, &as, q_.f32(), keys, values, z_.f32()), "attention");
  }
  fire(active(HookKind::AttnZ, L), z_.f32());
  linear(lw.o, z_.f32(), out_.f32());
  const int result_i = active(HookKind::AttnResult, L);
  if (result_i >= 0) {  // each head through its columns of W_O: [B, T, H, d]
    // zh holds z with every head but one zeroed: zeroed once, then one head in and out.
    DeviceBuffer result = buf(M * H * d), zh = buf(M * dq), part = buf(M * d), zero_head = buf(M * D);
    const std::vector<float> zeros(static_cast<size_t>(M * dq), 0.0f);
    be_->check(api_.copy_to_device(bx_, zh.data(), zeros.data(), zh.bytes()), "zero");
    be_->check(api_.copy_to_device(bx_, zero_head.data(), zeros.data(), zero_head.bytes()), "zero");
    for (int64_t hh = 0; hh < H; ++hh) {
      copy_head(zh.f32() + hh * D, dq, z_.f32() + hh * D, dq, D);
      be_->check(api_.gemm(bx_, zh.f32(), M, dq, lw.o.w.data(), lw.o.dtype, d, nullptr, part.f32()), "gemm");
      copy_head(zh.f32() + hh * D, dq, zero_head.f32(), D, D);
      copy_head(result.f32() + hh * d, H * d, part.f32(), d, d);
    }
    fire(result_i, result.f32());
    if (edited(result_i)) {  // TransformerLens: attn_out = sum over heads of result + b_O
      copy_head(out_.f32(), d, result.f32(), H * d, d);
      for (int64_t hh = 1; hh < H; ++hh) {
        copy_head(part.f32(), d, result.f32() + hh * d, H * d, d);
        be_->check(api_.add(bx_, out_.f32(), part.f32(), M * d, out_.f32()), "add");
      }
      if (!lw.o.b.empty()) add_row_vector(out_.f32(), M, d, lw.o.b.f32());
    }
  }
  float *attn_out = out_.f32();
  if (c_.sandwich_norms) {  // ln1_post: what is added to the residual is the normalized output
    keep(tape, LayerTape::O, out_.f32(), M * d);
    norm_rows(lw.ln1_post, out_.f32(), h_.f32(), M, d, scale_.f32(), HookKind::Ln1PostScale, HookKind::Ln1PostNormalized, L, tape,
              LayerTape::ScaleLn1Post);
    attn_out = h_.f32();
  }
  fire(active(HookKind::AttnOut, L), attn_out);
  if (!c_.parallel_residual) {
    be_->check(api_.add(bx_, x_.f32(), attn_out, M * d, x_.f32()), "add");
    fire(active(HookKind::ResidMid, L), x_.f32());
    keep(tape, LayerTape::X2, x_.f32(), M * d);
  } else if (attn_out != out_.f32()) {
    copy_head(out_.f32(), d, attn_out, d, d);
  }

  // MLP (parallel residual: reading resid_pre, with attn_out kept in `out`). hook_mlp_in is a
  // copy of ln2's input, so an edit there reaches the MLP but not the residual stream.
  const int mlp_in_i = active(HookKind::MlpIn, L);
  if (mlp_in_i >= 0) {
    DeviceBuffer mlp_in = buf(M * d);
    copy_head(mlp_in.f32(), d, x_.f32(), d, d);
    fire(mlp_in_i, mlp_in.f32());
    keep(tape, LayerTape::MlpIn, mlp_in.f32(), M * d);
    norm_rows(lw.ln2, mlp_in.f32(), h_.f32(), M, d, scale_.f32(), HookKind::Ln2Scale, HookKind::Ln2Normalized, L, tape, LayerTape::ScaleLn2);
  } else {
    norm_rows(lw.ln2, x_.f32(), h_.f32(), M, d, scale_.f32(), HookKind::Ln2Scale, HookKind::Ln2Normalized, L, tape, LayerTape::ScaleLn2);
  }
  const int64_t n_mlp = M * c_.d_mlp;
  const nt_activation act = static_cast<nt_activation>(c_.act);
  if (c_.gated_mlp) {
    linear(lw.gate, h_.f32(), mlp_a_.f32());
    fire(active(HookKind::MlpPre, L), mlp_a_.f32());
    keep(tape, LayerTape::Pre, mlp_a_.f32(), n_mlp);
    linear(lw.up, h_.f32(), mlp_b_.f32());
    fire(active(HookKind::MlpPreLinear, L), mlp_b_.f32());
    keep(tape, LayerTape::Up, mlp_b_.f32(), n_mlp);
    be_->check(api_.gated_activation(bx_, act, mlp_a_.f32(), mlp_b_.f32(), n_mlp, mlp_a_.f32()), "gated_activation");
  } else {
    linear(lw.up, h_.f32(), mlp_a_.f32());
    fire(active(HookKind::MlpPre, L), mlp_a_.f32());
    keep(tape, LayerTape::Pre, mlp_a_.f32(), n_mlp);
    be_->check(api_.activation(bx_, act, mlp_a_.f32(), n_mlp), "activation");
  }
  fire(active(HookKind::MlpPost, L), mlp_a_.f32());
  float *m_out = c_.parallel_residual ? mlp_out_.f32() : out_.f32();
  linear(lw.down, mlp_a_.f32(), m_out);
  if (c_.sandwich_norms) {
    keep(tape, LayerTape::M, m_out, M * d);
    norm_rows(lw.ln2_post, m_out, h_.f32(), M, d, scale_.f32(), HookKind::Ln2PostScale, HookKind::Ln2PostNormalized, L, tape,
              LayerTape::ScaleLn2Post);
    m_out = h_.f32();
  }
  fire(active(HookKind::MlpOut, L), m_out);
  if (c_.parallel_residual) {  // HF: (mlp_out + attn_out) + resid_pre
    be_->check(api_.add(bx_, m_out, out_.f32(), M * d, m_out), "add");
    be_->check(api_.add(bx_, m_out, x_.f32(), M * d, x_.f32()), "add");
  } else {
    be_->check(api_.add(bx_, x_.f32(), m_out, M * d, x_.f32()), "add");
  }
  fire(active(HookKind::ResidPost, L), x_.f32());
  tape_ = nullptr;
}

void Pass::head() {
  const int fs = active(HookKind::LnFinalScale, -1), fn = active(HookKind::LnFinalNormalized, -1);
  const int ui = active(HookKind::UnembedIn, -1), uo = active(HookKind::UnembedOut, -1);
  if (!(logits_ || fs >= 0 || fn >= 0 || ui >= 0 || uo >= 0)) return;
  norm_rows(m_.ln_final_, x_.f32(), h_.f32(), M, d, scale_.f32(), HookKind::LnFinalScale, HookKind::LnFinalNormalized, -1, nullptr, 0);
  fire(ui, h_.f32());
  const DeviceBuffer &head = m_.lm_head_.empty() ? m_.embed_ : m_.lm_head_;
  const nt_dtype head_dtype = m_.lm_head_.empty() ? m_.dtype_ : m_.lm_head_dtype_;
  const int64_t V = c_.d_vocab;
  if (uo >= 0) {  // every position's logits, hooked before the final soft-cap (TransformerLens)
    DeviceBuffer all = buf(M * V);
    be_->check(api_.gemm(bx_, h_.f32(), M, d, head.data(), head_dtype, V, nullptr, all.f32()), "gemm");
    fire(uo, all.f32());
    if (!logits_) return;
    if (c_.final_softcap > 0.0f) be_->check(api_.softcap(bx_, all.f32(), M * V, c_.final_softcap), "softcap");
    const size_t row = static_cast<size_t>(V) * sizeof(float);
    if (req_.logits_last_only)
      for (int64_t b = 0; b < B; ++b)
        be_->check(api_.copy_to_host(bx_, logits_ + b * V, all.f32() + (b * T + last_index(b)) * V, row), "logits to host");
    else
      be_->check(api_.copy_to_host(bx_, logits_, all.data(), all.bytes()), "logits to host");
    return;
  }
  if (!logits_) return;
  const int64_t rows = req_.logits_last_only ? B : M;
  const float *in = h_.f32();
  if (req_.logits_last_only) {  // only the last position of each row: [B, d], in out_ (free once the blocks have run)
    DeviceBuffer &last = out_;
    const size_t row = static_cast<size_t>(d) * sizeof(float);
    if (req_.right_pad)
      for (int64_t b = 0; b < B; ++b)
        be_->check(api_.copy_2d(bx_, last.f32() + b * d, row, h_.f32() + (b * T + last_index(b)) * d, row, row, 1), "gather");
    else
      be_->check(api_.copy_2d(bx_, last.data(), row, h_.f32() + (T - 1) * d, static_cast<size_t>(T) * row, row, static_cast<size_t>(B)), "gather");
    in = last.f32();
  }
  if (be_->host_memory()) {
    be_->check(api_.gemm(bx_, in, rows, d, head.data(), head_dtype, V, nullptr, logits_), "gemm");
    if (c_.final_softcap > 0.0f) be_->check(api_.softcap(bx_, logits_, rows * V, c_.final_softcap), "softcap");
  } else {
    // Last-position logits (a decode step) reuse a workspace buffer; every position's, a temporary.
    DeviceBuffer temporary;
    DeviceBuffer &logits = req_.logits_last_only ? m_.scratch(13, rows * V) : (temporary = buf(rows * V));
    be_->check(api_.gemm(bx_, in, rows, d, head.data(), head_dtype, V, nullptr, logits.f32()), "gemm");
    if (c_.final_softcap > 0.0f) be_->check(api_.softcap(bx_, logits.f32(), rows * V, c_.final_softcap), "softcap");
    be_->check(api_.copy_to_host(bx_, logits_, logits.data(), static_cast<size_t>(rows * V) * sizeof(float)), "logits to host");
  }
}

void Pass::finish() {
  if (cache_) {
    cache_->len += T;
    cache_->steps += 1;
  }
  be_->check(api_.synchronize(bx_), "synchronize");
}

}  // namespace nt
