// The MLP activations (gelu tanh / erf, silu, relu) as device functions, shared by the forward
// (elementwise.cu) and backward (backward-elementwise.cu) kernels. Reference: native/ops/elementwise.cc.
#pragma once

#include "common.cuh"

__device__ __forceinline__ float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float relu(float x) { return x > 0.0f ? x : 0.0f; }

template <nt_activation A>
__device__ __forceinline__ float activate(float x) {
  if (A == NT_ACT_GELU_TANH) return gelu_tanh(x);
  if (A == NT_ACT_GELU_ERF) return gelu_erf(x);
  if (A == NT_ACT_SILU) return silu(x);
  return relu(x);
}

// f'(x), the derivatives of the functions above (relu'(0) = 0, as autograd takes it).
template <nt_activation A>
__device__ __forceinline__ float activate_grad(float x) {
  if (A == NT_ACT_GELU_TANH) {
    const float k = 0.7978845608028654f;
    const float t = tanhf(k * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
  }
  if (A == NT_ACT_GELU_ERF) {
    const float pdf = 0.3989422804014327f * expf(-0.5f * x * x);  // standard normal density
    return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) + x * pdf;
  }
  if (A == NT_ACT_SILU) {
    const float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
  }
  return x > 0.0f ? 1.0f : 0.0f;
}

inline bool known_activation(nt_activation act) {
  return act == NT_ACT_GELU_TANH || act == NT_ACT_GELU_ERF || act == NT_ACT_SILU || act == NT_ACT_RELU;
}

// All elementwise kernels are grid-stride loops over n floats (see nt_elementwise_blocks).
#define NT_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)
