// Native activation edits (steering, ablation, patching) applied on the device.
// Reference: native/engine/edits.cc (apply_edit_units, edit_unit); semantics in backend-abi.h.
#include "common.cuh"
#include "ops.cuh"

namespace {

__device__ bool list_has(const int32_t *list, int64_t n, int64_t x) {
  if (!list || n <= 0) return true;  // no list: all
  for (int64_t i = 0; i < n; ++i)
    if (list[i] == x) return true;
  return false;
}

// Where x is in list (0 without a list), or -1.
__device__ int64_t list_index(const int32_t *list, int64_t n, int64_t x) {
  if (!list || n <= 0) return 0;
  for (int64_t i = 0; i < n; ++i)
    if (list[i] == x) return i;
  return -1;
}

__device__ bool positions_have(const int64_t *list, int64_t n, int64_t x) {
  if (!list || n <= 0) return true;
  for (int64_t i = 0; i < n; ++i)
    if (list[i] == x) return true;
  return false;
}

// x viewed as units of `width` floats: [B, T, heads, width] (head_major = 0) or
// [B, heads, T, width] (head_major = 1). One block per unit in memory order; every thread
// evaluates the same selection and the whole block leaves together when the unit is not
// selected. Then threads stride along the unit (coalesced), and projectOut / projectionCap
// take the dot product with a block reduction first.
__global__ void apply_edit_f32_kernel(nt_edit e, nt_edit_context c, float *x) {
  const int64_t unit = blockIdx.x;
  int64_t b, t, h;
  if (c.head_major) {
    t = unit % c.T;
    h = (unit / c.T) % c.heads;
    b = unit / (c.T * c.heads);
  } else {
    h = unit % c.heads;
    t = (unit / c.heads) % c.T;
    b = unit / (c.heads * c.T);
  }
  const int64_t real = c.pos0 + t - (c.pad ? c.pad[b] : 0);
  if (real < 0) return;  // left padding is never edited
  if (e.last_only && t != c.T - 1) return;
  if (e.generated_only && c.pos0 + t < c.prompt_len) return;
  if (e.prompt_only && c.pos0 + t >= c.prompt_len) return;
  const int64_t row_at = list_index(e.rows, e.n_rows, b);
  if (row_at < 0 || !list_has(e.heads, e.n_heads, h) || !positions_have(e.positions, e.n_positions, real)) return;

  const int64_t w = c.width;
  float *xu = x + unit * w;
  const float *vec = e.per_row ? e.vec + row_at * w : e.vec;  // add / set: this row's vector
  switch (e.op) {
    case NT_EDIT_ADD:
      for (int64_t i = threadIdx.x; i < w; i += blockDim.x) xu[i] += vec[i];
      break;
    case NT_EDIT_SET:
      for (int64_t i = threadIdx.x; i < w; i += blockDim.x) xu[i] = vec[i];
      break;
    case NT_EDIT_ZERO:
      for (int64_t i = threadIdx.x; i < w; i += blockDim.x) xu[i] = 0.0f;
      break;
    case NT_EDIT_SCALE:
      for (int64_t i = threadIdx.x; i < w; i += blockDim.x) xu[i] *= e.factor;
      break;
    case NT_EDIT_PROJECT_OUT:
    case NT_EDIT_PROJECTION_CAP: {
      float part = 0.0f;
      for (int64_t i = threadIdx.x; i < w; i += blockDim.x) part += xu[i] * e.vec[i];
      const float dot = block_reduce_sum(part);  // float; the CPU sums in double
      float target = 0.0f;
      if (e.op == NT_EDIT_PROJECTION_CAP) {
        // std::min(std::max(c, lo), hi) with the CPU's comparisons, NaN behaviour included.
        target = dot < e.lo ? e.lo : dot;
        target = e.hi < target ? e.hi : target;
      }
      const float delta = target - dot;
      if (delta != 0.0f)
        for (int64_t i = threadIdx.x; i < w; i += blockDim.x) xu[i] += delta * e.vec[i];
      break;
    }
    case NT_EDIT_PATCH: {
      const float *src = e.source + unit * w;  // same unit of the full-shape source
      for (int64_t i = threadIdx.x; i < w; i += blockDim.x) xu[i] = src[i];
      break;
    }
  }
}

}  // namespace

int nt_cuda_apply_edit(nt_backend *be, const nt_edit *e, const nt_edit_context *c, float *x) {
  if (!e || !c) return nt_fail(be, "apply_edit: no edit or context");
  if (e->op < NT_EDIT_ADD || e->op > NT_EDIT_PATCH) return nt_fail(be, "apply_edit: unknown edit op %d", static_cast<int>(e->op));
  if (c->B < 0 || c->T < 0 || c->heads < 0 || c->width < 0)
    return nt_fail(be, "apply_edit: bad shape B=%lld T=%lld heads=%lld width=%lld", (long long)c->B, (long long)c->T,
                   (long long)c->heads, (long long)c->width);
  const bool needs_vec = e->op == NT_EDIT_ADD || e->op == NT_EDIT_SET || e->op == NT_EDIT_PROJECT_OUT || e->op == NT_EDIT_PROJECTION_CAP;
  if (needs_vec && !e->vec) return nt_fail(be, "apply_edit: edit op %d needs a vector", static_cast<int>(e->op));
  if (e->op == NT_EDIT_PATCH && !e->source) return nt_fail(be, "apply_edit: patch needs a source");
  const int64_t units = c->B * c->T * c->heads;
  if (units == 0 || c->width == 0) return 0;
  if (units > INT32_MAX) return nt_fail(be, "apply_edit: %lld units exceed the grid", (long long)units);
  NT_CUDA_ENTER(be);
  // ~4 floats per thread up to 256 threads: a d_head unit (64-128) takes one warp, a residual
  // row of 4096 takes 256 threads looping 16 times.
  const int threads = nt_row_threads(c->width, 4, 256);
  apply_edit_f32_kernel<<<static_cast<unsigned>(units), threads, 0, be->stream>>>(*e, *c, x);
  NT_CUDA_CHECK_LAUNCH(be, "apply_edit_f32_kernel");
  return 0;
}
