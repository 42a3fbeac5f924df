// Residual adds and MLP activations (gelu tanh / erf, silu, relu; gated act(gate) * up).
// Reference: native/ops/elementwise.cc; the formulas are the same float expressions.
#include "activation.cuh"
#include "ops.cuh"

namespace {

// out [n] = a [n] + b [n] (out may alias a or b)
__global__ void add_f32_kernel(const float *a, const float *b, int64_t n, float *out) {
  NT_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

// x [n] = act(x), in place
template <nt_activation A>
__global__ void activation_f32_kernel(float *x, int64_t n) {
  NT_GRID_STRIDE(i, n) x[i] = activate<A>(x[i]);
}

// out [n] = act(gate [n]) * up [n]
template <nt_activation A>
__global__ void gated_activation_f32_kernel(const float *gate, const float *up, int64_t n, float *out) {
  NT_GRID_STRIDE(i, n) out[i] = activate<A>(gate[i]) * up[i];
}

template <nt_activation A>
cudaError_t activation_f32(float *x, int64_t n, cudaStream_t stream) {
  activation_f32_kernel<A><<<nt_elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(x, n);
  return cudaGetLastError();
}

template <nt_activation A>
cudaError_t gated_activation_f32(const float *gate, const float *up, int64_t n, float *out, cudaStream_t stream) {
  gated_activation_f32_kernel<A><<<nt_elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

}  // namespace

namespace {
__global__ void softcap_f32_kernel(float *x, int64_t n, float cap) {
  NT_GRID_STRIDE(i, n) {
    const float v = x[i];
    if (v != -INFINITY) x[i] = tanhf(v / cap) * cap;
  }
}
}  // namespace

int nt_cuda_softcap(nt_backend *be, float *x, int64_t n, float cap) {
  if (n < 0 || !(cap > 0.0f)) return nt_fail(be, "softcap: bad length %lld or cap %g", (long long)n, static_cast<double>(cap));
  if (n == 0) return 0;
  NT_CUDA_ENTER(be);
  softcap_f32_kernel<<<nt_elementwise_blocks(n), kElementwiseThreads, 0, be->stream>>>(x, n, cap);
  NT_CUDA_CHECK_LAUNCH(be, "softcap_f32_kernel");
  return 0;
}

int nt_cuda_add(nt_backend *be, const float *a, const float *b, int64_t n, float *out) {
  if (n < 0) return nt_fail(be, "add: bad length %lld", (long long)n);
  if (n == 0) return 0;
  NT_CUDA_ENTER(be);
  add_f32_kernel<<<nt_elementwise_blocks(n), kElementwiseThreads, 0, be->stream>>>(a, b, n, out);
  NT_CUDA_CHECK_LAUNCH(be, "add_f32_kernel");
  return 0;
}

int nt_cuda_activation(nt_backend *be, nt_activation act, float *x, int64_t n) {
  if (!known_activation(act)) return nt_fail(be, "unknown activation %d", static_cast<int>(act));
  if (n < 0) return nt_fail(be, "activation: bad length %lld", (long long)n);
  if (n == 0) return 0;
  NT_CUDA_ENTER(be);
  switch (act) {
    case NT_ACT_GELU_TANH: NT_CUDA_CHECK(be, activation_f32<NT_ACT_GELU_TANH>(x, n, be->stream)); break;
    case NT_ACT_GELU_ERF: NT_CUDA_CHECK(be, activation_f32<NT_ACT_GELU_ERF>(x, n, be->stream)); break;
    case NT_ACT_SILU: NT_CUDA_CHECK(be, activation_f32<NT_ACT_SILU>(x, n, be->stream)); break;
    case NT_ACT_RELU: NT_CUDA_CHECK(be, activation_f32<NT_ACT_RELU>(x, n, be->stream)); break;
  }
  return 0;
}

int nt_cuda_gated_activation(nt_backend *be, nt_activation act, const float *gate, const float *up, int64_t n, float *out) {
  if (!known_activation(act)) return nt_fail(be, "unknown activation %d", static_cast<int>(act));
  if (n < 0) return nt_fail(be, "gated_activation: bad length %lld", (long long)n);
  if (n == 0) return 0;
  NT_CUDA_ENTER(be);
  switch (act) {
    case NT_ACT_GELU_TANH: NT_CUDA_CHECK(be, gated_activation_f32<NT_ACT_GELU_TANH>(gate, up, n, out, be->stream)); break;
    case NT_ACT_GELU_ERF: NT_CUDA_CHECK(be, gated_activation_f32<NT_ACT_GELU_ERF>(gate, up, n, out, be->stream)); break;
    case NT_ACT_SILU: NT_CUDA_CHECK(be, gated_activation_f32<NT_ACT_SILU>(gate, up, n, out, be->stream)); break;
    case NT_ACT_RELU: NT_CUDA_CHECK(be, gated_activation_f32<NT_ACT_RELU>(gate, up, n, out, be->stream)); break;
  }
  return 0;
}
