/* The versioned C ABI between the engine and a compute backend loaded at run time
 * (libneurotap_cuda.so, built from cuda/ by CMakeLists.txt). It is the op set of
 * native/ops/ops.h over backend memory; the CPU backend (native/ops/cpu-backend.cc)
 * implements the same table in process and is the reference the cross-backend op test
 * (test/native/test-backend-ops.cc) compares against.
 *
 * Conventions: every pointer argument named as a buffer is backend memory (device memory for
 * CUDA) unless documented as host. Activations are float32 in every op; weights may be
 * F32, F16 or BF16 (`nt_dtype`), accumulated in float32. Ops are asynchronous with respect to
 * the host: copies to the host and `synchronize` order them. Functions returning int return 0
 * on success and nonzero on failure, with the reason in `last_error`. No function aborts.
 * Layout letters as in ops.h: B batch, T new positions, H query heads, G kv heads, D head dim,
 * M rows (= B*T), K in features, N out features. */
#ifndef NEUROTAP_BACKEND_ABI_H
#define NEUROTAP_BACKEND_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NT_BACKEND_ABI_VERSION 5  /* 2: softcap; 3: backward ops; 4: compute modes (pack_weight_compute); 5: attention compute */

typedef struct nt_backend nt_backend; /* one device context (device, stream, handles) */

typedef enum nt_dtype {
  NT_F32 = 0, NT_F16 = 1, NT_BF16 = 2,
  /* Backend-private weight layouts made by pack_weight; only ever passed back to that backend. */
  NT_PACKED_BASE = 64
} nt_dtype;

/* The numeric policy of a GEMM (ABI 4). F32: A as given, products and sums in f32 (bf16 / f16
 * weights widened exactly where the backend can). BF16: A rounded to bf16 (nearest even) at the
 * GEMM's input, bf16 weights, products and sums in f32, C f32. */
typedef enum nt_compute { NT_COMPUTE_F32 = 0, NT_COMPUTE_BF16 = 1 } nt_compute;

typedef enum nt_activation { NT_ACT_GELU_TANH = 0, NT_ACT_GELU_ERF = 1, NT_ACT_SILU = 2, NT_ACT_RELU = 3 } nt_activation;

/* Attention geometry (ops.h AttentionShape): queries are T new positions at padded indices
 * q0 .. q0+T-1; k and v are [B, S, G, D] with the first KV = q0 + T rows in use. Query i of
 * row b sees keys j with pad[b] <= j <= i and i - j < window (window 0 = unlimited). */
typedef struct nt_attention_shape {
  int64_t B, T, H, G, D, S, KV, q0;
  float scale;
  int32_t window;
  const int32_t *pad; /* [B] backend memory, or NULL */
  /* ABI 5. BF16: attention's two products round their inputs to bf16 (nearest even): q and k for
   * the scores, the normalized pattern and v for z; sums, softmax and outputs stay f32. The
   * backward ops ignore it (they differentiate the f32 values), and a backend may compute in f32
   * regardless (the CUDA backend does). F32 (0): exact f32. */
  int32_t compute;
} nt_attention_shape;

typedef enum nt_edit_op {
  NT_EDIT_ADD = 0, NT_EDIT_SET = 1, NT_EDIT_ZERO = 2, NT_EDIT_SCALE = 3,
  NT_EDIT_PROJECT_OUT = 4, NT_EDIT_PROJECTION_CAP = 5, NT_EDIT_PATCH = 6
} nt_edit_op;

/* One edit over the units of an activation (engine/edits.h): the activation is viewed as
 * [B, T, heads, width] (head_major = 0) or [B, heads, T, width] (head_major = 1). Lists are
 * backend memory; a NULL list means "all". */
typedef struct nt_edit {
  nt_edit_op op;
  const float *vec;          /* [width]: add (pre-scaled), set, unit direction */
  float factor, lo, hi;      /* scale; projectionCap bounds */
  const float *source;       /* patch: the full activation shape */
  const int64_t *positions;  /* real positions to touch */
  int64_t n_positions;
  const int32_t *rows;
  int64_t n_rows;
  const int32_t *heads;
  int64_t n_heads;
  int32_t last_only, generated_only, prompt_only;
  /* ABI 5. Add / set: vec holds n_rows vectors of width floats, the j-th for row rows[j]. */
  int32_t per_row;
} nt_edit;

/* Where the forward is: real position of (b, t) = pos0 + t - pad[b]; padded index >= prompt_len
 * is generated. */
