// Backward of the elementwise ops: activation, gated activation and soft-capping (vector-Jacobian
// products, ABI 3). Reference: the CPU backend's backward ops; formulas: native/ops/backend-abi.h.
#include "activation.cuh"
#include "ops.cuh"

namespace {

// dx [n] = dy [n] * f'(x [n]) (dx may alias dy: each element is read before it is written)
template <nt_activation A>
__global__ void activation_backward_f32_kernel(const float *x, const float *dy, int64_t n, float *dx) {
  NT_GRID_STRIDE(i, n) dx[i] = dy[i] * activate_grad<A>(x[i]);
}

// out = f(gate) * up: dgate [n] = dout * up * f'(gate) (when dgate is not null), dup [n] = dout * f(gate)
template <nt_activation A>
__global__ void gated_activation_backward_f32_kernel(const float *gate, const float *up, const float *dout, int64_t n, float *dgate,
                                                     float *dup) {
  NT_GRID_STRIDE(i, n) {
    const float g = gate[i], d = dout[i];
    if (dgate) dgate[i] = d * up[i] * activate_grad<A>(g);
    dup[i] = d * activate<A>(g);
  }
}

// y = cap * tanh(x / cap): dx [n] = dy * (1 - (y / cap)^2), 0 where y is -inf (a masked score)
__global__ void softcap_backward_f32_kernel(const float *y, const float *dy, int64_t n, float cap, float *dx) {
  NT_GRID_STRIDE(i, n) {
    const float v = y[i];
    if (v == -INFINITY) {
      dx[i] = 0.0f;
    } else {
      const float t = v / cap;
      dx[i] = dy[i] * (1.0f - t * t);
    }
  }
}

template <nt_activation A>
cudaError_t activation_backward_f32(const float *x, const float *dy, int64_t n, float *dx, cudaStream_t stream) {
  activation_backward_f32_kernel<A><<<nt_elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(x, dy, n, dx);
  return cudaGetLastError();
}

template <nt_activation A>
cudaError_t gated_activation_backward_f32(const float *gate, const float *up, const float *dout, int64_t n, float *dgate, float *dup,
                                          cudaStream_t stream) {
  gated_activation_backward_f32_kernel<A><<<nt_elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(gate, up, dout, n, dgate, dup);
  return cudaGetLastError();
}

}  // namespace

int nt_cuda_activation_backward(nt_backend *be, nt_activation act, const float *x, const float *dy, int64_t n, float *dx) {
  if (!known_activation(act)) return nt_fail(be, "activation_backward: unknown activation %d", static_cast<int>(act));
  if (n < 0) return nt_fail(be, "activation_backward: bad length %lld", (long long)n);
  if (n == 0) return 0;
  NT_CUDA_ENTER(be);
  switch (act) {
    case NT_ACT_GELU_TANH: NT_CUDA_CHECK(be, activation_backward_f32<NT_ACT_GELU_TANH>(x, dy, n, dx, be->stream)); break;
    case NT_ACT_GELU_ERF: NT_CUDA_CHECK(be, activation_backward_f32<NT_ACT_GELU_ERF>(x, dy, n, dx, be->stream)); break;
    case NT_ACT_SILU: NT_CUDA_CHECK(be, activation_backward_f32<NT_ACT_SILU>(x, dy, n, dx, be->stream)); break;
    case NT_ACT_RELU: NT_CUDA_CHECK(be, activation_backward_f32<NT_ACT_RELU>(x, dy, n, dx, be->stream)); break;
  }
  return 0;
}

int nt_cuda_gated_activation_backward(nt_backend *be, nt_activation act, const float *gate, const float *up, const float *dout, int64_t n,
                                      float *dgate, float *dup) {
  if (!known_activation(act)) return nt_fail(be, "gated_activation_backward: unknown activation %d", static_cast<int>(act));
  if (n < 0) return nt_fail(be, "gated_activation_backward: bad length %lld", (long long)n);
  if (n == 0) return 0;
  NT_CUDA_ENTER(be);
  switch (act) {
    case NT_ACT_GELU_TANH: NT_CUDA_CHECK(be, gated_activation_backward_f32<NT_ACT_GELU_TANH>(gate, up, dout, n, dgate, dup, be->stream)); break;
    case NT_ACT_GELU_ERF: NT_CUDA_CHECK(be, gated_activation_backward_f32<NT_ACT_GELU_ERF>(gate, up, dout, n, dgate, dup, be->stream)); break;
    case NT_ACT_SILU: NT_CUDA_CHECK(be, gated_activation_backward_f32<NT_ACT_SILU>(gate, up, dout, n, dgate, dup, be->stream)); break;
    case NT_ACT_RELU: NT_CUDA_CHECK(be, gated_activation_backward_f32<NT_ACT_RELU>(gate, up, dout, n, dgate, dup, be->stream)); break;
  }
  return 0;
}

int nt_cuda_softcap_backward(nt_backend *be, const float *y, const float *dy, int64_t n, float cap, float *dx) {
  if (n < 0 || !(cap > 0.0f)) return nt_fail(be, "softcap_backward: bad length %lld or cap %g", (long long)n, static_cast<double>(cap));
  if (n == 0) return 0;
  NT_CUDA_ENTER(be);
  softcap_backward_f32_kernel<<<nt_elementwise_blocks(n), kElementwiseThreads, 0, be->stream>>>(y, dy, n, cap, dx);
  NT_CUDA_CHECK_LAUNCH(be, "softcap_backward_f32_kernel");
  return 0;
}
