// The op set the engine's forward loop is written in. native/ops/*.cc is the CPU backend
// (the reference); cuda/ will implement the same ops. Layout letters: B batch, T pos,
// H query heads, G kv heads, D head dim, M rows (= B*T), K in features, N out features.
// Every op is checked against HF transformers through the whole-model tests in test/.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/thread-pool.h"

namespace nt {

// C[M, N] = A[M, K] · W[N, K]^T (+ bias[N] when non-null). W is in HF Linear layout.
void gemm_f32(ThreadPool &pool, const float *A, int64_t M, int64_t K, const float *W, int64_t N, const float *bias, float *C);

// Weights packed once at load for the vector kernels (gemm-packed.cc): [ceil(N/32)][K][32].
bool gemm_packing_available();
size_t gemm_packed_floats(int64_t N, int64_t K);
void gemm_pack_weights(const float *W, int64_t N, int64_t K, float *Wp);
// C[M, N] = A[M, K] · W^T (+ bias) with W packed by gemm_pack_weights.
void gemm_f32_packed(ThreadPool &pool, const float *A, int64_t M, int64_t K, const float *Wp, int64_t N, const float *bias, float *C);
// The same with bf16 weights (same panel layout, 16-bit elements) widened to f32 in the kernel.
void gemm_pack_weights_bf16(const uint16_t *W, int64_t N, int64_t K, uint16_t *Wp);
void gemm_bf16_packed(ThreadPool &pool, const float *A, int64_t M, int64_t K, const uint16_t *Wp, int64_t N, const float *bias, float *C);
// Backward (gemm-backward.cc): dA[M, K] = dC[M, N] · W[N, K], W plain or packed as above.
void gemm_backward_f32(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const float *W, int64_t K, float *dA);
void gemm_backward_f32_packed(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const float *Wp, int64_t K, float *dA);
void gemm_backward_bf16_packed(ThreadPool &pool, const float *dC, int64_t M, int64_t N, const uint16_t *Wp, int64_t K, float *dA);

// Selects the GEMM micro-kernel ("avx512", "avx2", "scalar"); false if this CPU lacks it.
// The default is the best available (NEUROTAP_GEMM_KERNEL caps it). For tests and benchmarks.
bool gemm_select_kernel(const char *name);
const char *gemm_kernel_name();

// out[M, d] = (x - mean) / sqrt(var + eps) * w + b; scale_out[M] = sqrt(var + eps) if non-null.
void layer_norm_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, const float *w, const float *b, float eps, float *out,
                    float *scale_out);

// out[M, d] = x / sqrt(mean(x^2) + eps) (* w when non-null); scale_out as above.
void rms_norm_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, const float *w, float eps, float *out, float *scale_out);
// Norm backward (elementwise-backward.cc), the formulas of backend-abi.h: xc = x - mean (LayerNorm) or x,
// n = xc / scale, dn = d/dn. dscale[m] = -sum_j dn * xc / scale^2; dx = (dn - [LN] mean(dn)) /
// scale + dscale * xc / (d * s), s = sqrt(mean(xc^2) + eps) (no dscale term when null). dx may alias dn.
void norm_scale_backward_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, bool layer_norm, const float *scale, const float *dn,
                             float *dscale);
void norm_backward_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, bool layer_norm, float eps, const float *scale, const float *dn,
                       const float *dscale, float *dx);

// out[M, d] = x[M, d] * w[d]
void mul_rows_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, const float *w, float *out);

// out = a + b, elementwise over n floats (out may alias a or b).
void add_f32(ThreadPool &pool, const float *a, const float *b, int64_t n, float *out);

// In place over n floats: x = cap * tanh(x / cap), -inf kept (Gemma 2 soft-capping).
void softcap_f32(ThreadPool &pool, float *x, int64_t n, float cap);

