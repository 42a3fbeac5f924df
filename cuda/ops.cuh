// The ABI entry points of the CUDA backend, one group per cuda/<op>.cu; backend.cu puts them in
// the nt_backend_api table. Signatures and semantics: native/ops/backend-abi.h.
#pragma once

#include "common.cuh"

// embed.cu
int nt_cuda_embed(nt_backend *be, const void *table, nt_dtype dtype, const int32_t *tokens, int64_t M, int64_t d, float *out);
int nt_cuda_add_positions(nt_backend *be, const void *table, nt_dtype dtype, int64_t B, int64_t T, int64_t d, int64_t pos0,
                          const int32_t *pad, float *x);

// gemm-cublas.cu
int nt_cuda_gemm(nt_backend *be, const float *A, int64_t M, int64_t K, const void *W, nt_dtype w_dtype, int64_t N,
                 const float *bias, float *C);
int nt_cuda_gemm_backward(nt_backend *be, const float *dC, int64_t M, int64_t N, const void *W, nt_dtype w_dtype, int64_t K, float *dA);

// norm.cu
int nt_cuda_layer_norm(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, const float *b, float eps,
                       float *out, float *scale_out);
int nt_cuda_rms_norm(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float eps, float *out,
                     float *scale_out);
int nt_cuda_mul_rows(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float *out);

// elementwise.cu
int nt_cuda_add(nt_backend *be, const float *a, const float *b, int64_t n, float *out);
int nt_cuda_softcap(nt_backend *be, float *x, int64_t n, float cap);
int nt_cuda_activation(nt_backend *be, nt_activation act, float *x, int64_t n);
int nt_cuda_gated_activation(nt_backend *be, nt_activation act, const float *gate, const float *up, int64_t n, float *out);

// rope.cu
int nt_cuda_rope(nt_backend *be, float *x, int64_t B, int64_t T, int64_t heads, int64_t D, const float *inv_freq,
                 int64_t pos0, const int32_t *pad);

// attention.cu
int nt_cuda_attention(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *v, float *z);

// attention-instrumented.cu
int nt_cuda_attention_scores(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, float *scores);
int nt_cuda_softmax_rows(nt_backend *be, float *x, int64_t rows, int64_t n);
int nt_cuda_attention_apply(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, float *z);

// edit.cu
int nt_cuda_apply_edit(nt_backend *be, const nt_edit *e, const nt_edit_context *ctx, float *x);

// backward-norm.cu
int nt_cuda_norm_scale_backward(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, const float *scale,
                                const float *dn, float *dscale);
int nt_cuda_norm_backward(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, float eps, const float *scale,
                          const float *dn, const float *dscale, float *dx);

// backward-elementwise.cu
int nt_cuda_activation_backward(nt_backend *be, nt_activation act, const float *x, const float *dy, int64_t n, float *dx);
int nt_cuda_gated_activation_backward(nt_backend *be, nt_activation act, const float *gate, const float *up, const float *dout, int64_t n,
                                      float *dgate, float *dup);
int nt_cuda_softcap_backward(nt_backend *be, const float *y, const float *dy, int64_t n, float cap, float *dx);

// backward-attention.cu
int nt_cuda_softmax_rows_backward(nt_backend *be, const float *p, const float *dp, int64_t rows, int64_t n, float *dx);
int nt_cuda_attention_apply_backward(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, const float *dz,
                                     float *dpattern, float *dv);
int nt_cuda_attention_scores_backward(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *dscores,
                                      float *dq, float *dk);
