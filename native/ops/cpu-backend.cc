// The CPU backend behind the backend ABI (backend-abi.h): the ops of ops.h over host memory,
// on a thread pool. It is the reference the CUDA backend is compared with
// (test/native/test-backend-ops.cc).
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "engine/edits.h"
#include "ops/backend-abi.h"
#include "ops/bf16.h"
#include "ops/cpu-features.h"
#include "ops/gemm-bf16.h"
#include "ops/ops.h"

struct nt_backend {
  explicit nt_backend(int threads) : pool(threads) {}
  nt::ThreadPool pool;
  std::string error;
};

namespace {

using nt::ThreadPool;

int fail_op(nt_backend *be, const char *why) {
  be->error = why;
  return 1;
}

nt_backend *cpu_create(int32_t, int32_t threads, char *err, size_t err_len) {
  try {
    return new nt_backend(threads > 0 ? threads : 1);
  } catch (const std::exception &e) {
    if (err && err_len) std::snprintf(err, err_len, "cannot start the CPU backend: %s", e.what());
    return nullptr;
  }
}

void cpu_destroy(nt_backend *be) { delete be; }
const char *cpu_device_name(nt_backend *) { return "cpu"; }
const char *cpu_last_error(nt_backend *be) { return be->error.c_str(); }
int cpu_synchronize(nt_backend *) { return 0; }

void *cpu_alloc(nt_backend *, size_t bytes) {
  // 64-byte alignment for the vector kernels; size rounded up as aligned_alloc requires.
  return std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
}
void cpu_free(nt_backend *, void *p) { std::free(p); }
int cpu_copy(nt_backend *, void *dst, const void *src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return 0;
}
int cpu_copy_2d(nt_backend *, void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t row_bytes, size_t rows) {
  for (size_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<char *>(dst) + r * dst_pitch, static_cast<const char *>(src) + r * src_pitch, row_bytes);
  return 0;
}

// The CPU keeps weights in f32, or in bf16 (the top half of an f32: widening is exact).
using nt::f32_from_bf16;

// Element i of row r of a [rows, d] table of `dtype` (F32 or BF16).
inline float table_at(const void *table, nt_dtype dtype, int64_t r, int64_t d, int64_t i) {
  return dtype == NT_BF16 ? f32_from_bf16(static_cast<const uint16_t *>(table)[r * d + i]) : static_cast<const float *>(table)[r * d + i];
}

int cpu_embed(nt_backend *be, const void *table, nt_dtype dtype, const int32_t *tokens, int64_t M, int64_t d, float *out) {
  if (dtype != NT_F32 && dtype != NT_BF16) return fail_op(be, "the CPU backend keeps weights in F32 or BF16");
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < d; ++j) out[i * d + j] = table_at(table, dtype, tokens[i], d, j);
  return 0;
}

int cpu_add_positions(nt_backend *be, const void *table, nt_dtype dtype, int64_t B, int64_t T, int64_t d, int64_t pos0, const int32_t *pad, float *x) {
  if (dtype != NT_F32 && dtype != NT_BF16) return fail_op(be, "the CPU backend keeps weights in F32 or BF16");
  be->pool.parallel_for(B * T, [&](int64_t i) {
    const int64_t p = std::max<int64_t>(0, pos0 + i % T - (pad ? pad[i / T] : 0));
    for (int64_t j = 0; j < d; ++j) x[i * d + j] += table_at(table, dtype, p, d, j);
  });
  return 0;
}

// Weights packed by cpu_pack_weight (panels of 32 columns, k-major) carry these dtypes.
constexpr nt_dtype kCpuPackedF32 = static_cast<nt_dtype>(NT_PACKED_BASE + 0);
constexpr nt_dtype kCpuPackedBf16 = static_cast<nt_dtype>(NT_PACKED_BASE + 1);
// compute 'bf16' (cpu_pack_weight_compute; gemm-bf16.h): the bf16 panels with A rounded, the
// vdpbf16ps k-pair panels, the AMX tiles, and plain [N, K] bf16 with A rounded (no AVX2).
constexpr nt_dtype kCpuBf16RoundPanels = static_cast<nt_dtype>(NT_PACKED_BASE + 2);
constexpr nt_dtype kCpuBf16Pairs = static_cast<nt_dtype>(NT_PACKED_BASE + 3);
constexpr nt_dtype kCpuBf16Amx = static_cast<nt_dtype>(NT_PACKED_BASE + 4);
constexpr nt_dtype kCpuBf16RoundPlain = static_cast<nt_dtype>(NT_PACKED_BASE + 5);

