// Self-test of the CUDA emulator (test/cuda-emu): one case per rule the emulator enforces (each
// must fail the way a GPU would) and cases for what it must get right (warp operations, shared
// memory, NaN-filled fresh memory). Built by build.mjs --cuda-dir test/cuda-emu/selftest; run.mjs
// runs each case in its own process (sticky errors poison a process, as on a device).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

__global__ void fill_kernel(float *p, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = 1.0f;
}
__global__ void overrun_kernel(float *p, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) p[i] = 1.0f;  // one element too many
}
__global__ void far_read_kernel(const float *p, float *out) { out[threadIdx.x] = p[threadIdx.x + (1 << 20)]; }
__global__ void diverge_kernel(float *p) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  p[threadIdx.x] = 1.0f;
}
__global__ void shuffle_kernel(float *p) { p[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1); }
__global__ void rotate_kernel(float *p) {
  extern __shared__ float s[];
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  p[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
__global__ void warp_ops_kernel(int *out) {
  const int lane = threadIdx.x % 32;
  int *o = out + threadIdx.x * 5;
  o[0] = __shfl_xor_sync(0xffffffffu, lane, 3);
  o[1] = __shfl_up_sync(0xffffffffu, lane, 2);
  o[2] = __shfl_down_sync(0xffffffffu, lane, 2);
  o[3] = __shfl_sync(0xffffffffu, lane, 7);
  o[4] = static_cast<int>(__ballot_sync(0xffffffffu, lane & 1));
}

int expect(cudaError_t got, cudaError_t want, const char *what) {
  if (got == want) return 0;
  std::printf("%s: got %s, want %s\n", what, cudaGetErrorName(got), cudaGetErrorName(want));
  return 1;
}

int run_case(const char *name) {
  float *d = nullptr;
  const int n = 100;
  if (cudaMalloc(reinterpret_cast<void **>(&d), n * sizeof(float)) != cudaSuccess) return 1;
  if (!std::strcmp(name, "threads")) {
    fill_kernel<<<1, 2048>>>(d, n);
    return expect(cudaGetLastError(), cudaErrorInvalidConfiguration, "2048 threads per block");
  }
  if (!std::strcmp(name, "grid")) {
    fill_kernel<<<dim3(1, 70000), 32>>>(d, n);
    return expect(cudaGetLastError(), cudaErrorInvalidConfiguration, "grid y 70000");
  }
  if (!std::strcmp(name, "smem")) {
    int bad = expect(cudaGetLastError(), cudaSuccess, "start");
    rotate_kernel<<<1, 64, 50 * 1024>>>(d);
    bad |= expect(cudaGetLastError(), cudaErrorInvalidValue, "50 KB of shared memory without the opt-in");
    bad |= expect(cudaFuncSetAttribute(rotate_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024), cudaErrorInvalidValue,
                  "an opt-in above the device's limit");
    cudaGetLastError();
    bad |= expect(cudaFuncSetAttribute(rotate_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 50 * 1024), cudaSuccess, "the opt-in");
    rotate_kernel<<<1, 64, 50 * 1024>>>(d);
    bad |= expect(cudaGetLastError(), cudaSuccess, "50 KB of shared memory with the opt-in");
    float h[64];
    bad |= expect(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess, "copy back");
    for (int i = 0; i < 64; ++i)
      if (h[i] != static_cast<float>((i + 1) % 64)) return std::printf("shared memory: p[%d] = %g\n", i, h[i]), 1;
    return bad;
  }
  if (!std::strcmp(name, "host-pointer")) {
    static float host[n];
    fill_kernel<<<1, 128>>>(host, n);
    return expect(cudaGetLastError(), cudaErrorIllegalAddress, "a host pointer argument");
  }
  if (!std::strcmp(name, "overrun")) {
    overrun_kernel<<<1, 128>>>(d, n);
    return expect(cudaDeviceSynchronize(), cudaErrorIllegalAddress, "a write one past the end");
  }
  if (!std::strcmp(name, "fault")) {  // aborts with a message naming the kernel
    far_read_kernel<<<1, 32>>>(d, d);
    cudaDeviceSynchronize();
    return 1;
  }
  if (!std::strcmp(name, "divergence")) {
    diverge_kernel<<<1, 64>>>(d);
    return expect(cudaDeviceSynchronize(), cudaErrorLaunchFailure, "threads exiting while others wait at __syncthreads");
  }
  if (!std::strcmp(name, "partial-warp")) {
    shuffle_kernel<<<1, 48>>>(d);
    return expect(cudaDeviceSynchronize(), cudaErrorLaunchFailure, "a full-mask shuffle in a 16-thread warp");
  }
  if (!std::strcmp(name, "copies")) {
    float *e = nullptr;
    float h[200];
    cudaMalloc(reinterpret_cast<void **>(&e), n * sizeof(float));
    int bad = expect(cudaMemcpy(e, d, n * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue, "HostToDevice from device memory");
    bad |= expect(cudaMemcpy(h, d, 200 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue, "a copy past the allocation");
    bad |= expect(cudaMemcpy2D(e, 8, d, 4, 8, 2, cudaMemcpyDeviceToDevice), cudaErrorInvalidPitchValue, "width above the pitch");
    bad |= expect(cudaFree(h), cudaErrorInvalidValue, "cudaFree of host memory");
    bad |= expect(cudaMemcpy(e, d, n * sizeof(float), cudaMemcpyDeviceToDevice), cudaSuccess, "a good copy");
    return bad;
  }
  if (!std::strcmp(name, "fresh-memory")) {
    float h[n];
    if (cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess) return 1;
    for (int i = 0; i < n; ++i)
      if (!std::isnan(h[i])) return std::printf("fresh memory: p[%d] = %g, not NaN\n", i, h[i]), 1;
    return 0;
  }
  if (!std::strcmp(name, "warp-ops")) {
    int *o = nullptr, h[64 * 5];
    cudaMalloc(reinterpret_cast<void **>(&o), sizeof h);
    warp_ops_kernel<<<1, 64>>>(o);
    if (cudaMemcpy(h, o, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess) return 1;
    for (int t = 0; t < 64; ++t) {
      const int l = t % 32, want[5] = {l ^ 3, l >= 2 ? l - 2 : l, l < 30 ? l + 2 : l, 7, static_cast<int>(0xAAAAAAAAu)};
      for (int k = 0; k < 5; ++k)
        if (h[t * 5 + k] != want[k]) return std::printf("warp op %d at thread %d: %d, want %d\n", k, t, h[t * 5 + k], want[k]), 1;
    }
    return 0;
  }
  std::printf("unknown case %s\n", name);
  return 2;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int nt_emu_selftest(const char *name) { return run_case(name); }
