// Native activation edits (steering, ablation, patching) and the per-run hook plan that
// applies edits, JS callbacks and captures at each hook. Reference semantics:
// test/fixtures/generate_interventions.py; tests: test/interventions.test.ts.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "engine/hooks.h"

namespace nt {

// Where the current forward sits in its sequences: row b's query t is at padded index
// pos0 + t and at real position pos0 + t - pad[b] (left padding, generation).
struct HookContext {
  int64_t batch = 0;
  int64_t pos = 0;        // query positions in this forward
  int64_t pos0 = 0;       // positions already in the KV cache
  int64_t kv_len = 0;     // pos0 + pos
  const int32_t *pad = nullptr;  // [batch] left padding, or null
  int64_t prompt_len = 0;        // padded prompt length; index >= prompt_len is generated
  int step = 0;                  // 0 for the prompt forward, then one per generated token

  int64_t real_pos(int64_t b, int64_t t) const { return pos0 + t - (pad ? pad[b] : 0); }
};

enum class EditOp : uint8_t { Add, Set, Zero, Scale, ProjectOut, ProjectionCap, Patch };

// One edit at one hook. An activation is a grid of "units" of `width` floats: (b, t) for
// [b, p, w] hooks, (b, t, h) for per-head [b, p, h, d_head] hooks, (b, h, t) query rows of
// [b, h, p, k] pattern/score hooks. Selections are empty for "all".
struct Edit {
  EditOp op = EditOp::Add;
  std::vector<float> vec;  // Add: vector * scale; Set: value; ProjectOut/Cap: unit direction
  float factor = 1.0f;     // Scale
  float lo = -std::numeric_limits<float>::infinity();  // ProjectionCap bounds
  float hi = std::numeric_limits<float>::infinity();
  const float *source = nullptr;  // Patch: an activation of this hook's full shape in this run
  int64_t source_numel = 0;
  std::vector<int64_t> positions;  // real positions (see HookContext)
  bool last_only = false;          // only the last query position of each forward
  bool generated_only = false;     // only positions past the prompt
  bool prompt_only = false;        // only prompt positions
  std::vector<int32_t> rows;
  std::vector<int32_t> heads;
  bool per_row = false;  // Add / Set: vec holds one vector per entry of `rows`, in that order (distinct rows)
};

// A JS (or other host) function run synchronously at a hook; may edit `data` in place.
class HookCallback {
 public:
  virtual ~HookCallback() = default;
  virtual void call(int hook_index, float *data, const std::vector<int64_t> &shape, const HookContext &ctx) = 0;
};

// Unit layout of a hook: which axes are (batch, pos, head) and the unit width.
struct UnitLayout {
  int64_t heads = 1;       // 1 for hooks without a head axis
  int64_t width = 0;
  bool head_major = false; // [b, h, t, w] (scores, pattern) instead of [b, t, h, w]
};
UnitLayout unit_layout(HookKind kind, const std::vector<int64_t> &shape);

// Checks an edit against the hook it targets (widths, head and row indices); throws
// EngineError(ERR_INVALID_INPUT) with the hook's name.
void validate_edit(const Edit &e, const HookPoint &hook, const std::vector<int64_t> &shape);
void apply_edit(const Edit &e, HookKind kind, float *data, const std::vector<int64_t> &shape, const HookContext &ctx);
// The same over an explicit unit grid: B rows of T positions of u.heads units of u.width.
void apply_edit_units(const Edit &e, int64_t B, int64_t T, const UnitLayout &u, float *data, const HookContext &ctx);

// Everything one run does at its hooks, in order per hook: edits and callbacks as given,
// then the capture (which therefore sees the edited activation).
class HookPlan {
 public:
  struct Action {
    std::shared_ptr<Edit> edit;              // or
    std::shared_ptr<HookCallback> callback;
  };

  explicit HookPlan(size_t n_hooks) : slots_(n_hooks) {}

  void add_edit(int index, Edit e) { slots_[static_cast<size_t>(index)].actions.push_back({std::make_shared<Edit>(std::move(e)), nullptr}); }
  void add_callback(int index, std::shared_ptr<HookCallback> cb) { slots_[static_cast<size_t>(index)].actions.push_back({nullptr, std::move(cb)}); }
  void set_capture(int index, float *dest, int64_t numel) {
    slots_[static_cast<size_t>(index)].capture = dest;
    slots_[static_cast<size_t>(index)].capture_numel = numel;
  }

  bool active(int index) const {
    const Slot &s = slots_[static_cast<size_t>(index)];
    return s.capture != nullptr || !s.actions.empty();
  }
  bool has_capture(int index) const { return slots_[static_cast<size_t>(index)].capture != nullptr; }
  int64_t capture_numel(int index) const { return slots_[static_cast<size_t>(index)].capture_numel; }
  float *capture(int index) const { return slots_[static_cast<size_t>(index)].capture; }
  // Edits and callbacks registered at `index`, in order.
  const std::vector<Action> &actions(int index) const { return slots_[static_cast<size_t>(index)].actions; }
  std::vector<const Edit *> edits(int index) const;

  // Runs the actions and capture of `index` on host memory `data`.
  void fire(const HookTable &table, int index, float *data, const std::vector<int64_t> &shape, const HookContext &ctx);

 private:
  struct Slot {
    std::vector<Action> actions;
    float *capture = nullptr;
    int64_t capture_numel = 0;
  };
  std::vector<Slot> slots_;
};

}  // namespace nt