// Plain bf16 W widened per call (only without AVX2, where nothing is packed); A rounded to bf16
// first for compute 'bf16'.
void gemm_bf16_plain(nt_backend *be, const float *A, int64_t M, int64_t K, const uint16_t *W, int64_t N, const float *bias, float *C,
                     bool round_a) {
  thread_local std::vector<float> w, a;
  w.resize(static_cast<size_t>(N * K));
  for (int64_t i = 0; i < N * K; ++i) w[static_cast<size_t>(i)] = nt::f32_from_bf16(W[i]);
  if (round_a) {
    a.resize(static_cast<size_t>(M * K));
    for (int64_t i = 0; i < M * K; ++i) a[static_cast<size_t>(i)] = nt::bf16_round(A[i]);
    A = a.data();
  }
  nt::gemm_f32(be->pool, A, M, K, w.data(), N, bias, C);
}

int cpu_gemm(nt_backend *be, const float *A, int64_t M, int64_t K, const void *W, nt_dtype w_dtype, int64_t N, const float *bias, float *C) {
  switch (static_cast<int>(w_dtype)) {  // int: the packed dtypes are not enumerators
    case kCpuPackedF32: nt::gemm_f32_packed(be->pool, A, M, K, static_cast<const float *>(W), N, bias, C); return 0;
    case kCpuPackedBf16: nt::gemm_bf16_packed(be->pool, A, M, K, static_cast<const uint16_t *>(W), N, bias, C); return 0;
    case NT_F32: nt::gemm_f32(be->pool, A, M, K, static_cast<const float *>(W), N, bias, C); return 0;
    case NT_BF16: gemm_bf16_plain(be, A, M, K, static_cast<const uint16_t *>(W), N, bias, C, false); return 0;
    case kCpuBf16RoundPanels: nt::gemm_bf16_packed_round(be->pool, A, M, K, static_cast<const uint16_t *>(W), N, bias, C); return 0;
    case kCpuBf16Pairs: nt::gemm_bf16_pairs(be->pool, A, M, K, static_cast<const uint16_t *>(W), N, bias, C); return 0;
    case kCpuBf16Amx: nt::gemm_bf16_amx(be->pool, A, M, K, static_cast<const uint16_t *>(W), N, bias, C); return 0;
    case kCpuBf16RoundPlain: gemm_bf16_plain(be, A, M, K, static_cast<const uint16_t *>(W), N, bias, C, true); return 0;
    default: return fail_op(be, "the CPU backend keeps weights in F32 or BF16");
  }
}

void *cpu_pack_weight(nt_backend *, const void *W, nt_dtype dtype, int64_t N, int64_t K, nt_dtype *packed_dtype) {
  if ((dtype != NT_F32 && dtype != NT_BF16) || !nt::gemm_packing_available()) return nullptr;
  const size_t elems = nt::gemm_packed_floats(N, K);
  void *p = cpu_alloc(nullptr, elems * (dtype == NT_F32 ? sizeof(float) : sizeof(uint16_t)));
  if (!p) return nullptr;
  if (dtype == NT_F32) {
    nt::gemm_pack_weights(static_cast<const float *>(W), N, K, static_cast<float *>(p));
    *packed_dtype = kCpuPackedF32;
  } else {
    nt::gemm_pack_weights_bf16(static_cast<const uint16_t *>(W), N, K, static_cast<uint16_t *>(p));
    *packed_dtype = kCpuPackedBf16;
  }
  return p;
}