// In place over n floats.
void gelu_tanh_f32(ThreadPool &pool, float *x, int64_t n);
void gelu_erf_f32(ThreadPool &pool, float *x, int64_t n);
void relu_f32(ThreadPool &pool, float *x, int64_t n);
void silu_f32(ThreadPool &pool, float *x, int64_t n);
// out = act(gate) * up, elementwise; act is one of the above by id (see Activation).
void gated_act_f32(ThreadPool &pool, int activation, const float *gate, const float *up, int64_t n, float *out);
// Backward (elementwise-backward.cc): dx = dy * act'(x) (dx may alias dy); for out = act(gate) * up,
// dgate = dout * up * act'(gate) (skipped when null) and dup = dout * act(gate).
void activation_backward_f32(ThreadPool &pool, int activation, const float *x, const float *dy, int64_t n, float *dx);
void gated_act_backward_f32(ThreadPool &pool, int activation, const float *gate, const float *up, const float *dout, int64_t n, float *dgate,
                            float *dup);
// Given y = softcap(x): dx = dy * (1 - (y / cap)^2), 0 where y is -inf. dx may alias dy.
void softcap_backward_f32(ThreadPool &pool, const float *y, const float *dy, int64_t n, float cap, float *dx);

// Rotary embedding in place on x [B, T, heads, D], HF rotate-half convention: the pair
// (x[i], x[i + D/2]) of row b, token t turns by angle (pos0 + t - pad[b]) * inv_freq[i]
// (pad may be null: no left padding).
void rope_f32(ThreadPool &pool, float *x, int64_t B, int64_t T, int64_t heads, int64_t D, const float *inv_freq, int64_t pos0,
              const int32_t *pad);

// Queries are T new positions at padded indices q0 .. q0 + T - 1; keys are the first KV
// positions of k and v [B, S, G, D] (S = row stride: T without a cache, the cache capacity
// with one). Query i of row b sees keys j with pad[b] <= j <= i and i - j < window.
struct AttentionShape {
  int64_t B, T, H, G, D;
  int64_t S;      // key rows per batch row in k and v
  int64_t KV;     // keys in use: q0 + T
  int64_t q0;     // padded index of the first query
  float scale;    // multiplies q·k
  int window;     // sliding window; 0 = none
  const int32_t *pad;  // [B] left padding or null
  bool bf16 = false;   // round q, k, the normalized weights and v to bf16 at the two products (compute bf16)
};

// Fused causal attention: z[B, T, H, D] = softmax(mask(q·k^T * scale)) · v, one query row at a
// time, never materializing the pattern. A query with no visible key gets z = 0.
void attention_f32(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *v, float *z);

// Instrumented path: scores[B, H, T, KV] = mask(q·k^T * scale), masked entries -inf.
void attention_scores_f32(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, float *scores);
// In place: each of `rows` rows of length n becomes its softmax (an all -inf row becomes 0).
void softmax_rows_f32(ThreadPool &pool, float *x, int64_t rows, int64_t n);
// z[B, T, H, D] = pattern[B, H, T, KV] · v, over all keys (an edited pattern may put weight
// outside the mask).
void attention_apply_f32(ThreadPool &pool, const AttentionShape &s, const float *pattern, const float *v, float *z);

// Backward of the instrumented path (attention-backward.cc, elementwise-backward.cc), S = KV rows of k / v
// used. softmax: p the forward output, dx = p * (dp - sum_j p_j dp_j) (dx may alias dp).
void softmax_rows_backward_f32(ThreadPool &pool, const float *p, const float *dp, int64_t rows, int64_t n, float *dx);
// dpattern[B, H, T, KV] = dz · v^T per head (every key); dv[B, S, G, D] = sum over the group's
// heads of pattern^T · dz.
void attention_apply_backward_f32(ThreadPool &pool, const AttentionShape &s, const float *pattern, const float *v, const float *dz,
                                  float *dpattern, float *dv);
// dq[B, T, H, D] = scale * dscores · k and dk[B, S, G, D] = scale * sum over the group's heads of
// dscores^T · q, over the mask's visible (query, key) pairs only; keys no query sees get 0.
void attention_scores_backward_f32(ThreadPool &pool, const AttentionShape &s, const float *q, const float *k, const float *dscores,
                                   float *dq, float *dk);

}  // namespace nt