typedef struct nt_edit_context {
  int64_t B, T, heads, width, pos0, prompt_len;
  int32_t head_major;
  const int32_t *pad; /* [B] backend memory, or NULL */
} nt_edit_context;

typedef struct nt_backend_api {
  int32_t abi_version; /* NT_BACKEND_ABI_VERSION */
  const char *name;    /* "cpu", "cuda" */

  /* Context. create() returns NULL and fills err (a NUL-terminated reason) on failure, e.g.
   * no driver, no device, or cuBLAS missing. */
  nt_backend *(*create)(int32_t device, int32_t threads, char *err, size_t err_len);
  void (*destroy)(nt_backend *be);
  const char *(*device_name)(nt_backend *be);
  const char *(*last_error)(nt_backend *be);
  int (*synchronize)(nt_backend *be);

  /* Memory. alloc returns NULL on failure. Copies are ordered with the ops. */
  void *(*alloc)(nt_backend *be, size_t bytes);
  void (*free)(nt_backend *be, void *ptr);
  int (*copy_to_device)(nt_backend *be, void *dst, const void *host_src, size_t bytes);
  int (*copy_to_host)(nt_backend *be, void *host_dst, const void *src, size_t bytes);
  /* rows x row_bytes from src (stride src_pitch bytes) to dst (stride dst_pitch bytes), both
   * backend memory: KV-cache appends and last-position gathers. */
  int (*copy_2d)(nt_backend *be, void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t row_bytes, size_t rows);

  /* out[M, d] = table[tokens[m], :] (tokens backend int32; table of dtype) */
  int (*embed)(nt_backend *be, const void *table, nt_dtype dtype, const int32_t *tokens, int64_t M, int64_t d, float *out);
  /* x[b, t, :] += table[max(0, pos0 + t - pad[b]), :] */
  int (*add_positions)(nt_backend *be, const void *table, nt_dtype dtype, int64_t B, int64_t T, int64_t d, int64_t pos0,
                       const int32_t *pad, float *x);
  /* C[M, N] = A[M, K] . W[N, K]^T (+ bias[N], float32, may be NULL) */
  int (*gemm)(nt_backend *be, const float *A, int64_t M, int64_t K, const void *W, nt_dtype w_dtype, int64_t N, const float *bias, float *C);
  /* LayerNorm / RMSNorm over rows of d; w, b float32 or NULL; scale_out [M] or NULL */
  int (*layer_norm)(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, const float *b, float eps, float *out, float *scale_out);
  int (*rms_norm)(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float eps, float *out, float *scale_out);
  int (*mul_rows)(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float *out);
  int (*add)(nt_backend *be, const float *a, const float *b, int64_t n, float *out);
  int (*activation)(nt_backend *be, nt_activation act, float *x, int64_t n);
  int (*gated_activation)(nt_backend *be, nt_activation act, const float *gate, const float *up, int64_t n, float *out);
  /* rotary on x [B, T, heads, D], rotate-half convention, inv_freq [D/2] backend memory */
  int (*rope)(nt_backend *be, float *x, int64_t B, int64_t T, int64_t heads, int64_t D, const float *inv_freq, int64_t pos0, const int32_t *pad);
  int (*attention)(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *v, float *z);
  int (*attention_scores)(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, float *scores);
  int (*softmax_rows)(nt_backend *be, float *x, int64_t rows, int64_t n);
  int (*attention_apply)(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, float *z);
  int (*apply_edit)(nt_backend *be, const nt_edit *e, const nt_edit_context *ctx, float *x);

  /* Optional (NULL: no packing). Re-lays out a weight matrix W [N, K] of `dtype` once, at load,
   * for this backend's gemm: returns a new buffer (released with `free`) and sets *packed_dtype
   * (>= NT_PACKED_BASE) to pass to gemm with it, or returns NULL to keep W as it is. */
  void *(*pack_weight)(nt_backend *be, const void *W, nt_dtype dtype, int64_t N, int64_t K, nt_dtype *packed_dtype);

  /* In place over n floats: x = cap * tanh(x / cap) (Gemma 2's attention-logit and final-logit
   * soft-capping); -inf stays -inf (masked scores). cap > 0. */
  int (*softcap)(nt_backend *be, float *x, int64_t n, float cap);

  /* Backward ops (ABI 3): vector-Jacobian products of the ops above, for gradients with respect
   * to activations (never weights). Each writes its outputs (it does not accumulate into them);
   * an output may alias the gradient it is computed from only where stated. The forward values
   * they read are the forward op's inputs (or outputs, where stated), recomputed by the engine. */

  /* dA[M, K] = dC[M, N] . W[N, K], for C = gemm(A, W): W exactly as passed to gemm (any dtype,
   * packed layouts included). */
  int (*gemm_backward)(nt_backend *be, const float *dC, int64_t M, int64_t N, const void *W, nt_dtype w_dtype, int64_t K, float *dA);
  /* Norms over rows of d of the forward input x (layer_norm != 0: LayerNorm, centered
   * xc = x - mean(x); else RMSNorm, xc = x). `scale` [M] is what the forward divided by
   * (normalized n = xc / scale); dn = d/dn (the gradient before the weight is applied).
   *   norm_scale_backward: dscale[m] = -sum_j dn[m, j] * xc[m, j] / scale[m]^2
   *   norm_backward: dx[m, j] = (dn[m, j] - [LayerNorm] mean_j dn[m, :]) / scale[m]
   *                              + (dscale ? dscale[m] * xc[m, j] / (d * s[m]) : 0)
   * with s = sqrt(mean(xc^2) + eps), the scale the forward computed (d s / d x = xc / (d s)).
   * dscale NULL treats the scale as a constant (a detached norm scale). dx may alias dn. */
  int (*norm_scale_backward)(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, const float *scale,
                             const float *dn, float *dscale);
  int (*norm_backward)(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, float eps, const float *scale,
                       const float *dn, const float *dscale, float *dx);
  /* dx[i] = dy[i] * f'(x[i]), x the pre-activation. dx may alias dy. */
  int (*activation_backward)(nt_backend *be, nt_activation act, const float *x, const float *dy, int64_t n, float *dx);
  /* out = f(gate) * up: dgate = dout * up * f'(gate) (skipped when dgate is NULL: a detached
   * nonlinearity), dup = dout * f(gate). Neither may alias dout. */
  int (*gated_activation_backward)(nt_backend *be, nt_activation act, const float *gate, const float *up, const float *dout, int64_t n,
                                   float *dgate, float *dup);
  /* y = cap * tanh(x / cap), given the forward output y: dx = dy * (1 - (y / cap)^2); where y is
   * -inf (a masked score) dx = 0. dx may alias dy. */
  int (*softcap_backward)(nt_backend *be, const float *y, const float *dy, int64_t n, float cap, float *dx);
  /* p = softmax over rows of n (the forward output): dx = p * (dp - sum_j p_j dp_j). dx may alias dp. */
  int (*softmax_rows_backward)(nt_backend *be, const float *p, const float *dp, int64_t rows, int64_t n, float *dx);
  /* z = attention_apply(pattern, v), shape s with S = KV (no KV cache):
   *   dpattern[b, h, i, j] = dz[b, i, h, :] . v[b, j, g(h), :] for every j < KV (masked entries too,
   *                          as autograd gives them);
   *   dv[b, j, g, :] = sum over the heads h of group g and i of pattern[b, h, i, j] * dz[b, i, h, :]. */
  int (*attention_apply_backward)(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, const float *dz,
                                  float *dpattern, float *dv);
  /* scores = attention_scores(q, k) (scale * q . k where the mask allows, -inf elsewhere):
   *   dq[b, i, h, :] = scale * sum over allowed j of dscores[b, h, i, j] * k[b, j, g(h), :]
   *   dk[b, j, g, :] = scale * sum over h in g and allowed i of dscores[b, h, i, j] * q[b, i, h, :]
   * (masked entries of dscores are ignored; rows of dk no query sees are 0). */
  int (*attention_scores_backward)(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *dscores,
                                   float *dq, float *dk);

  /* Optional (ABI 4; NULL: the backend has no compute mode beyond what its gemm does for each
   * dtype). Like pack_weight, for gemm under `compute`: always returns a new buffer and sets
   * *packed_dtype, or returns NULL with the reason in last_error when the backend does not
   * implement `compute` for `dtype`. gemm_backward takes the result too (in f32 arithmetic). */
  void *(*pack_weight_compute)(nt_backend *be, const void *W, nt_dtype dtype, int64_t N, int64_t K, nt_compute compute,
                               nt_dtype *packed_dtype);
} nt_backend_api;

/* The one exported symbol of a backend library: its table for `abi_version`, or NULL when the
 * library does not speak that version. */
typedef const nt_backend_api *(*nt_backend_get_api_fn)(int32_t abi_version);
#define NT_BACKEND_GET_API_SYMBOL "nt_backend_get_api"

#ifdef __cplusplus
}
#endif

#endif /* NEUROTAP_BACKEND_ABI_H */
