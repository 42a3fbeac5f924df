// The instrumented attention path, taken while hook_attn_scores / hook_pattern are hooked:
// masked scores, row softmax and pattern . V as three ops, so hooks can read and edit between.
// Reference: native/ops/attention.cc (attention_scores_f32, softmax_rows_f32, attention_apply_f32).
#include "attention.cuh"
#include "ops.cuh"

namespace {

struct InstrParams {
  int64_t T, H, G, D, S, KV, q0, group;  // group = H / G
  float scale;
  int window;
  const int32_t *pad;  // [B] or null
};

// scores [B, H, T, KV] = q . k^T * scale, masked entries -inf. One block per score row
// (b, h, t), 8 warps; warp w scores keys j = w, w + 8, ...: its lanes split D, so each key row
// is one coalesced read, and a warp sum finishes the dot product. The query row sits in shared
// memory ([D] floats, dynamic).
constexpr int kScoresWarps = 8;

__global__ void __launch_bounds__(kScoresWarps * kWarp) attention_scores_f32_kernel(InstrParams p, const float *q, const float *k,
                                                                                    float *scores) {
  extern __shared__ float q_row[];  // [D]
  const int64_t row = blockIdx.x, item = row / p.T, t = row % p.T, b = item / p.H, h = item % p.H, g = h / p.group;
  const float *qr = q + ((b * p.T + t) * p.H + h) * p.D;
  for (int64_t d = threadIdx.x; d < p.D; d += blockDim.x) q_row[d] = qr[d];
  __syncthreads();

  int64_t lo, hi;
  attention_key_range(p.q0 + t, p.pad ? p.pad[b] : 0, p.window, &lo, &hi);
  float *out = scores + row * p.KV;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t j = warp; j < p.KV; j += kScoresWarps) {
    if (j < lo || j > hi) {  // warp-uniform
      if (lane == 0) out[j] = -INFINITY;
      continue;
    }
    const float *kr = k + ((b * p.S + j) * p.G + g) * p.D;
    float dot = 0.0f;
    for (int64_t d = lane; d < p.D; d += kWarp) dot += q_row[d] * kr[d];
    dot = warp_reduce_sum(dot);
    if (lane == 0) out[j] = dot * p.scale;
  }
}

// x [rows, n] in place: each row becomes its softmax; an all -inf row becomes zeros (TL maps
// that NaN row to 0). One block per row; max, then exp and sum, then scale (three passes, the
// CPU's order of operations).
__global__ void softmax_rows_f32_kernel(float *x, int64_t n) {
  float *row = x + static_cast<int64_t>(blockIdx.x) * n;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_reduce_max(mx);
  if (mx == -INFINITY) {  // block-uniform
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) row[j] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / block_reduce_sum(sum);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) row[j] *= inv;
}

// z [B, T, H, D] = pattern [B, H, T, KV] . v [B, S, G, D] over all KV keys (an edited pattern may
// put weight outside the mask); zero weights are skipped as on the CPU. One block per pattern
// row with one thread per output dim (V reads coalesced along D); the row's weights are staged
// through shared memory 256 at a time.
constexpr int kApplyChunk = 256;
constexpr int kApplyMaxD = 1024;

__global__ void attention_apply_f32_kernel(InstrParams p, const float *pattern, const float *v, float *z) {
  __shared__ float w[kApplyChunk];
  const int64_t row = blockIdx.x, item = row / p.T, t = row % p.T, b = item / p.H, h = item % p.H, g = h / p.group;
  const float *pr = pattern + row * p.KV;
  const int64_t d = threadIdx.x;
  float acc = 0.0f;
  for (int64_t j0 = 0; j0 < p.KV; j0 += kApplyChunk) {
    const int n = static_cast<int>(p.KV - j0 < kApplyChunk ? p.KV - j0 : kApplyChunk);
    __syncthreads();  // the previous chunk is consumed
    for (int i = threadIdx.x; i < n; i += blockDim.x) w[i] = pr[j0 + i];
    __syncthreads();
    if (d < p.D) {
      const float *vj = v + ((b * p.S + j0) * p.G + g) * p.D + d;
      const int64_t stride = p.G * p.D;  // one key further
      for (int i = 0; i < n; ++i) {
        const float wi = w[i];
        if (wi != 0.0f) acc += wi * vj[i * stride];
      }
    }
  }
  if (d < p.D) z[((b * p.T + t) * p.H + h) * p.D + d] = acc;
}

InstrParams params_of(const nt_attention_shape *s) {
  InstrParams p;
  p.T = s->T;
  p.H = s->H;
  p.G = s->G;
  p.D = s->D;
  p.S = s->S;
  p.KV = s->KV;
  p.q0 = s->q0;
  p.group = s->H / s->G;
  p.scale = s->scale;
  p.window = s->window;
  p.pad = s->pad;
  return p;
}

}  // namespace

int nt_cuda_attention_scores(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, float *scores) {
  bool empty = false;
  if (check_attention_shape(be, "attention_scores", s, &empty)) return 1;
  if (empty || s->KV == 0) return 0;
  const int64_t rows = s->B * s->H * s->T;
  if (rows > INT32_MAX) return nt_fail(be, "attention_scores: %lld score rows exceed the grid", (long long)rows);
  const size_t smem = sizeof(float) * static_cast<size_t>(s->D);
  if (smem > static_cast<size_t>(be->max_smem_optin)) return nt_fail(be, "attention_scores: head dim %lld is too large", (long long)s->D);
  NT_CUDA_ENTER(be);
  if (smem > 48 * 1024)
    NT_CUDA_CHECK(be, cudaFuncSetAttribute(attention_scores_f32_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  attention_scores_f32_kernel<<<static_cast<unsigned>(rows), kScoresWarps * kWarp, smem, be->stream>>>(params_of(s), q, k, scores);
  NT_CUDA_CHECK_LAUNCH(be, "attention_scores_f32_kernel");
  return 0;
}

int nt_cuda_softmax_rows(nt_backend *be, float *x, int64_t rows, int64_t n) {
  if (rows < 0 || n < 0 || rows > INT32_MAX) return nt_fail(be, "softmax_rows: bad shape rows=%lld n=%lld", (long long)rows, (long long)n);
  if (rows == 0 || n == 0) return 0;
  NT_CUDA_ENTER(be);
  // ~4 elements per thread up to 1024 threads: KV = 4096 fills a block, longer rows loop.
  const int threads = nt_row_threads(n, 4, 1024);
  softmax_rows_f32_kernel<<<static_cast<unsigned>(rows), threads, 0, be->stream>>>(x, n);
  NT_CUDA_CHECK_LAUNCH(be, "softmax_rows_f32_kernel");
  return 0;
}

int nt_cuda_attention_apply(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, float *z) {
  bool empty = false;
  if (check_attention_shape(be, "attention_apply", s, &empty)) return 1;
  if (empty) return 0;
  if (s->D > kApplyMaxD) return nt_fail(be, "attention_apply: head dim %lld is above %d", (long long)s->D, kApplyMaxD);
  const int64_t rows = s->B * s->H * s->T;
  if (rows > INT32_MAX) return nt_fail(be, "attention_apply: %lld pattern rows exceed the grid", (long long)rows);
  NT_CUDA_ENTER(be);
  const int threads = nt_row_threads(s->D, 1, kApplyMaxD);
  attention_apply_f32_kernel<<<static_cast<unsigned>(rows), threads, 0, be->stream>>>(params_of(s), pattern, v, z);
  NT_CUDA_CHECK_LAUNCH(be, "attention_apply_f32_kernel");
  return 0;
}
