// The backward pass's state (engine/backward.cc: the loop, the head and the metric;
// engine/backward-layer.cc: one block's backward, beside Pass::layer's forward in pass.cc).
// Private to the engine: Model::backward is the entry point.
#pragma once

#include <map>
#include <vector>

#include "engine/backward.h"
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
  int64_t tape_floats() const;  // one block's tape
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
  float *saved_ = nullptr;  // [n_run + 1, M, d]: the residual stream before each block's first hook
  float *saved_at(int L) const { return saved_ + static_cast<int64_t>(L) * M * d; }
  std::map<const Edit *, DeviceEdit> uploaded_;
  std::vector<char> fired_;            // gradient captures written
  // Gradient buffers, reused across blocks.
  float *da_, *dm_, *dt1_, *dt2_, *dmlp1_, *dmlp2_, *dmlp3_, *dz_, *dq_, *dk_, *dv_, *dp_, *dn_, *dscale_;
};

}  // namespace nt
