// The instrumented forward loop over the backend ABI: every op is a backend call on backend
// buffers; hooks run in place on host-memory backends and through copies (captures, JS
// callbacks) or device-side edits otherwise. Reference: HF modeling_gpt2.py /
// modeling_llama.py; whole-model tests in test/fidelity.test.ts.
#include "engine/model.h"

#include <algorithm>
#include <map>

#include "engine/error.h"

namespace nt {

namespace {

void check_finite_size(int64_t a, int64_t b, const char *what) {
  if (a > 0 && b > (int64_t(1) << 46) / a) fail(code::kInvalidInput, std::string(what) + " is too large");
}

// An edit's vectors and lists uploaded to the backend, for device-side application.
struct DeviceEdit {
  DeviceBuffer vec, positions, rows, heads, source;
  nt_edit e{};
};

DeviceEdit upload_edit(const std::shared_ptr<Backend> &be, const Edit &edit) {
  DeviceEdit d;
  d.e.op = static_cast<nt_edit_op>(edit.op);
  d.e.factor = edit.factor;
  d.e.lo = edit.lo;
  d.e.hi = edit.hi;
  d.e.last_only = edit.last_only;
  d.e.generated_only = edit.generated_only;
  d.e.prompt_only = edit.prompt_only;
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

}  // namespace

DeviceBuffer &Model::scratch(size_t slot, int64_t floats) {
  DeviceBuffer &b = workspace_.at(slot);  // a fixed array: references stay valid across calls
  const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
  if (b.bytes() < bytes) {
    b.reset();
    b = DeviceBuffer(be_, bytes);
  }
  return b;
}

std::unique_ptr<KvCache> Model::create_cache(int64_t batch, int64_t capacity) const {
  const ModelConfig &c = config_;
  if (batch < 1 || capacity < 1) fail(code::kInvalidInput, "a KV cache needs batch >= 1 and capacity >= 1");
  check_finite_size(batch * capacity, static_cast<int64_t>(c.n_kv_heads) * c.d_head * c.n_layers, "KV cache");
  std::unique_ptr<KvCache> cache(new KvCache());
  cache->backend = be_;
  cache->batch = batch;
  cache->capacity = capacity;
  cache->heads = c.n_kv_heads;
  cache->d_head = c.d_head;
  const size_t bytes = static_cast<size_t>(batch * capacity * c.n_kv_heads * c.d_head) * sizeof(float);
  for (int L = 0; L < c.n_layers; ++L) {
    cache->k.emplace_back(be_, bytes);
    cache->v.emplace_back(be_, bytes);
  }
  cache->pad.assign(static_cast<size_t>(batch), 0);
  return cache;
}

void Model::forward(const ForwardRequest &req, HookPlan *plan) {
  const ModelConfig &c = config_;
  std::lock_guard<std::mutex> lock(run_mutex_);  // runs serialize; SAE attach/detach wait for them
  if (req.hooks_version != hooks_->version)
    fail(code::kInvalidInput, "an SAE was attached or detached after this run was planned; run it again");
  if (req.batch < 1 || req.pos < 1)
    fail(code::kInvalidInput, "input must have at least one sequence of at least one token (got batch " + std::to_string(req.batch) +
                                  ", pos " + std::to_string(req.pos) + ")");
  check_finite_size(req.batch, req.pos, "batch x pos");
  check_finite_size(req.batch * req.pos, std::max<int64_t>(c.d_vocab, c.d_mlp), "batch x pos x width");
  const KvCache *cache = req.cache;
  const int64_t pos0 = cache ? cache->len : 0;
  if (cache) {
    if (cache->backend != be_ || cache->heads != c.n_kv_heads || cache->d_head != c.d_head || static_cast<int>(cache->k.size()) != c.n_layers)
      fail(code::kInvalidInput, "the KV cache was made for another model");
    if (cache->batch != req.batch)
      fail(code::kInvalidInput, "the KV cache holds " + std::to_string(cache->batch) + " sequences, the input " + std::to_string(req.batch));
    if (pos0 + req.pos > cache->capacity)
      fail(code::kInvalidInput, "the KV cache is full: " + std::to_string(pos0) + " + " + std::to_string(req.pos) + " positions exceed its capacity " +
                                    std::to_string(cache->capacity));
    if (req.pad && pos0 > 0) fail(code::kInvalidInput, "left padding can only be set by the first forward into a KV cache");
  }
  const int32_t *pad = req.pad ? req.pad : (cache ? cache->pad.data() : nullptr);
  for (int64_t b = 0; pad && b < req.batch; ++b)
    if (pad[b] < 0 || pad[b] >= std::max<int64_t>(req.pos, pos0 + req.pos))
      fail(code::kInvalidInput, "left padding of row " + std::to_string(b) + " must leave at least one real token");
  if (!c.rotary && pos0 + req.pos > c.n_ctx)
    fail(code::kInvalidInput, "sequence length " + std::to_string(pos0 + req.pos) + " exceeds the model's " + std::to_string(c.n_ctx) +
                                  " learned positions");
  for (int64_t i = 0; i < req.batch * req.pos; ++i) {
    const int32_t t = req.tokens[i];
    if (t < 0 || t >= c.d_vocab)
      fail(code::kTokenOutOfRange, "token id " + std::to_string(t) + " at batch " + std::to_string(i / req.pos) + ", position " +
                                       std::to_string(i % req.pos) + " is outside the vocabulary [0, " + std::to_string(c.d_vocab) + ")");
  }
  const bool stopping = req.stop_at_layer >= 0 && req.stop_at_layer < c.n_layers;
  if (req.stop_at_layer < -1 || req.stop_at_layer > c.n_layers)
    fail(code::kInvalidInput, "stopAtLayer must be in [0, " + std::to_string(c.n_layers) + "]");
  if (stopping && req.logits) fail(code::kInvalidInput, "logits are not computed when stopping at layer " + std::to_string(req.stop_at_layer));
  if (stopping && cache) fail(code::kInvalidInput, "stopAtLayer cannot be used with a KV cache");
  if (plan) {
    for (size_t i = 0; i < hooks_->points().size(); ++i) {
      const int idx = static_cast<int>(i);
      const HookPoint &hp = hooks_->points()[i];
      const bool past = stopping && (hp.layer >= req.stop_at_layer || hp.after_blocks);
      if (past && plan->active(idx))
        fail(code::kInvalidInput, "hook '" + hp.name + "' is not reached when stopping at layer " + std::to_string(req.stop_at_layer));
      const std::vector<int64_t> shape = hooks_->shape(idx, req.batch, req.pos, pos0 + req.pos);
      for (const Edit *e : plan->edits(idx)) validate_edit(*e, hooks_->points()[i], shape);
      if ((hp.kind == HookKind::Ln1Scale || hp.kind == HookKind::Ln1Normalized) && !plan->actions(idx).empty())
        for (HookKind split : {HookKind::AttnIn, HookKind::QInput, HookKind::KInput, HookKind::VInput}) {
          const int s = hooks_->index(split, hp.layer);
          if (s >= 0 && !plan->actions(s).empty())
            fail(code::kInvalidInput, "'" + hp.name + "' cannot be edited together with '" + hooks_->points()[static_cast<size_t>(s)].name +
                                          "': with split inputs each head has its own ln1 (TransformerLens gives ln1 a head axis then)");
        }
      if (plan->has_capture(idx) && plan->capture_numel(idx) != hooks_->numel(idx, req.batch, req.pos, pos0 + req.pos))
        fail(code::kBufferSize, "capture buffer for '" + hooks_->points()[i].name + "' has " + std::to_string(plan->capture_numel(idx)) +
                                    " floats, needs " + std::to_string(hooks_->numel(idx, req.batch, req.pos, pos0 + req.pos)));
    }
  }
  for (const SaeFeatures &t : req.sae_features) {
    const AttachedSae *sae = sae_at(t.base);
    if (!sae) fail(code::kInvalidInput, "no SAE is attached at the requested features' hook");
    if (t.k < 0 || t.k > sae->d_sae() || (t.k > 0 && (!t.indices || !t.values)))
      fail(code::kInvalidInput, "top-k features need 1 <= k <= d_sae (" + std::to_string(sae->d_sae()) + ") and output buffers");
    if (t.counts && t.counts_len != sae->d_sae())
      fail(code::kBufferSize, "feature counts hold " + std::to_string(t.counts_len) + " entries, the SAE has d_sae " + std::to_string(sae->d_sae()));
    const HookPoint &base = hooks_->points()[static_cast<size_t>(t.base)];
    if (stopping && (base.layer >= req.stop_at_layer || base.after_blocks))
      fail(code::kInvalidInput, "the SAE's hook is not reached when stopping at layer " + std::to_string(req.stop_at_layer));
  }
  if (plan)
    for (const auto &sae : saes_)
      if (!sae->use_error_term() && plan->active(sae->first() + kSaeError))
        fail(code::kInvalidInput, "'" + hooks_->points()[static_cast<size_t>(sae->first() + kSaeError)].name +
                                      "' needs the SAE attached with its error term (useErrorTerm: true)");
  forward_locked(req, plan);
}

void Model::forward_locked(const ForwardRequest &req, HookPlan *plan) {
  const ModelConfig &c = config_;
  const nt_backend_api &api = be_->api();
  nt_backend *bx = be_->ctx();
  const Backend &be = *be_;
  KvCache *cache = req.cache;
  const int64_t B = req.batch, T = req.pos, M = B * T, d = c.d_model;
  const int64_t H = c.n_heads, G = c.n_kv_heads, D = c.d_head;
  const int64_t dq = H * D, dkv = G * D;
  const int64_t pos0 = cache ? cache->len : 0, KV = pos0 + T;
  if (cache && pos0 == 0) {
    for (int64_t b = 0; b < B; ++b) cache->pad[static_cast<size_t>(b)] = req.pad ? req.pad[b] : 0;
    cache->prompt_len = T;
  }
  const int32_t *host_pad = cache ? cache->pad.data() : req.pad;

  HookContext ctx;
  ctx.batch = B;
  ctx.pos = T;
  ctx.pos0 = pos0;
  ctx.kv_len = KV;
  ctx.pad = host_pad;
  ctx.prompt_len = cache ? cache->prompt_len : T;
  ctx.step = cache ? cache->steps : 0;

  auto buf = [&](int64_t floats) { return DeviceBuffer(be_, static_cast<size_t>(floats) * sizeof(float)); };
  DeviceBuffer tokens = DeviceBuffer::upload(be_, req.tokens, static_cast<size_t>(M) * sizeof(int32_t));
  DeviceBuffer pad_buf = host_pad ? DeviceBuffer::upload(be_, host_pad, static_cast<size_t>(B) * sizeof(int32_t)) : DeviceBuffer();
  const int32_t *pad = static_cast<const int32_t *>(pad_buf.data());

  // Activations, one row per token: [M, width]. They live in the model's workspace, reused
  // across runs (runs are serialized), so a steady loop allocates and page-faults nothing.
  DeviceBuffer &x = scratch(0, M * d);       // residual stream
  DeviceBuffer &h = scratch(1, M * d);       // normalized input of attn / mlp / unembed
  DeviceBuffer &scale = scratch(2, M);       // norm scales [B, T, 1]
  DeviceBuffer &q = scratch(3, M * dq);      // [B, T, H, D]
  DeviceBuffer &k = scratch(4, M * dkv);     // [B, T, G, D]
  DeviceBuffer &v = scratch(5, M * dkv);     // [B, T, G, D]
  DeviceBuffer &z = scratch(6, M * dq);      // [B, T, H, D]
  DeviceBuffer &out = scratch(7, M * d);     // attn_out / mlp_out / position embeddings
  DeviceBuffer &mlp_a = scratch(8, M * c.d_mlp);                    // pre (gate) -> post
  DeviceBuffer &mlp_b = scratch(9, c.gated_mlp ? M * c.d_mlp : 0);  // pre_linear (up)
  DeviceBuffer &mlp_out = scratch(10, c.parallel_residual ? M * d : 0);  // parallel residual: mlp_out beside attn_out
  DeviceBuffer &head_scale = scratch(11, c.qk_norm ? M * std::max(H, G) : 0);  // QK-norm scales [B, T, heads]
  const int64_t R = c.rotary_dim;
  const bool partial = c.rotary && R < D;
  DeviceBuffer &rot = scratch(12, partial ? M * std::max(H, G) * R : 0);  // partial rotary: the rotated slice
  DeviceBuffer pattern;              // [B, H, T, KV], only while scores/pattern are hooked

  // Hooks. On host-memory backends the plan works on the buffer itself; otherwise edits run
  // on the device and captures and JS callbacks go through host copies.
  std::map<const Edit *, DeviceEdit> device_edits;
  std::vector<float> staging;
  // A hook is active when the plan acts there or an SAE is attached to it.
  auto active = [&](HookKind kind, int layer) {
    const int idx = hooks_->index(kind, layer);
    if (idx < 0) return -1;
    return ((plan && plan->active(idx)) || (!saes_.empty() && sae_at(idx))) ? idx : -1;
  };
  // Whether a hook can change what flows on (edits, JS functions, an SAE), not only observe it.
  auto edited = [&](int idx) { return idx >= 0 && ((plan && !plan->actions(idx).empty()) || (!saes_.empty() && sae_at(idx))); };
  auto fire_plan = [&](int idx, float *data) {
    if (!plan || !plan->active(idx)) return;
    const std::vector<int64_t> shape = hooks_->shape(idx, B, T, KV);
    if (be.host_memory()) {
      plan->fire(*hooks_, idx, data, shape, ctx);
      return;
    }
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const HookKind kind = hooks_->points()[static_cast<size_t>(idx)].kind;
    const UnitLayout u = unit_layout(kind, shape);
    for (const HookPlan::Action &a : plan->actions(idx)) {
      if (a.edit) {
        auto it = device_edits.find(a.edit.get());
        if (it == device_edits.end()) it = device_edits.emplace(a.edit.get(), upload_edit(be_, *a.edit)).first;
        nt_edit_context ec{B, T, u.heads, u.width, pos0, ctx.prompt_len, u.head_major ? 1 : 0, pad};
        be.check(api.apply_edit(bx, &it->second.e, &ec, data), "apply_edit");
      } else {
        staging.resize(static_cast<size_t>(n));
        be.check(api.copy_to_host(bx, staging.data(), data, static_cast<size_t>(n) * sizeof(float)), "copy to host");
        a.callback->call(idx, staging.data(), shape, ctx);
        be.check(api.copy_to_device(bx, data, staging.data(), static_cast<size_t>(n) * sizeof(float)), "copy to device");
      }
    }
    if (float *dest = plan->capture(idx)) be.check(api.copy_to_host(bx, dest, data, static_cast<size_t>(n) * sizeof(float)), "capture");
  };
  // The plan at idx, then the SAE attached there (host memory only), which replaces `data`.
  auto fire = [&](int idx, float *data) {
    if (idx < 0) return;
    fire_plan(idx, data);
    AttachedSae *sae = saes_.empty() ? nullptr : sae_at(idx);
    if (!sae) return;
    const SaeFeatures *features = nullptr;
    for (const SaeFeatures &t : req.sae_features)
      if (t.base == idx) features = &t;
    const int first = sae->first();
    sae->run(
        data, M, [&](int which, float *d) { fire_plan(first + which, d); },
        [&](int which) { return plan && !plan->actions(first + which).empty(); }, features);
  };

  // Embedding.
  be.check(api.embed(bx, embed_.data(), dtype_, static_cast<const int32_t *>(tokens.data()), M, d, x.f32()), "embed");
  if (!embed_scale_.empty()) be.check(api.mul_rows(bx, x.f32(), M, d, embed_scale_.f32(), x.f32()), "embed scale");
  fire(active(HookKind::Embed, -1), x.f32());
  if (!c.rotary) {
    // Learned positions count real tokens: row b's token t sits at pos0 + t - pad[b].
    const int pe = active(HookKind::PosEmbed, -1);
    if (pe >= 0) {  // materialize [B, T, d] only for the hook
      std::vector<float> zeros(static_cast<size_t>(M * d), 0.0f);
      be.check(api.copy_to_device(bx, out.data(), zeros.data(), zeros.size() * sizeof(float)), "zero");
      be.check(api.add_positions(bx, pos_embed_.data(), dtype_, B, T, d, pos0, pad, out.f32()), "add_positions");
      fire(pe, out.f32());
      be.check(api.add(bx, x.f32(), out.f32(), M * d, x.f32()), "add");
    } else {
      be.check(api.add_positions(bx, pos_embed_.data(), dtype_, B, T, d, pos0, pad, x.f32()), "add_positions");
    }
  }

  // x += vec on each of `rows` rows of `width` (a bias), through the backend's add edit.
  auto add_row_vector = [&](float *t, int64_t rows, int64_t width, const float *vec) {
    nt_edit e{};
    e.op = NT_EDIT_ADD;
    e.vec = vec;
    const nt_edit_context ec{1, rows, 1, width, 0, rows, 0, nullptr};
    be.check(api.apply_edit(bx, &e, &ec, t), "add row vector");
  };
  // Fires hook_scale where it is edited, and divides the normalized rows `o` by the scale the
  // hook left instead of the computed one (TransformerLens divides by the hooked scale). A
  // host round trip per changed row: edits of a norm's scale are rare and the rows are short.
  auto fire_scale_edited = [&](int si, float *sc, float *o, int64_t rows, int64_t width) {
    std::vector<float> before(static_cast<size_t>(rows)), after(static_cast<size_t>(rows)), row(static_cast<size_t>(width));
    be.check(api.copy_to_host(bx, before.data(), sc, before.size() * sizeof(float)), "scale to host");
    fire(si, sc);
    be.check(api.copy_to_host(bx, after.data(), sc, after.size() * sizeof(float)), "scale to host");
    const size_t row_bytes = row.size() * sizeof(float);
    for (int64_t r = 0; r < rows; ++r) {
      if (before[static_cast<size_t>(r)] == after[static_cast<size_t>(r)]) continue;
      const double ratio = static_cast<double>(before[static_cast<size_t>(r)]) / static_cast<double>(after[static_cast<size_t>(r)]);
      be.check(api.copy_to_host(bx, row.data(), o + r * width, row_bytes), "row to host");
      for (float &v : row) v = static_cast<float>(v * ratio);
      be.check(api.copy_to_device(bx, o + r * width, row.data(), row_bytes), "row to device");
    }
  };
  // Norm of `rows` rows of `width` from `in` into `o` (may alias) with TransformerLens's hooks:
  // hook_scale, then hook_normalized = (x - mean) / scale for LayerNorm and x / scale for
  // RMSNorm, before the weight (and bias). `sc` holds the scales. The kernel applies the weight
  // itself unless one of the two hooks is active or the scale is edited.
  auto norm_rows = [&](const Norm &n, const float *in, float *o, int64_t rows, int64_t width, float *sc, HookKind scale_kind,
                       HookKind normalized_kind, int layer) {
    const int si = active(scale_kind, layer), ni = active(normalized_kind, layer);
    float *scale_out = si >= 0 ? sc : nullptr;
    const bool layer_norm = c.norm == NormKind::LayerNorm;
    const bool fused = ni < 0 && !edited(si);
    const float *w = fused ? n.w.f32() : nullptr, *b = fused && layer_norm ? n.b.f32() : nullptr;
    if (layer_norm)
      be.check(api.layer_norm(bx, in, rows, width, w, b, c.norm_eps, o, scale_out), "layer_norm");
    else
      be.check(api.rms_norm(bx, in, rows, width, w, c.norm_eps, o, scale_out), "rms_norm");
    if (fused) {
      fire(si, sc);
      return;
    }
    if (edited(si))
      fire_scale_edited(si, sc, o, rows, width);
    else
      fire(si, sc);
    fire(ni, o);
    be.check(api.mul_rows(bx, o, rows, width, n.w.f32(), o), "mul_rows");
    if (layer_norm && !n.b.empty()) add_row_vector(o, rows, width, n.b.f32());
  };
  // The residual stream's norms: x into h.
  auto norm = [&](const Norm &n, HookKind scale_kind, HookKind normalized_kind, int layer) {
    norm_rows(n, x.f32(), h.f32(), M, d, scale.f32(), scale_kind, normalized_kind, layer);
  };
  // Rotary on [B, T, heads, D] with `freq`; a partial rotary (GPT-NeoX) turns only the first R
  // dims of each head: gathered into `rot`, turned, scattered back.
  auto rotary = [&](float *t, int64_t heads, const float *freq) {
    if (!partial) {
      be.check(api.rope(bx, t, B, T, heads, D, freq, pos0, pad), "rope");
      return;
    }
    const size_t rows = static_cast<size_t>(M * heads), row = static_cast<size_t>(R) * sizeof(float), pitch = static_cast<size_t>(D) * sizeof(float);
    be.check(api.copy_2d(bx, rot.data(), row, t, pitch, row, rows), "rotary gather");
    be.check(api.rope(bx, rot.f32(), B, T, heads, R, freq, pos0, pad), "rope");
    be.check(api.copy_2d(bx, t, pitch, rot.data(), row, row, rows), "rotary scatter");
  };
  auto linear = [&](const Linear &l, const float *in, float *o) {
    be.check(api.gemm(bx, in, M, l.in, l.w.data(), l.dtype, l.out, l.b.empty() ? nullptr : l.b.f32(), o), "gemm");
  };
  // `width` floats of each of the M rows of `src` into `dst` (pitches in floats): one head's
  // columns, or whole rows (a row per token keeps each copy within a device's pitch limit).
  auto copy_head = [&](float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch, int64_t width) {
    be.check(api.copy_2d(bx, dst, static_cast<size_t>(dst_pitch) * sizeof(float), src, static_cast<size_t>(src_pitch) * sizeof(float),
                         static_cast<size_t>(width) * sizeof(float), static_cast<size_t>(M)),
             "copy head");
  };
  // TransformerLens's split inputs: `heads` copies of the [M, d] residual stream, [M, heads, d].
  auto repeat_heads = [&](const float *src, int64_t heads, DeviceBuffer &dst) {
    dst = buf(M * heads * d);
    for (int64_t hh = 0; hh < heads; ++hh) copy_head(dst.f32() + hh * d, heads * d, src, d, d);
  };
  // q, k or v from per-head inputs [M, heads, d]: head hh is ln1 of its own copy through its
  // rows of the projection (`l.out` = heads x D). Only runs while a split input is edited.
  auto linear_per_head = [&](const Norm &n, const Linear &l, const float *in, int64_t heads, float *o) {
    DeviceBuffer row = buf(M * d), full = buf(M * l.out);
    for (int64_t hh = 0; hh < heads; ++hh) {
      copy_head(row.f32(), d, in + hh * d, heads * d, d);
      if (c.norm == NormKind::LayerNorm)
        be.check(api.layer_norm(bx, row.f32(), M, d, n.w.f32(), n.b.f32(), c.norm_eps, row.f32(), nullptr), "layer_norm");
      else
        be.check(api.rms_norm(bx, row.f32(), M, d, n.w.f32(), c.norm_eps, row.f32(), nullptr), "rms_norm");
      linear(l, row.f32(), full.f32());
      copy_head(o + hh * D, l.out, full.f32() + hh * D, l.out, D);
    }
  };

  const int n_run = req.stop_at_layer >= 0 ? std::min(req.stop_at_layer, c.n_layers) : c.n_layers;
  for (int L = 0; L < n_run; ++L) {
    const LayerWeights &lw = layers_[static_cast<size_t>(L)];
    fire(active(HookKind::ResidPre, L), x.f32());

    // Attention. The split inputs (hook_attn_in, hook_q/k/v_input) exist only while hooked;
    // once one is edited, the projections it feeds read ln1 of each head's own copy.
    const int ain = active(HookKind::AttnIn, L);
    const int split_in[3] = {active(HookKind::QInput, L), active(HookKind::KInput, L), active(HookKind::VInput, L)};
    const int64_t split_heads[3] = {H, G, G};
    DeviceBuffer attn_in, split[3];  // [B, T, heads, d]
    if (ain >= 0) {
      repeat_heads(x.f32(), H, attn_in);
      fire(ain, attn_in.f32());
    }
    for (int i = 0; i < 3; ++i) {
      if (split_in[i] < 0 && !edited(ain)) continue;
      if (ain >= 0) {  // q, k and v inputs are copies of hook_attn_in (n_kv_heads == n_heads there)
        split[i] = buf(M * H * d);
        copy_head(split[i].f32(), H * d, attn_in.f32(), H * d, H * d);
      } else {
        repeat_heads(x.f32(), split_heads[i], split[i]);
      }
      fire(split_in[i], split[i].f32());
    }
    norm(lw.ln1, HookKind::Ln1Scale, HookKind::Ln1Normalized, L);
    const Linear *proj[3] = {&lw.q, &lw.k, &lw.v};
    DeviceBuffer *proj_out[3] = {&q, &k, &v};
    for (int i = 0; i < 3; ++i) {
      if (!split[i].empty() && (edited(split_in[i]) || edited(ain)))
        linear_per_head(lw.ln1, *proj[i], split[i].f32(), split_heads[i], proj_out[i]->f32());
      else
        linear(*proj[i], h.f32(), proj_out[i]->f32());
    }
    fire(active(HookKind::AttnQ, L), q.f32());
    fire(active(HookKind::AttnK, L), k.f32());
    fire(active(HookKind::AttnV, L), v.f32());
    if (c.qk_norm) {
      norm_rows(lw.q_norm, q.f32(), q.f32(), M * H, D, head_scale.f32(), HookKind::AttnQNormScale, HookKind::AttnQNormNormalized, L);
      norm_rows(lw.k_norm, k.f32(), k.f32(), M * G, D, head_scale.f32(), HookKind::AttnKNormScale, HookKind::AttnKNormNormalized, L);
    }
    const bool local = c.sliding_window[static_cast<size_t>(L)] > 0;
    if (c.rotary) {
      const float *freq = local && !inv_freq_local_.empty() ? inv_freq_local_.f32() : inv_freq_.f32();
      rotary(q.f32(), H, freq);
      rotary(k.f32(), G, freq);
      fire(active(HookKind::AttnRotQ, L), q.f32());
      fire(active(HookKind::AttnRotK, L), k.f32());
    }
    // Keys and values: this forward's own, or the cache after appending them.
    const float *keys = k.f32(), *values = v.f32();
    int64_t S = T;
    if (cache) {
      float *ck = cache->k[static_cast<size_t>(L)].f32(), *cv = cache->v[static_cast<size_t>(L)].f32();
      const size_t row = static_cast<size_t>(T * dkv) * sizeof(float), pitch = static_cast<size_t>(cache->capacity * dkv) * sizeof(float);
      be.check(api.copy_2d(bx, ck + pos0 * dkv, pitch, k.f32(), row, row, static_cast<size_t>(B)), "kv append");
      be.check(api.copy_2d(bx, cv + pos0 * dkv, pitch, v.f32(), row, row, static_cast<size_t>(B)), "kv append");
      keys = ck;
      values = cv;
      S = cache->capacity;
    }
    nt_attention_shape as{B, T, H, G, D, S, KV, pos0, c.attn_scale, c.sliding_window[static_cast<size_t>(L)], pad};
    if (c.scale_attn_by_inverse_layer_idx) as.scale /= static_cast<float>(L + 1);
    const int scores_i = active(HookKind::AttnScores, L), pattern_i = active(HookKind::AttnPattern, L);
    if (scores_i >= 0 || pattern_i >= 0 || c.attn_softcap > 0.0f) {  // soft-capping needs the scores
      if (pattern.bytes() != static_cast<size_t>(B * H * T * KV) * sizeof(float)) pattern = buf(B * H * T * KV);
      be.check(api.attention_scores(bx, &as, q.f32(), keys, pattern.f32()), "attention_scores");
      if (c.attn_softcap > 0.0f) be.check(api.softcap(bx, pattern.f32(), B * H * T * KV, c.attn_softcap), "softcap");
      fire(scores_i, pattern.f32());
      be.check(api.softmax_rows(bx, pattern.f32(), B * H * T, KV), "softmax_rows");
      fire(pattern_i, pattern.f32());
      be.check(api.attention_apply(bx, &as, pattern.f32(), values, z.f32()), "attention_apply");
    } else {
      be.check(api.attention(bx, &as, q.f32(), keys, values, z.f32()), "attention");
    }
    fire(active(HookKind::AttnZ, L), z.f32());
    linear(lw.o, z.f32(), out.f32());
    const int result_i = active(HookKind::AttnResult, L);
    if (result_i >= 0) {  // each head through its columns of W_O: [B, T, H, d]
      // zh holds z with every head but one zeroed: zeroed once, then one head in and out.
      DeviceBuffer result = buf(M * H * d), zh = buf(M * dq), part = buf(M * d), zero_head = buf(M * D);
      const std::vector<float> zeros(static_cast<size_t>(M * dq), 0.0f);
      be.check(api.copy_to_device(bx, zh.data(), zeros.data(), zh.bytes()), "zero");
      be.check(api.copy_to_device(bx, zero_head.data(), zeros.data(), zero_head.bytes()), "zero");
      for (int64_t hh = 0; hh < H; ++hh) {
        copy_head(zh.f32() + hh * D, dq, z.f32() + hh * D, dq, D);
        be.check(api.gemm(bx, zh.f32(), M, dq, lw.o.w.data(), lw.o.dtype, d, nullptr, part.f32()), "gemm");
        copy_head(zh.f32() + hh * D, dq, zero_head.f32(), D, D);
        copy_head(result.f32() + hh * d, H * d, part.f32(), d, d);
      }
      fire(result_i, result.f32());
      if (edited(result_i)) {  // TransformerLens: attn_out = sum over heads of result + b_O
        copy_head(out.f32(), d, result.f32(), H * d, d);
        for (int64_t hh = 1; hh < H; ++hh) {
          copy_head(part.f32(), d, result.f32() + hh * d, H * d, d);
          be.check(api.add(bx, out.f32(), part.f32(), M * d, out.f32()), "add");
        }
        if (!lw.o.b.empty()) add_row_vector(out.f32(), M, d, lw.o.b.f32());
      }
    }
    float *attn_out = out.f32();
    if (c.sandwich_norms) {  // ln1_post: what is added to the residual is the normalized output
      norm_rows(lw.ln1_post, out.f32(), h.f32(), M, d, scale.f32(), HookKind::Ln1PostScale, HookKind::Ln1PostNormalized, L);
      attn_out = h.f32();
    }
    fire(active(HookKind::AttnOut, L), attn_out);
    if (!c.parallel_residual) {
      be.check(api.add(bx, x.f32(), attn_out, M * d, x.f32()), "add");
      fire(active(HookKind::ResidMid, L), x.f32());
    } else if (attn_out != out.f32()) {
      copy_head(out.f32(), d, attn_out, d, d);
    }

    // MLP (parallel residual: reading resid_pre, with attn_out kept in `out`). hook_mlp_in is a
    // copy of ln2's input, so an edit there reaches the MLP but not the residual stream.
    const int mlp_in_i = active(HookKind::MlpIn, L);
    if (mlp_in_i >= 0) {
      DeviceBuffer mlp_in = buf(M * d);
      copy_head(mlp_in.f32(), d, x.f32(), d, d);
      fire(mlp_in_i, mlp_in.f32());
      norm_rows(lw.ln2, mlp_in.f32(), h.f32(), M, d, scale.f32(), HookKind::Ln2Scale, HookKind::Ln2Normalized, L);
    } else {
      norm(lw.ln2, HookKind::Ln2Scale, HookKind::Ln2Normalized, L);
    }
    const int64_t n_mlp = M * c.d_mlp;
    const nt_activation act = static_cast<nt_activation>(c.act);
    if (c.gated_mlp) {
      linear(lw.gate, h.f32(), mlp_a.f32());
      fire(active(HookKind::MlpPre, L), mlp_a.f32());
      linear(lw.up, h.f32(), mlp_b.f32());
      fire(active(HookKind::MlpPreLinear, L), mlp_b.f32());
      be.check(api.gated_activation(bx, act, mlp_a.f32(), mlp_b.f32(), n_mlp, mlp_a.f32()), "gated_activation");
    } else {
      linear(lw.up, h.f32(), mlp_a.f32());
      fire(active(HookKind::MlpPre, L), mlp_a.f32());
      be.check(api.activation(bx, act, mlp_a.f32(), n_mlp), "activation");
    }
    fire(active(HookKind::MlpPost, L), mlp_a.f32());
    float *m_out = c.parallel_residual ? mlp_out.f32() : out.f32();
    linear(lw.down, mlp_a.f32(), m_out);
    if (c.sandwich_norms) {
      norm_rows(lw.ln2_post, m_out, h.f32(), M, d, scale.f32(), HookKind::Ln2PostScale, HookKind::Ln2PostNormalized, L);
      m_out = h.f32();
    }
    fire(active(HookKind::MlpOut, L), m_out);
    if (c.parallel_residual) {  // HF: (mlp_out + attn_out) + resid_pre
      be.check(api.add(bx, m_out, out.f32(), M * d, m_out), "add");
      be.check(api.add(bx, m_out, x.f32(), M * d, x.f32()), "add");
    } else {
      be.check(api.add(bx, x.f32(), m_out, M * d, x.f32()), "add");
    }
    fire(active(HookKind::ResidPost, L), x.f32());
  }
  if (cache) {
    cache->len += T;
    cache->steps += 1;
  }

  const int fs = active(HookKind::LnFinalScale, -1), fn = active(HookKind::LnFinalNormalized, -1);
  const int ui = active(HookKind::UnembedIn, -1), uo = active(HookKind::UnembedOut, -1);
  if (n_run == c.n_layers && (req.logits || fs >= 0 || fn >= 0 || ui >= 0 || uo >= 0)) {
    norm(ln_final_, HookKind::LnFinalScale, HookKind::LnFinalNormalized, -1);
    fire(ui, h.f32());
    const DeviceBuffer &head = lm_head_.empty() ? embed_ : lm_head_;
    const nt_dtype head_dtype = lm_head_.empty() ? dtype_ : lm_head_dtype_;
    if (uo >= 0) {  // every position's logits, hooked before the final soft-cap (TransformerLens)
      DeviceBuffer all = buf(M * c.d_vocab);
      be.check(api.gemm(bx, h.f32(), M, d, head.data(), head_dtype, c.d_vocab, nullptr, all.f32()), "gemm");
      fire(uo, all.f32());
      if (req.logits) {
        if (c.final_softcap > 0.0f) be.check(api.softcap(bx, all.f32(), M * c.d_vocab, c.final_softcap), "softcap");
        const size_t row = static_cast<size_t>(c.d_vocab) * sizeof(float);
        if (req.logits_last_only)
          for (int64_t b = 0; b < B; ++b)
            be.check(api.copy_to_host(bx, req.logits + b * c.d_vocab, all.f32() + (b * T + T - 1) * c.d_vocab, row), "logits to host");
        else
          be.check(api.copy_to_host(bx, req.logits, all.data(), all.bytes()), "logits to host");
      }
    } else if (req.logits) {
      const int64_t rows = req.logits_last_only ? B : M;
      const float *in = h.f32();
      DeviceBuffer last;
      if (req.logits_last_only) {  // only the last position of each row: [B, d]
        last = buf(B * d);
        const size_t row = static_cast<size_t>(d) * sizeof(float);
        be.check(api.copy_2d(bx, last.data(), row, h.f32() + (T - 1) * d, static_cast<size_t>(T) * row, row, static_cast<size_t>(B)), "gather");
        in = last.f32();
      }
      if (be.host_memory()) {
        be.check(api.gemm(bx, in, rows, d, head.data(), head_dtype, c.d_vocab, nullptr, req.logits), "gemm");
        if (c.final_softcap > 0.0f) be.check(api.softcap(bx, req.logits, rows * c.d_vocab, c.final_softcap), "softcap");
      } else {
        DeviceBuffer logits = buf(rows * c.d_vocab);
        be.check(api.gemm(bx, in, rows, d, head.data(), head_dtype, c.d_vocab, nullptr, logits.f32()), "gemm");
        if (c.final_softcap > 0.0f) be.check(api.softcap(bx, logits.f32(), rows * c.d_vocab, c.final_softcap), "softcap");
        be.check(api.copy_to_host(bx, req.logits, logits.data(), logits.bytes()), "logits to host");
      }
    }
  }
  be.check(api.synchronize(bx), "synchronize");
}

}  // namespace nt
