// Edit semantics on one unit x (width floats): add x += v; set x = v; zero; scale x *= f;
// projectOut x -= (x·u)u; projectionCap x += (clamp(x·u, lo, hi) - x·u)u; patch x = source.
#include "engine/edits.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"

namespace nt {

UnitLayout unit_layout(HookKind kind, const std::vector<int64_t> &shape) {
  UnitLayout u;
  switch (kind) {
    case HookKind::AttnQ:
    case HookKind::AttnK:
    case HookKind::AttnV:
    case HookKind::AttnQNormScale:
    case HookKind::AttnQNormNormalized:
    case HookKind::AttnKNormScale:
    case HookKind::AttnKNormNormalized:
    case HookKind::AttnRotQ:
    case HookKind::AttnRotK:
    case HookKind::AttnZ:
    case HookKind::AttnResult:
    case HookKind::AttnIn:
    case HookKind::QInput:
    case HookKind::KInput:
    case HookKind::VInput:
      u.heads = shape[2];
      u.width = shape[3];
      break;
    case HookKind::AttnScores:
    case HookKind::AttnPattern:
      u.heads = shape[1];
      u.width = shape[3];
      u.head_major = true;
      break;
    case HookKind::SaeActsPre:
    case HookKind::SaeActsPost:  // each feature is a unit: `heads` selects features
      u.heads = shape[2];
      u.width = 1;
      break;
    case HookKind::SaeError:
    case HookKind::SaeOutput:  // one unit per token, flattened like the SAE's d_in (attn.hook_z: heads x d_head)
      u.width = 1;
      for (size_t i = 2; i < shape.size(); ++i) u.width *= shape[i];
      break;
    default:
      u.width = shape[2];
  }
  return u;
}

void validate_edit(const Edit &e, const HookPoint &hook, const std::vector<int64_t> &shape) {
  const UnitLayout u = unit_layout(hook.kind, shape);
  const std::string where = "edit at '" + hook.name + "': ";
  const bool needs_vec = e.op == EditOp::Add || e.op == EditOp::Set || e.op == EditOp::ProjectOut || e.op == EditOp::ProjectionCap;
  if (e.per_row) {
    if ((e.op != EditOp::Add && e.op != EditOp::Set) || e.rows.empty())
      fail(code::kInvalidInput, where + "vectors per row are for add and set edits that list their rows");
    for (size_t i = 0; i < e.rows.size(); ++i)
      if (std::find(e.rows.begin(), e.rows.begin() + static_cast<std::ptrdiff_t>(i), e.rows[i]) != e.rows.begin() + static_cast<std::ptrdiff_t>(i))
        fail(code::kInvalidInput, where + "batch row " + std::to_string(e.rows[i]) + " is listed twice");
    if (static_cast<int64_t>(e.vec.size()) != u.width * static_cast<int64_t>(e.rows.size()))
      fail(code::kInvalidInput, where + "vectors per row hold " + std::to_string(e.vec.size()) + " floats, not " + std::to_string(e.rows.size()) + " x " +
                                    std::to_string(u.width));
  } else if (needs_vec && static_cast<int64_t>(e.vec.size()) != u.width) {
    fail(code::kInvalidInput, where + "vector has " + std::to_string(e.vec.size()) + " floats but the hook's units have width " +
                                  std::to_string(u.width));
  }
  if (e.op == EditOp::Patch) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (!e.source || e.source_numel != n)
      fail(code::kInvalidInput, where + "patch source has " + std::to_string(e.source_numel) + " floats, the activation has " + std::to_string(n));
  }
  if (e.lo > e.hi) fail(code::kInvalidInput, where + "projectionCap needs min <= max");
  for (int32_t r : e.rows)
    if (r < 0 || r >= shape[0]) fail(code::kInvalidInput, where + "batch row " + std::to_string(r) + " is outside [0, " + std::to_string(shape[0]) + ")");
  if (!e.heads.empty() && u.heads == 1 && !(hook.kind == HookKind::AttnScores || hook.kind == HookKind::AttnPattern))
    fail(code::kInvalidInput, where + "head selection needs a per-head hook (attn.hook_q/k/v/z/rot_q/rot_k/result/attn_scores/pattern, hook_q/k/v_input, hook_attn_in, or features at hook_sae_acts_pre/post)");
  const bool features = hook.kind == HookKind::SaeActsPre || hook.kind == HookKind::SaeActsPost;
  for (int32_t h : e.heads)
    if (h < 0 || h >= u.heads)
      fail(features ? code::kFeatureOutOfRange : code::kInvalidInput,
           where + (features ? "feature " : "head ") + std::to_string(h) + " is outside [0, " + std::to_string(u.heads) + ")");
}

