// Attention geometry shared by the fused kernel (attention.cu) and the instrumented path
// (attention-instrumented.cu): validation and the per-query visible key range.
#pragma once

#include "common.cuh"

// Checks s (see nt_attention_shape). Returns 1 with last_error set when it is malformed;
// otherwise 0 and *empty tells whether there is nothing to compute.
inline int check_attention_shape(nt_backend *be, const char *op, const nt_attention_shape *s, bool *empty) {
  if (!s) return nt_fail(be, "%s: no shape", op);
  if (s->B < 0 || s->T < 0 || s->H < 0 || s->G < 0 || s->D < 0 || s->S < 0 || s->KV < 0 || s->q0 < 0 || s->window < 0)
    return nt_fail(be, "%s: negative size in shape (B=%lld T=%lld H=%lld G=%lld D=%lld S=%lld KV=%lld q0=%lld window=%d)", op,
                   (long long)s->B, (long long)s->T, (long long)s->H, (long long)s->G, (long long)s->D, (long long)s->S,
                   (long long)s->KV, (long long)s->q0, s->window);
  *empty = s->B == 0 || s->T == 0 || s->H == 0 || s->D == 0;
  if (*empty) return 0;
  if (s->G == 0 || s->H % s->G != 0)
    return nt_fail(be, "%s: %lld query heads do not split into %lld kv heads", op, (long long)s->H, (long long)s->G);
  if (s->q0 + s->T > s->KV || s->KV > s->S)
    return nt_fail(be, "%s: need q0 + T <= KV <= S, got q0=%lld T=%lld KV=%lld S=%lld", op, (long long)s->q0, (long long)s->T,
                   (long long)s->KV, (long long)s->S);
  return 0;
}

// Visible keys [*lo, *hi] of the query at padded index i in a row with left padding pad_b:
// pad_b <= j <= i and i - j < window (window 0 = unlimited). Empty (lo > hi) for padding queries.
__device__ __forceinline__ void attention_key_range(int64_t i, int64_t pad_b, int window, int64_t *lo, int64_t *hi) {
  *hi = i;
  *lo = pad_b;
  if (window > 0 && i - window + 1 > *lo) *lo = i - window + 1;
}
