// Token and learned-position embeddings from F32/F16/BF16 tables into float32 rows.
// Reference: native/ops/cpu-backend.cc (cpu_embed, cpu_add_positions) and engine/model.cc.
#include "common.cuh"
#include "ops.cuh"

namespace {

// One block per output row; the threads stride along d so reads of the table row and writes
// of out are both coalesced. The row count goes in gridDim.x (up to 2^31 - 1).
constexpr int kEmbedThreads = 256;

// out [M, d] = table [V, d] row tokens[m]
template <class W>
__device__ void embed_row(const W *table, const int32_t *tokens, int64_t d, float *out) {
  const int64_t m = blockIdx.x;
  const W *row = table + static_cast<int64_t>(tokens[m]) * d;
  float *o = out + m * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = nt_load(row, i);
}

__global__ void embed_f32_kernel(const float *table, const int32_t *tokens, int64_t d, float *out) { embed_row(table, tokens, d, out); }
__global__ void embed_f16_kernel(const __half *table, const int32_t *tokens, int64_t d, float *out) { embed_row(table, tokens, d, out); }
__global__ void embed_bf16_kernel(const __nv_bfloat16 *table, const int32_t *tokens, int64_t d, float *out) {
  embed_row(table, tokens, d, out);
}

// x [B, T, d] row (b, t) += table [n_ctx, d] row max(0, pos0 + t - pad[b]): learned positions
// count real tokens; left padding clamps to 0 (nothing attends to it).
template <class W>
__device__ void add_positions_row(const W *table, int64_t T, int64_t d, int64_t pos0, const int32_t *pad, float *x) {
  const int64_t row = blockIdx.x, b = row / T, t = row % T;
  int64_t p = pos0 + t - (pad ? pad[b] : 0);
  if (p < 0) p = 0;
  const W *src = table + p * d;
  float *o = x + row * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] += nt_load(src, i);
}

__global__ void add_positions_f32_kernel(const float *table, int64_t T, int64_t d, int64_t pos0, const int32_t *pad, float *x) {
  add_positions_row(table, T, d, pos0, pad, x);
}
__global__ void add_positions_f16_kernel(const __half *table, int64_t T, int64_t d, int64_t pos0, const int32_t *pad, float *x) {
  add_positions_row(table, T, d, pos0, pad, x);
}
__global__ void add_positions_bf16_kernel(const __nv_bfloat16 *table, int64_t T, int64_t d, int64_t pos0, const int32_t *pad,
                                          float *x) {
  add_positions_row(table, T, d, pos0, pad, x);
}

cudaError_t embed(const void *table, nt_dtype dtype, const int32_t *tokens, int64_t M, int64_t d, float *out, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(M);
  switch (dtype) {
    case NT_F32: embed_f32_kernel<<<blocks, kEmbedThreads, 0, stream>>>(static_cast<const float *>(table), tokens, d, out); break;
    case NT_F16: embed_f16_kernel<<<blocks, kEmbedThreads, 0, stream>>>(static_cast<const __half *>(table), tokens, d, out); break;
    case NT_BF16:
      embed_bf16_kernel<<<blocks, kEmbedThreads, 0, stream>>>(static_cast<const __nv_bfloat16 *>(table), tokens, d, out);
      break;
    default:  // packed layouts belong to other backends (callers check known_dtype first)
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t add_positions(const void *table, nt_dtype dtype, int64_t B, int64_t T, int64_t d, int64_t pos0, const int32_t *pad,
                          float *x, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(B * T);
  switch (dtype) {
    case NT_F32:
      add_positions_f32_kernel<<<blocks, kEmbedThreads, 0, stream>>>(static_cast<const float *>(table), T, d, pos0, pad, x);
      break;
    case NT_F16:
      add_positions_f16_kernel<<<blocks, kEmbedThreads, 0, stream>>>(static_cast<const __half *>(table), T, d, pos0, pad, x);
      break;
    case NT_BF16:
      add_positions_bf16_kernel<<<blocks, kEmbedThreads, 0, stream>>>(static_cast<const __nv_bfloat16 *>(table), T, d, pos0, pad, x);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

bool known_dtype(nt_dtype t) { return t == NT_F32 || t == NT_F16 || t == NT_BF16; }

}  // namespace

int nt_cuda_embed(nt_backend *be, const void *table, nt_dtype dtype, const int32_t *tokens, int64_t M, int64_t d, float *out) {
  if (!known_dtype(dtype)) return nt_fail(be, "embed: unknown dtype %d", static_cast<int>(dtype));
  if (M < 0 || d < 0 || M > INT32_MAX) return nt_fail(be, "embed: bad shape M=%lld d=%lld", (long long)M, (long long)d);
  if (M == 0 || d == 0) return 0;
  NT_CUDA_ENTER(be);
  NT_CUDA_CHECK(be, embed(table, dtype, tokens, M, d, out, be->stream));
  return 0;
}

int nt_cuda_add_positions(nt_backend *be, const void *table, nt_dtype dtype, int64_t B, int64_t T, int64_t d, int64_t pos0,
                          const int32_t *pad, float *x) {
  if (!known_dtype(dtype)) return nt_fail(be, "add_positions: unknown dtype %d", static_cast<int>(dtype));
  if (B < 0 || T < 0 || d < 0 || B * T > INT32_MAX)
    return nt_fail(be, "add_positions: bad shape B=%lld T=%lld d=%lld", (long long)B, (long long)T, (long long)d);
  if (B == 0 || T == 0 || d == 0) return 0;
  NT_CUDA_ENTER(be);
  NT_CUDA_CHECK(be, add_positions(table, dtype, B, T, d, pos0, pad, x, be->stream));
  return 0;
}
