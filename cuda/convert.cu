// The GEMM's helper kernels, kept out of gemm-cublas.cu so they compile without cuBLAS:
// activation rounding to the weight dtype and the bias add. Reference: native/ops/gemm.cc.
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

cudaError_t add_bias_f32(float *C, int64_t M, int64_t N, const float *bias, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  add_bias_f32_kernel<<<nt_elementwise_blocks(M * N), kElementwiseThreads, 0, stream>>>(C, M, N, bias);
  return cudaGetLastError();
}