// compute 'bf16' needs bf16 weights; the layout follows the kernel cpu_bf16_isa() picks, which
// stays fixed for the process, so the gemm dispatches on the dtype alone.
void *cpu_pack_weight_compute(nt_backend *be, const void *W, nt_dtype dtype, int64_t N, int64_t K, nt_compute compute,
                              nt_dtype *packed_dtype) {
  if (compute == NT_COMPUTE_F32) {
    if (void *p = cpu_pack_weight(be, W, dtype, N, K, packed_dtype)) return p;
    be->error = "the CPU backend did not pack this weight";
    return nullptr;
  }
  if (compute != NT_COMPUTE_BF16) {
    be->error = "unknown compute mode";
    return nullptr;
  }
  if (dtype != NT_BF16) {
    be->error = "compute 'bf16' needs bf16 weights";
    return nullptr;
  }
  const uint16_t *w = static_cast<const uint16_t *>(W);
  const nt::Bf16Isa isa = nt::cpu_bf16_isa();
  const size_t elems = isa == nt::Bf16Isa::Amx          ? nt::gemm_bf16_amx_elems(N, K)
                       : isa == nt::Bf16Isa::Avx512Bf16 ? nt::gemm_bf16_pairs_elems(N, K)
                       : nt::gemm_packing_available()   ? nt::gemm_packed_floats(N, K)
                                                        : static_cast<size_t>(N * K);
  uint16_t *p = static_cast<uint16_t *>(cpu_alloc(be, elems * sizeof(uint16_t)));
  if (!p) {
    be->error = "out of memory packing a weight matrix";
    return nullptr;
  }
  if (isa == nt::Bf16Isa::Amx) {
    nt::gemm_pack_weights_bf16_amx(w, N, K, p);
    *packed_dtype = kCpuBf16Amx;
  } else if (isa == nt::Bf16Isa::Avx512Bf16) {
    nt::gemm_pack_weights_bf16_pairs(w, N, K, p);
    *packed_dtype = kCpuBf16Pairs;
  } else if (nt::gemm_packing_available()) {
    nt::gemm_pack_weights_bf16(w, N, K, p);
    *packed_dtype = kCpuBf16RoundPanels;
  } else {
    std::memcpy(p, w, elems * sizeof(uint16_t));
    *packed_dtype = kCpuBf16RoundPlain;
  }
  return p;
}

int cpu_layer_norm(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, const float *b, float eps, float *out, float *scale_out) {
  nt::layer_norm_f32(be->pool, x, M, d, w, b, eps, out, scale_out);
  return 0;
}
int cpu_rms_norm(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float eps, float *out, float *scale_out) {
  nt::rms_norm_f32(be->pool, x, M, d, w, eps, out, scale_out);
  return 0;
}
int cpu_mul_rows(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float *out) {
  nt::mul_rows_f32(be->pool, x, M, d, w, out);
  return 0;
}
int cpu_add(nt_backend *be, const float *a, const float *b, int64_t n, float *out) {
  nt::add_f32(be->pool, a, b, n, out);
  return 0;
}
int cpu_activation(nt_backend *be, nt_activation act, float *x, int64_t n) {
  switch (act) {
    case NT_ACT_GELU_TANH: nt::gelu_tanh_f32(be->pool, x, n); return 0;
    case NT_ACT_GELU_ERF: nt::gelu_erf_f32(be->pool, x, n); return 0;
    case NT_ACT_SILU: nt::silu_f32(be->pool, x, n); return 0;
    case NT_ACT_RELU: nt::relu_f32(be->pool, x, n); return 0;
  }
  return fail_op(be, "unknown activation");
}
int cpu_gated_activation(nt_backend *be, nt_activation act, const float *gate, const float *up, int64_t n, float *out) {
  // nt::Activation and nt_activation share their numbering (static_asserts in engine/backend.cc).
  nt::gated_act_f32(be->pool, static_cast<int>(act), gate, up, n, out);
  return 0;
}
int cpu_rope(nt_backend *be, float *x, int64_t B, int64_t T, int64_t heads, int64_t D, const float *inv_freq, int64_t pos0, const int32_t *pad) {
  nt::rope_f32(be->pool, x, B, T, heads, D, inv_freq, pos0, pad);
  return 0;
}

int cpu_softcap(nt_backend *be, float *x, int64_t n, float cap) {
  if (!(cap > 0.0f)) return fail_op(be, "softcap: cap must be positive");
  nt::softcap_f32(be->pool, x, n, cap);
  return 0;
}

