// Backward of LayerNorm / RMSNorm (ABI 3): the gradient at the per-row scale and at the input,
// with the scale live or detached. Formulas: native/ops/backend-abi.h; reference: the CPU backend.
#include "common.cuh"
#include "ops.cuh"

namespace {

// One block per row, ~4 elements per thread, as the forward (norm.cu): the row is read two or
// three times and stays in L1/L2 between the passes. Sums are float32 tree reductions.
constexpr int kNormPerThread = 4;
constexpr int kNormMaxThreads = 1024;

// The row mean for LayerNorm (xc = x - mean), 0 for RMSNorm (xc = x).
template <bool LAYER>
__device__ __forceinline__ float row_center(const float *xr, int64_t d) {
  if (!LAYER) return 0.0f;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sum += xr[i];
  return block_reduce_sum(sum) / static_cast<float>(d);
}

// dscale [M] = -sum_j dn[m, j] * xc[m, j] / scale[m]^2
template <bool LAYER>
__global__ void norm_scale_backward_f32_kernel(const float *x, int64_t d, const float *scale, const float *dn, float *dscale) {
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d, *dr = dn + r * d;
  const float mean = row_center<LAYER>(xr, d);
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) acc += dr[i] * (xr[i] - mean);
  const float total = block_reduce_sum(acc);
  if (threadIdx.x == 0) {
    const float s = scale[r];
    dscale[r] = -total / (s * s);
  }
}

// dx [M, d] = (dn - [LayerNorm] mean(dn)) / scale + (dscale ? dscale * xc / (d * s) : 0), with
// s = sqrt(mean(xc^2) + eps) recomputed from x. dx may alias dn: every thread reads and writes
// only its own elements in the last pass, and the earlier passes read the same elements.
template <bool LAYER>
__global__ void norm_backward_f32_kernel(const float *x, int64_t d, float eps, const float *scale, const float *dn, const float *dscale,
                                         float *dx) {
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d, *dr = dn + r * d;
  float *o = dx + r * d;
  const float mean = row_center<LAYER>(xr, d);
  float coef = 0.0f;
  if (dscale) {  // block-uniform
    float sq = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
      const float c = xr[i] - mean;
      sq += c * c;
    }
    const float s = sqrtf(block_reduce_sum(sq) / static_cast<float>(d) + eps);
    coef = dscale[r] / (static_cast<float>(d) * s);
  }
  float mean_dn = 0.0f;
  if (LAYER) {
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sum += dr[i];
    mean_dn = block_reduce_sum(sum) / static_cast<float>(d);
  }
  const float inv = 1.0f / scale[r];
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = (dr[i] - mean_dn) * inv + coef * (xr[i] - mean);
}

int check_rows(nt_backend *be, const char *op, int64_t M, int64_t d) {
  if (M < 0 || d < 0 || M > INT32_MAX) return nt_fail(be, "%s: bad shape M=%lld d=%lld", op, (long long)M, (long long)d);
  return 0;
}

}  // namespace

int nt_cuda_norm_scale_backward(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, const float *scale,
                                const float *dn, float *dscale) {
  if (check_rows(be, "norm_scale_backward", M, d)) return 1;
  if (M == 0) return 0;
  NT_CUDA_ENTER(be);
  if (d == 0) {  // an empty sum
    NT_CUDA_CHECK(be, cudaMemsetAsync(dscale, 0, static_cast<size_t>(M) * sizeof(float), be->stream));
    return 0;
  }
  const int threads = nt_row_threads(d, kNormPerThread, kNormMaxThreads);
  if (layer_norm) norm_scale_backward_f32_kernel<true><<<static_cast<unsigned>(M), threads, 0, be->stream>>>(x, d, scale, dn, dscale);
  else norm_scale_backward_f32_kernel<false><<<static_cast<unsigned>(M), threads, 0, be->stream>>>(x, d, scale, dn, dscale);
  NT_CUDA_CHECK_LAUNCH(be, "norm_scale_backward_f32_kernel");
  return 0;
}

int nt_cuda_norm_backward(nt_backend *be, const float *x, int64_t M, int64_t d, int32_t layer_norm, float eps, const float *scale,
                          const float *dn, const float *dscale, float *dx) {
  if (check_rows(be, "norm_backward", M, d)) return 1;
  if (M == 0 || d == 0) return 0;
  NT_CUDA_ENTER(be);
  const int threads = nt_row_threads(d, kNormPerThread, kNormMaxThreads);
  if (layer_norm)
    norm_backward_f32_kernel<true><<<static_cast<unsigned>(M), threads, 0, be->stream>>>(x, d, eps, scale, dn, dscale, dx);
  else
    norm_backward_f32_kernel<false><<<static_cast<unsigned>(M), threads, 0, be->stream>>>(x, d, eps, scale, dn, dscale, dx);
  NT_CUDA_CHECK_LAUNCH(be, "norm_backward_f32_kernel");
  return 0;
}
