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

#define NT_BACKEND_ABI_VERSION 2  /* 2: softcap */

typedef struct nt_backend nt_backend; /* one device context (device, stream, handles) */

typedef enum nt_dtype {
  NT_F32 = 0, NT_F16 = 1, NT_BF16 = 2,
  /* Backend-private weight layouts made by pack_weight; only ever passed back to that backend. */
  NT_PACKED_BASE = 64
} nt_dtype;

typedef enum nt_activation { NT_ACT_GELU_TANH = 0, NT_ACT_GELU_ERF = 1, NT_ACT_SILU = 2, NT_ACT_RELU = 3 } nt_activation;

/* Attention geometry (ops.h AttentionShape): queries are T new positions at padded indices
 * q0 .. q0+T-1; k and v are [B, S, G, D] with the first KV = q0 + T rows in use. Query i of
 * row b sees keys j with pad[b] <= j <= i and i - j < window (window 0 = unlimited). */
typedef struct nt_attention_shape {
  int64_t B, T, H, G, D, S, KV, q0;
  float scale;
  int32_t window;
  const int32_t *pad; /* [B] backend memory, or NULL */
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
} nt_backend_api;

/* The one exported symbol of a backend library: its table for `abi_version`, or NULL when the
 * library does not speak that version. */
typedef const nt_backend_api *(*nt_backend_get_api_fn)(int32_t abi_version);
#define NT_BACKEND_GET_API_SYMBOL "nt_backend_get_api"

#ifdef __cplusplus
}
#endif

#endif /* NEUROTAP_BACKEND_ABI_H */
