// The forward entry point: request validation (tokens, sizes, edits against their hooks, the
// KV cache) before any compute, then the loop over the units of engine/pass.h.
#include "engine/model.h"

#include <algorithm>
#include <map>

#include "engine/error.h"
#include "engine/pass.h"

namespace nt {

void check_finite_size(int64_t a, int64_t b, const char *what) {
  if (a > 0 && b > (int64_t(1) << 46) / a) fail(code::kInvalidInput, std::string(what) + " is too large");
}

DeviceBuffer &Model::scratch(size_t slot, int64_t floats) {
  DeviceBuffer &b = workspace_.at(slot);  // a fixed array: references stay valid across calls
  const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
  if (b.bytes() < bytes) {
    b.reset();
    b = DeviceBuffer(be_, bytes);
  }
  return b;
}

float *Model::sample_logits(int64_t floats) {
  if (sample_logits_.size() < static_cast<size_t>(floats)) sample_logits_.resize(static_cast<size_t>(floats));
  return sample_logits_.data();
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
  std::lock_guard<std::mutex> lock(run_mutex_);  // runs serialize; SAE attach/detach wait for them
  validate_request(req, plan);
  forward_locked(req, plan);
}

void Model::validate_request(const ForwardRequest &req, HookPlan *plan) const {
  const ModelConfig &c = config_;
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
  if (req.right_pad) {
    if (cache || req.pad) fail(code::kInvalidInput, "right padding is for a forward without a KV cache or left padding");
    for (int64_t b = 0; b < req.batch; ++b)
      if (req.right_pad[b] < 0 || req.right_pad[b] >= req.pos)
        fail(code::kInvalidInput, "right padding of row " + std::to_string(b) + " must leave at least one real token");
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
  if (req.sample) {
    if (!req.logits_last_only) fail(code::kInvalidInput, "sampling reads the last position's logits (logitsLastOnly)");
    if (stopping) fail(code::kInvalidInput, "sampling needs the logits, which are not computed when stopping at layer " + std::to_string(req.stop_at_layer));
    check_sample_request(req.sampling);
  }
  if (plan) {
    for (size_t i = 0; i < hooks_->points().size(); ++i) {
      const int idx = static_cast<int>(i);
      if (!plan->active(idx)) continue;  // nothing to check (and no shape to build) at an idle hook
      const HookPoint &hp = hooks_->points()[i];
      const bool past = stopping && (hp.layer >= req.stop_at_layer || hp.after_blocks);
      if (past)
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
}

void Model::forward_locked(const ForwardRequest &req, HookPlan *plan) {
  Pass pass(*this, req, plan, Pass::Mode::Run);
  pass.embed();
  const int n_run = req.stop_at_layer >= 0 ? std::min(req.stop_at_layer, config_.n_layers) : config_.n_layers;
  for (int L = 0; L < n_run; ++L) {
    if (req.control) req.control->check("the run");
    pass.layer(L, nullptr);
  }
  if (n_run == config_.n_layers) pass.head();
  pass.finish();
  if (req.sample) sample_rows(pass.logits(), req.batch, config_.d_vocab, req.sampling, sample_scratch_);
}

}  // namespace nt