nt::AttentionShape shape_of(const nt_attention_shape *s) {
  return nt::AttentionShape{s->B, s->T, s->H, s->G, s->D, s->S, s->KV, s->q0, s->scale, s->window, s->pad, s->compute == NT_COMPUTE_BF16};
}
int cpu_attention(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *v, float *z) {
  nt::attention_f32(be->pool, shape_of(s), q, k, v, z);
  return 0;
}
int cpu_attention_scores(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, float *scores) {
  nt::attention_scores_f32(be->pool, shape_of(s), q, k, scores);
  return 0;
}
int cpu_softmax_rows(nt_backend *be, float *x, int64_t rows, int64_t n) {
  nt::softmax_rows_f32(be->pool, x, rows, n);
  return 0;
}
int cpu_attention_apply(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, float *z) {
  nt::attention_apply_f32(be->pool, shape_of(s), pattern, v, z);
  return 0;
}

int cpu_apply_edit(nt_backend *be, const nt_edit *e, const nt_edit_context *c, float *x) {
  try {
    nt::Edit edit;
    edit.op = static_cast<nt::EditOp>(e->op);
    const bool has_vec = e->op == NT_EDIT_ADD || e->op == NT_EDIT_SET || e->op == NT_EDIT_PROJECT_OUT || e->op == NT_EDIT_PROJECTION_CAP;
    edit.per_row = e->per_row != 0;
    if (has_vec) edit.vec.assign(e->vec, e->vec + c->width * (edit.per_row ? e->n_rows : 1));
    edit.factor = e->factor;
    edit.lo = e->lo;
    edit.hi = e->hi;
    edit.source = e->source;
    if (e->positions) edit.positions.assign(e->positions, e->positions + e->n_positions);
    if (e->rows) edit.rows.assign(e->rows, e->rows + e->n_rows);
    if (e->heads) edit.heads.assign(e->heads, e->heads + e->n_heads);
    edit.last_only = e->last_only != 0;
    edit.generated_only = e->generated_only != 0;
    edit.prompt_only = e->prompt_only != 0;
    nt::HookContext ctx;
    ctx.batch = c->B;
    ctx.pos = c->T;
    ctx.pos0 = c->pos0;
    ctx.pad = c->pad;
    ctx.prompt_len = c->prompt_len;
    nt::UnitLayout u;
    u.heads = c->heads;
    u.width = c->width;
    u.head_major = c->head_major != 0;
    nt::apply_edit_units(edit, c->B, c->T, u, x, ctx);
    return 0;
  } catch (const std::exception &err) {
    be->error = err.what();
    return 1;
  }
}

