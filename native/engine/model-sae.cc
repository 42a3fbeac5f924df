// Attaching and detaching SAEs: each swaps in a copy of the hook table with the SAEs' hooks
// (copy-on-write, so a run planned against the old table is refused). Tests: test/sae.test.ts.
#include <algorithm>

#include "engine/error.h"
#include "engine/model.h"

namespace nt {

AttachedSae *Model::sae_at(int index) const {
  for (const auto &s : saes_)
    if (s->base() == index) return s.get();
  return nullptr;
}

void Model::attach_sae(int base, SaeParams params, bool use_error_term) {
  if (base < 0 || base >= hooks()->base_count()) fail(code::kUnknownHook, "SAEs attach to the model's own hooks");
  const HookPoint hp = hooks()->points()[static_cast<size_t>(base)];  // base hooks never change
  if (!be_->host_memory()) fail(code::kInvalidInput, "SAEs run on the CPU backend only for now; load the model with device: 'cpu'");
  const bool per_token = hp.shape.size() >= 3 && hp.shape[0] == kDimBatch && hp.shape[1] == kDimPos;
  const bool scale_hook = hp.kind == HookKind::Ln1Scale || hp.kind == HookKind::Ln2Scale || hp.kind == HookKind::LnFinalScale ||
                          hp.kind == HookKind::Ln1PostScale || hp.kind == HookKind::Ln2PostScale ||
                          hp.kind == HookKind::AttnQNormScale || hp.kind == HookKind::AttnKNormScale;
  if (!per_token || scale_hook)
    fail(code::kInvalidInput, "an SAE needs a [batch, pos, d] or [batch, pos, head, d_head] hook, not '" + hp.name + "'");
  int64_t width = 1;
  for (size_t i = 2; i < hp.shape.size(); ++i) width *= hp.shape[i];
  if (params.d_in != width)
    fail(code::kSaeMismatch, "the SAE's d_in is " + std::to_string(params.d_in) + " but '" + hp.name + "' has width " + std::to_string(width));
  auto sae = std::make_unique<AttachedSae>(be_, base, std::move(params), use_error_term);
  std::lock_guard<std::mutex> lock(run_mutex_);
  if (sae_at(base)) fail(code::kInvalidInput, "an SAE is already attached at '" + hp.name + "'; detach it first");
  saes_.push_back(std::move(sae));
  rebuild_sae_hooks();
}

void Model::rebuild_sae_hooks() {
  auto table = std::make_shared<HookTable>(*hooks_);
  std::vector<std::pair<int, int64_t>> spec;
  for (const auto &s : saes_) spec.emplace_back(s->base(), s->d_sae());
  const std::vector<int> first = table->set_saes(spec);
  for (size_t i = 0; i < saes_.size(); ++i) saes_[i]->set_first(first[i]);
  table->version = hooks_->version + 1;
  std::atomic_store(&hooks_, std::shared_ptr<const HookTable>(std::move(table)));
}

void Model::detach_sae(int base) {
  std::lock_guard<std::mutex> lock(run_mutex_);
  auto it = std::find_if(saes_.begin(), saes_.end(), [&](const auto &s) { return s->base() == base; });
  if (it == saes_.end()) fail(code::kInvalidInput, "no SAE is attached at that hook");
  saes_.erase(it);
  rebuild_sae_hooks();
}

}  // namespace nt
