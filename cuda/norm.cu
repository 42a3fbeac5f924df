// LayerNorm, RMSNorm (with the optional per-row scale TransformerLens hooks) and row scaling.
// Reference: native/ops/elementwise.cc (layer_norm_f32, rms_norm_f32, mul_rows_f32).
#include "common.cuh"
#include "ops.cuh"

namespace {

// One block per row, about 4 elements per thread (d = 768 -> 192 threads, d >= 4096 -> 1024):
// every thread has work, and the row (<= 32 KB at d = 8192) stays in L1/L2 between the passes.
// Statistics accumulate in float with a tree reduction (the CPU uses double; on O(1)
// activations the difference is ~1e-7 relative).
constexpr int kNormPerThread = 4;
constexpr int kNormMaxThreads = 1024;

// out [M, d] = (x - mean) / sqrt(var + eps) * w + b; scale_out [M] = sqrt(var + eps)
__global__ void layer_norm_f32_kernel(const float *x, int64_t d, const float *w, const float *b, float eps, float *out,
                                      float *scale_out) {
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d;
  float *o = out + r * d;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sum += xr[i];
  const float mean = block_reduce_sum(sum) / static_cast<float>(d);
  // Two passes (centered variance), as the CPU does: no cancellation for rows with a large mean.
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float c = xr[i] - mean;
    sq += c * c;
  }
  const float var = block_reduce_sum(sq) / static_cast<float>(d);
  const float scale = sqrtf(var + eps);
  if (scale_out && threadIdx.x == 0) scale_out[r] = scale;
  const float inv = 1.0f / scale;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = (xr[i] - mean) * inv;
    o[i] = v * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
  }
}

// out [M, d] = x / sqrt(mean(x^2) + eps) (* w); scale_out [M] = sqrt(mean(x^2) + eps)
__global__ void rms_norm_f32_kernel(const float *x, int64_t d, const float *w, float eps, float *out, float *scale_out) {
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d;
  float *o = out + r * d;
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sq += xr[i] * xr[i];
  const float ms = block_reduce_sum(sq) / static_cast<float>(d);
  const float scale = sqrtf(ms + eps);
  if (scale_out && threadIdx.x == 0) scale_out[r] = scale;
  const float inv = 1.0f / scale;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = xr[i] * inv;
    o[i] = w ? v * w[i] : v;
  }
}

// out [M, d] = x [M, d] * w [d]; one block per row (out may alias x).
__global__ void mul_rows_f32_kernel(const float *x, int64_t d, const float *w, float *out) {
  const int64_t r = blockIdx.x;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) out[r * d + i] = x[r * d + i] * w[i];
}

int check_rows(nt_backend *be, const char *op, int64_t M, int64_t d) {
  if (M < 0 || d < 0 || M > INT32_MAX) return nt_fail(be, "%s: bad shape M=%lld d=%lld", op, (long long)M, (long long)d);
  return 0;
}

}  // namespace

int nt_cuda_layer_norm(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, const float *b, float eps,
                       float *out, float *scale_out) {
  if (check_rows(be, "layer_norm", M, d)) return 1;
  if (M == 0 || d == 0) return 0;
  NT_CUDA_ENTER(be);
  const int threads = nt_row_threads(d, kNormPerThread, kNormMaxThreads);
  layer_norm_f32_kernel<<<static_cast<unsigned>(M), threads, 0, be->stream>>>(x, d, w, b, eps, out, scale_out);
  NT_CUDA_CHECK_LAUNCH(be, "layer_norm_f32_kernel");
  return 0;
}

int nt_cuda_rms_norm(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float eps, float *out,
                     float *scale_out) {
  if (check_rows(be, "rms_norm", M, d)) return 1;
  if (M == 0 || d == 0) return 0;
  NT_CUDA_ENTER(be);
  const int threads = nt_row_threads(d, kNormPerThread, kNormMaxThreads);
  rms_norm_f32_kernel<<<static_cast<unsigned>(M), threads, 0, be->stream>>>(x, d, w, eps, out, scale_out);
  NT_CUDA_CHECK_LAUNCH(be, "rms_norm_f32_kernel");
  return 0;
}

int nt_cuda_mul_rows(nt_backend *be, const float *x, int64_t M, int64_t d, const float *w, float *out) {
  if (check_rows(be, "mul_rows", M, d)) return 1;
  if (M == 0 || d == 0) return 0;
  NT_CUDA_ENTER(be);
  // Pure streaming: 256 threads per row is plenty to keep the loads coalesced.
  const int threads = nt_row_threads(d, kNormPerThread, 256);
  mul_rows_f32_kernel<<<static_cast<unsigned>(M), threads, 0, be->stream>>>(x, d, w, out);
  NT_CUDA_CHECK_LAUNCH(be, "mul_rows_f32_kernel");
  return 0;
}
