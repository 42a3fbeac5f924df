// Shared pieces of the CUDA backend: the backend context, error checks that record into
// last_error (never abort), warp/block reductions and bf16/f16 loads. Ops: cuda/<op>.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "ops/backend-abi.h"

struct nt_gemm_state;  // cuBLASLt handle + workspaces, private to gemm-cublas.cu

// One device context. Every op is enqueued on `stream`; copies to the host synchronize it.
struct nt_backend {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;     // our own stream-ordered pool, or null: plain cudaMalloc
  int max_smem_optin = 48 * 1024;   // largest dynamic shared memory a block may opt into
  char name[256] = {0};
  char last_error[1024] = {0};
  nt_gemm_state *gemm = nullptr;
};

// ---------------------------------------------------------------------------------------
// Errors: a failing op writes its reason into be->last_error and returns 1.

inline const char *nt_basename(const char *path) {
  const char *slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

inline int nt_fail(nt_backend *be, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(be->last_error, sizeof be->last_error, fmt, args);
  va_end(args);
  return 1;
}

inline int nt_cuda_fail(nt_backend *be, cudaError_t err, const char *what, const char *file, int line) {
  return nt_fail(be, "%s: %s (%s, %s:%d)", what, cudaGetErrorString(err), cudaGetErrorName(err), nt_basename(file), line);
}

// Evaluates a CUDA runtime call; on failure records it and returns 1 from the calling op.
#define NT_CUDA_CHECK(be, call)                                                         \
  do {                                                                                  \
    const cudaError_t nt_err_ = (call);                                                 \
    if (nt_err_ != cudaSuccess) return nt_cuda_fail((be), nt_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations (and earlier asynchronous faults).
#define NT_CUDA_CHECK_LAUNCH(be, kernel_name)                                           \
  do {                                                                                  \
    const cudaError_t nt_err_ = cudaGetLastError();                                     \
    if (nt_err_ != cudaSuccess) return nt_cuda_fail((be), nt_err_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

// The CUDA current device is per host thread and the engine calls from worker threads, so
// every entry point makes the backend's device current (cudaGetDevice is a cheap query).
inline cudaError_t nt_use_device(const nt_backend *be) {
  int current = -1;
  cudaError_t err = cudaGetDevice(&current);
  if (err != cudaSuccess || current != be->device) err = cudaSetDevice(be->device);
  return err;
}
#define NT_CUDA_ENTER(be) NT_CUDA_CHECK(be, nt_use_device(be))

// Device memory, stream-ordered on be->stream when the device has memory pools (the memory is
// usable by everything enqueued after the allocation; a free waits for the work enqueued
// before it), plain cudaMalloc / cudaFree otherwise.
inline cudaError_t nt_device_malloc(nt_backend *be, void **p, size_t bytes) {
  return be->pool ? cudaMallocFromPoolAsync(p, bytes, be->pool, be->stream) : cudaMalloc(p, bytes);
}
inline cudaError_t nt_device_free(nt_backend *be, void *p) {
  if (be->pool) return cudaFreeAsync(p, be->stream);
  // Without pools, wait for the ops that may still read or write the buffer.
  const cudaError_t err = cudaStreamSynchronize(be->stream);
  return err != cudaSuccess ? err : cudaFree(p);
}

// ---------------------------------------------------------------------------------------
// Launch helpers.

constexpr int kWarp = 32;

inline int64_t nt_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads for a one-block-per-row kernel: about `per_thread` elements each, a whole number of
// warps (the block reductions need full warps), at most `max_threads`.
inline int nt_row_threads(int64_t width, int per_thread, int max_threads) {
  int64_t t = nt_ceil_div(nt_ceil_div(width, per_thread), kWarp) * kWarp;
  if (t < kWarp) t = kWarp;
  if (t > max_threads) t = max_threads;
  return static_cast<int>(t);
}

// Blocks for a grid-stride elementwise kernel of 256 threads: one element per thread up to
// 65,536 blocks (16 M threads, ~60x what an H100 keeps resident), then each thread loops.
constexpr int kElementwiseThreads = 256;
inline unsigned nt_elementwise_blocks(int64_t n) {
  const int64_t blocks = nt_ceil_div(n, kElementwiseThreads);
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

// ---------------------------------------------------------------------------------------
// Loads of weights in their stored dtype, widened to float.

__device__ __forceinline__ float nt_load(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float nt_load(const __half *p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float nt_load(const __nv_bfloat16 *p, int64_t i) { return __bfloat162float(p[i]); }

// ---------------------------------------------------------------------------------------
// Reductions. Warp versions need all 32 lanes; block versions need blockDim.x a multiple of
// 32 (<= 1024), are called by every thread, and return the result to every thread.

__device__ __forceinline__ float warp_reduce_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_reduce_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float block_reduce_sum(float v) {
  __shared__ float partial[kWarp];  // one per warp
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_reduce_sum(v);
  __syncthreads();  // a previous reduction in this kernel may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  // Every warp folds the partials itself: the total reaches all threads without a third barrier.
  return warp_reduce_sum(lane < warps ? partial[lane] : 0.0f);
}

__device__ __forceinline__ float block_reduce_max(float v) {
  __shared__ float partial[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_reduce_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  return warp_reduce_max(lane < warps ? partial[lane] : -INFINITY);
}