namespace {

bool contains(const std::vector<int32_t> &v, int64_t x) { return v.empty() || std::find(v.begin(), v.end(), x) != v.end(); }

// `vec`: the edit's vector for this unit's row.
void edit_unit(const Edit &e, const float *vec, float *x, const float *src, int64_t w) {
  switch (e.op) {
    case EditOp::Add:
      for (int64_t i = 0; i < w; ++i) x[i] += vec[i];
      break;
    case EditOp::Set:
      std::memcpy(x, vec, static_cast<size_t>(w) * sizeof(float));
      break;
    case EditOp::Zero:
      std::fill(x, x + w, 0.0f);
      break;
    case EditOp::Scale:
      for (int64_t i = 0; i < w; ++i) x[i] *= e.factor;
      break;
    case EditOp::ProjectOut:
    case EditOp::ProjectionCap: {
      double c = 0;
      for (int64_t i = 0; i < w; ++i) c += static_cast<double>(x[i]) * e.vec[static_cast<size_t>(i)];
      double target = e.op == EditOp::ProjectOut ? 0.0 : std::min<double>(std::max<double>(c, e.lo), e.hi);
      const float delta = static_cast<float>(target - c);
      if (delta != 0.0f)
        for (int64_t i = 0; i < w; ++i) x[i] += delta * e.vec[static_cast<size_t>(i)];
      break;
    }
    case EditOp::Patch:
      std::memcpy(x, src, static_cast<size_t>(w) * sizeof(float));
      break;
  }
}

}  // namespace

void apply_edit(const Edit &e, HookKind kind, float *data, const std::vector<int64_t> &shape, const HookContext &ctx) {
  const UnitLayout u = unit_layout(kind, shape);
  apply_edit_units(e, shape[0], u.head_major ? shape[2] : shape[1], u, data, ctx);
}

void apply_edit_units(const Edit &e, int64_t B, int64_t T, const UnitLayout &u, float *data, const HookContext &ctx) {
  for (int64_t b = 0; b < B; ++b) {
    if (!contains(e.rows, b)) continue;
    const float *vec = e.vec.data();
    if (e.per_row) vec += (std::find(e.rows.begin(), e.rows.end(), b) - e.rows.begin()) * u.width;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t real = ctx.real_pos(b, t);
      if (real < 0) continue;  // left padding is never edited
      if (e.last_only && t != T - 1) continue;
      if (e.generated_only && ctx.pos0 + t < ctx.prompt_len) continue;
      if (e.prompt_only && ctx.pos0 + t >= ctx.prompt_len) continue;
      if (!e.positions.empty() && std::find(e.positions.begin(), e.positions.end(), real) == e.positions.end()) continue;
      for (int64_t h = 0; h < u.heads; ++h) {
        if (!contains(e.heads, h)) continue;
        const int64_t unit = u.head_major ? (b * u.heads + h) * T + t : (b * T + t) * u.heads + h;
        edit_unit(e, vec, data + unit * u.width, e.source ? e.source + unit * u.width : nullptr, u.width);
      }
    }
  }
}

std::vector<const Edit *> HookPlan::edits(int index) const {
  std::vector<const Edit *> out;
  for (const Action &a : slots_[static_cast<size_t>(index)].actions)
    if (a.edit) out.push_back(a.edit.get());
  return out;
}

void HookPlan::fire(const HookTable &table, int index, float *data, const std::vector<int64_t> &shape, const HookContext &ctx) {
  Slot &s = slots_[static_cast<size_t>(index)];
  const HookKind kind = table.points()[static_cast<size_t>(index)].kind;
  for (const Action &a : s.actions) {
    if (a.edit) apply_edit(*a.edit, kind, data, shape, ctx);
    else a.callback->call(index, data, shape, ctx);
  }
  if (s.capture) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (n != s.capture_numel) fail(code::kBufferSize, "capture buffer for '" + table.points()[static_cast<size_t>(index)].name + "' has the wrong size");
    std::copy(data, data + n, s.capture);
  }
}

}  // namespace nt