// Backward ops (ABI 3).
int cpu_gemm_backward(nt_backend *be, const float *dC, int64_t M, int64_t N, const void *W, nt_dtype w_dtype, int64_t K, float *dA) {
  switch (static_cast<int>(w_dtype)) {  // int: the packed dtypes are not enumerators
    case kCpuPackedF32: nt::gemm_backward_f32_packed(be->pool, dC, M, N, static_cast<const float *>(W), K, dA); return 0;
    case kCpuPackedBf16: nt::gemm_backward_bf16_packed(be->pool, dC, M, N, static_cast<const uint16_t *>(W), K, dA); return 0;
    case NT_F32: nt::gemm_backward_f32(be->pool, dC, M, N, static_cast<const float *>(W), K, dA); return 0;
    // compute 'bf16' layouts: f32 arithmetic over the bf16 weights (dC is not rounded).
    case kCpuBf16RoundPanels: nt::gemm_backward_bf16_packed(be->pool, dC, M, N, static_cast<const uint16_t *>(W), K, dA); return 0;
    case kCpuBf16Pairs: nt::gemm_backward_bf16_pairs(be->pool, dC, M, N, static_cast<const uint16_t *>(W), K, dA); return 0;
    case kCpuBf16Amx: nt::gemm_backward_bf16_amx(be->pool, dC, M, N, static_cast<const uint16_t *>(W), K, dA); return 0;
    case NT_BF16:
    case kCpuBf16RoundPlain: {
      // As in cpu_gemm: unpacked bf16 only without AVX2; widen per call.
      thread_local std::vector<float> w;
      w.resize(static_cast<size_t>(N * K));
      for (int64_t i = 0; i < N * K; ++i) w[static_cast<size_t>(i)] = f32_from_bf16(static_cast<const uint16_t *>(W)[i]);
      nt::gemm_backward_f32(be->pool, dC, M, N, w.data(), K, dA);
      return 0;
    }
    default: return fail_op(be, "the CPU backend keeps weights in F32 or BF16");
  }
}
int cpu_norm_scale_backward(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, const float *scale, const float *dn,
                            float *dscale) {
  nt::norm_scale_backward_f32(be->pool, x, M, d, layer_norm != 0, scale, dn, dscale);
  return 0;
}
int cpu_norm_backward(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, float eps, const float *scale, const float *dn,
                      const float *dscale, float *dx) {
  nt::norm_backward_f32(be->pool, x, M, d, layer_norm != 0, eps, scale, dn, dscale, dx);
  return 0;
}
bool known_activation(nt_activation act) {
  return act == NT_ACT_GELU_TANH || act == NT_ACT_GELU_ERF || act == NT_ACT_SILU || act == NT_ACT_RELU;
}
int cpu_activation_backward(nt_backend *be, nt_activation act, const float *x, const float *dy, int64_t n, float *dx) {
  if (!known_activation(act)) return fail_op(be, "unknown activation");
  nt::activation_backward_f32(be->pool, static_cast<int>(act), x, dy, n, dx);
  return 0;
}
int cpu_gated_activation_backward(nt_backend *be, nt_activation act, const float *gate, const float *up, const float *dout, int64_t n,
                                  float *dgate, float *dup) {
  if (!known_activation(act)) return fail_op(be, "unknown activation");
  nt::gated_act_backward_f32(be->pool, static_cast<int>(act), gate, up, dout, n, dgate, dup);
  return 0;
}
int cpu_softcap_backward(nt_backend *be, const float *y, const float *dy, int64_t n, float cap, float *dx) {
  if (!(cap > 0.0f)) return fail_op(be, "softcap: cap must be positive");
  nt::softcap_backward_f32(be->pool, y, dy, n, cap, dx);
  return 0;
}
int cpu_softmax_rows_backward(nt_backend *be, const float *p, const float *dp, int64_t rows, int64_t n, float *dx) {
  nt::softmax_rows_backward_f32(be->pool, p, dp, rows, n, dx);
  return 0;
}
int cpu_attention_apply_backward(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, const float *dz,
                                 float *dpattern, float *dv) {
  nt::attention_apply_backward_f32(be->pool, shape_of(s), pattern, v, dz, dpattern, dv);
  return 0;
}
int cpu_attention_scores_backward(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *dscores, float *dq,
                                  float *dk) {
  nt::attention_scores_backward_f32(be->pool, shape_of(s), q, k, dscores, dq, dk);
  return 0;
}

const nt_backend_api kCpuApi = {
    NT_BACKEND_ABI_VERSION, "cpu", cpu_create, cpu_destroy, cpu_device_name, cpu_last_error, cpu_synchronize,
    cpu_alloc, cpu_free, cpu_copy, cpu_copy, cpu_copy_2d, cpu_embed, cpu_add_positions, cpu_gemm, cpu_layer_norm,
    cpu_rms_norm, cpu_mul_rows, cpu_add, cpu_activation, cpu_gated_activation, cpu_rope, cpu_attention,
    cpu_attention_scores, cpu_softmax_rows, cpu_attention_apply, cpu_apply_edit, cpu_pack_weight, cpu_softcap,
    cpu_gemm_backward, cpu_norm_scale_backward, cpu_norm_backward, cpu_activation_backward, cpu_gated_activation_backward,
    cpu_softcap_backward, cpu_softmax_rows_backward, cpu_attention_apply_backward, cpu_attention_scores_backward,
    cpu_pack_weight_compute,
};

}  // namespace

namespace nt {
const nt_backend_api *cpu_backend_api() { return &kCpuApi; }
ThreadPool *cpu_backend_pool(nt_backend *be) { return &be->pool; }
}  // namespace nt
