// The GEMM's helper kernels, kept out of gemm-cublas.cu so they compile without cuBLAS:
// activation (and gradient) rounding to the weight dtype, the bias add and row rescaling.
// Reference: native/ops/gemm.cc.
#include "common.cuh"
#include "gemm.h"

namespace {

// src [n] float32 -> dst [n] f16
__global__ void convert_f32_to_f16_kernel(const float *src, int64_t n, __half *dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2half_rn(src[i]);
}

// src [n] float32 -> dst [n] bf16
__global__ void convert_f32_to_bf16_kernel(const float *src, int64_t n, __nv_bfloat16 *dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

// dst [rows, cols] f16 = src * 2^e, e chosen per row (one block each) so that the row's largest
// |value| lands in [2^14, 2^15): gradients far below f16's normal range (6e-5) keep their 11
// significant bits instead of flushing to subnormals, and nothing overflows 65504. row_unscale
// [rows] = 2^-e (exact powers of two: unscaling the product's row is exact).
__global__ void convert_rows_f32_to_f16_scaled_kernel(const float *src, int64_t cols, __half *dst, float *row_unscale) {
  const int64_t r = blockIdx.x;
  const float *row = src + r * cols;
  float mx = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) mx = fmaxf(mx, fabsf(row[i]));
  mx = block_reduce_max(mx);
  int e = 0;
  if (mx > 0.0f && mx < INFINITY) {  // NaN fails both: scale 1
    int ex = 0;
    frexpf(mx, &ex);  // mx in [2^(ex-1), 2^ex)
    e = 15 - ex;
    e = e > 100 ? 100 : e < -100 ? -100 : e;  // 2^e stays a normal float
  }
  const float scale = ldexpf(1.0f, e);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[r * cols + i] = __float2half_rn(row[i] * scale);
  if (threadIdx.x == 0) row_unscale[r] = ldexpf(1.0f, -e);
}

// x [rows, cols] *= row_scale [rows]; grid-stride.
__global__ void scale_rows_f32_kernel(float *x, int64_t rows, int64_t cols, const float *row_scale) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= row_scale[i / cols];
}

// C [M, N] += bias [N]; grid-stride over the M*N elements of C.
__global__ void add_bias_f32_kernel(float *C, int64_t M, int64_t N, const float *bias) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    C[i] += bias[i % N];
}

}  // namespace

cudaError_t convert_f32_to_f16(const float *src, int64_t n, void *dst, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  convert_f32_to_f16_kernel<<<nt_elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(src, n, static_cast<__half *>(dst));
  return cudaGetLastError();
}

cudaError_t convert_f32_to_bf16(const float *src, int64_t n, void *dst, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  convert_f32_to_bf16_kernel<<<nt_elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(src, n, static_cast<__nv_bfloat16 *>(dst));
  return cudaGetLastError();
}

cudaError_t convert_rows_f32_to_f16_scaled(const float *src, int64_t rows, int64_t cols, void *dst, float *row_unscale, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const int threads = nt_row_threads(cols, 4, 1024);
  convert_rows_f32_to_f16_scaled_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(src, cols, static_cast<__half *>(dst), row_unscale);
  return cudaGetLastError();
}

cudaError_t scale_rows_f32(float *x, int64_t rows, int64_t cols, const float *row_scale, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  scale_rows_f32_kernel<<<nt_elementwise_blocks(rows * cols), kElementwiseThreads, 0, stream>>>(x, rows, cols, row_scale);
  return cudaGetLastError();
}

cudaError_t add_bias_f32(float *C, int64_t M, int64_t N, const float *bias, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  add_bias_f32_kernel<<<nt_elementwise_blocks(M * N), kElementwiseThreads, 0, stream>>>(C, M, N, bias);
  return cudaGetLastError();
}
