// Rotary position embedding in place, HF rotate-half convention, with left padding.
// Reference: native/ops/elementwise.cc (rope_f32).
#include "common.cuh"
#include "ops.cuh"

namespace {

// x [B, T, heads, D]: the pair (x[i], x[i + D/2]) of every head of row (b, t) turns by
// angle = inv_freq[i] * (float)(pos0 + t - pad[b]).
// One block per (b, t); thread i owns frequency i, computes cos/sin once and applies them to
// every head, so consecutive threads touch consecutive floats of each head (coalesced).
// The angle is formed in float32 as HF does (inv_freq @ position_ids), then cos/sin run in
// double and round to float like the CPU's std::cos(double): bit-for-bit the CPU's factors.
// Double is cheap here: B*T*D/2 evaluations against B*T*heads*D loads and stores.
__global__ void rope_f32_kernel(float *x, int64_t T, int64_t heads, int64_t D, const float *inv_freq, int64_t pos0,
                                const int32_t *pad) {
  const int64_t row = blockIdx.x, b = row / T, t = row % T;
  const int64_t half = D / 2;
  const float position = static_cast<float>(pos0 + t - (pad ? pad[b] : 0));
  float *xr = x + row * heads * D;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = inv_freq[i] * position;
    const float c = static_cast<float>(cos(static_cast<double>(angle)));
    const float s = static_cast<float>(sin(static_cast<double>(angle)));
    for (int64_t h = 0; h < heads; ++h) {
      float *v = xr + h * D;
      const float x1 = v[i], x2 = v[i + half];
      // _rn intrinsics: no FMA contraction, so the products round as on the CPU.
      v[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
      v[i + half] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    }
  }
}

}  // namespace

int nt_cuda_rope(nt_backend *be, float *x, int64_t B, int64_t T, int64_t heads, int64_t D, const float *inv_freq,
                 int64_t pos0, const int32_t *pad) {
  if (B < 0 || T < 0 || heads < 0 || D < 0 || B * T > INT32_MAX)
    return nt_fail(be, "rope: bad shape B=%lld T=%lld heads=%lld D=%lld", (long long)B, (long long)T, (long long)heads,
                   (long long)D);
  if (B == 0 || T == 0 || heads == 0 || D < 2) return 0;
  NT_CUDA_ENTER(be);
  // D/2 threads (64 for D = 128), at most 256; a block per token keeps the grid B*T wide.
  const int threads = nt_row_threads(D / 2, 1, 256);
  rope_f32_kernel<<<static_cast<unsigned>(B * T), threads, 0, be->stream>>>(x, T, heads, D, inv_freq, pos0, pad);
  NT_CUDA_CHECK_LAUNCH(be, "rope_f32_kernel");
  return 0;
}
