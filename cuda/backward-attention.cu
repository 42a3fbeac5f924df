// Backward of the instrumented attention path (ABI 3): softmax_rows_backward, and the four
// per-head matrix products of attention_apply_backward (dpattern, dv) and
// attention_scores_backward (dq, dk) through one shared-memory tiled kernel. Formulas:
// native/ops/backend-abi.h; reference: the CPU backend.
#include "attention.cuh"
#include "ops.cuh"

namespace {

// p [rows, n] = softmax (the forward output): dx [rows, n] = p * (dp - sum_j p_j dp_j). One block
// per row. dx may alias dp: each thread rewrites only the elements it read, after the reduction.
__global__ void softmax_rows_backward_f32_kernel(const float *p, const float *dp, int64_t n, float *dx) {
  const int64_t off = static_cast<int64_t>(blockIdx.x) * n;
  const float *pr = p + off, *dr = dp + off;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) dot += pr[j] * dr[j];
  dot = block_reduce_sum(dot);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) dx[off + j] = pr[j] * (dr[j] - dot);
}

// ---------------------------------------------------------------------------------------
// C[m, n] = alpha * sum over summed heads hh and k of A(m, k) * B(k, n), per (batch row, head):
// the four attention-backward products are this with different strides.
//   dpattern[b, h]   (T x KV) = dz[b, :, h, :] (T x D)          . v[b, :, g, :]^T (D x KV)
//   dv[b, :, g, :]  (KV x D)  = sum_{h in g} pattern[b, h]^T      . dz[b, :, h, :]
//   dq[b, :, h, :]   (T x D)  = scale * mask(dscores[b, h])       . k[b, :, g, :]
//   dk[b, :, g, :]  (KV x D)  = scale * sum_{h in g} mask(dscores[b, h])^T . q[b, :, h, :]
// Tiles of 64 x 64 outputs, 16 reduction steps per stage, 256 threads each computing 4 x 4
// outputs strided by 16 (the warp's shared memory reads are broadcasts (A) and 16 consecutive
// words (B), and its stores 16 consecutive floats per row). A stage stages A[64 x 16] and
// B[16 x 64] in shared memory, loaded along whichever axis is contiguous in memory so global
// reads coalesce. Napkin math at seq 1024 (Llama 3 8B: H 32, D 128): each product is
// 32 * 1024 * 1024 * 128 * 2 = 8.6 GFLOP, a few ms at the ~5-10 TFLOP/s such an FP32 tile
// reaches on an H100, next to the ~130 MB dscores each one reads.
constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kTileThreads = 256;

// Where an operand of one (batch row, query head h, kv head g) starts, in floats.
struct Strides {
  int64_t b, h, g;        // per batch row, per query head, per kv head
  int64_t first, second;  // per step of the element's two indices: A (m, k), B (k, n), C (m, n)
  __device__ __forceinline__ int64_t base(int64_t bi, int64_t hi, int64_t gi) const { return bi * b + hi * h + gi * g; }
};

// Masking of A by the attention mask (dscores): A(m, k) is dscores[i = m, j = k] (kMaskQueryKey)
// or dscores[i = k, j = m] (kMaskKeyQuery); masked entries read as 0.
enum MaskMode { kMaskNone = 0, kMaskQueryKey = 1, kMaskKeyQuery = 2 };

struct TileParams {
  int64_t M, N, K;       // per head
  int64_t heads_out;     // grid.z = B * heads_out
  int64_t group;         // H / G
  int sum_group;         // 1: the output is per kv head and sums the group's query heads; 0: per query head
  float alpha;
  Strides a, b, c;
  // Mask geometry (kMaskQueryKey / kMaskKeyQuery)
  int64_t q0, KV;
  int window;
  const int32_t *pad;
};

__device__ __forceinline__ bool key_visible(int64_t i, int64_t j, int64_t q0, int64_t KV, int64_t pad_b, int window) {
  const int64_t qi = q0 + i;
  return j < KV && j >= pad_b && j <= qi && (window <= 0 || qi - j < window);
}

// The reduction range [*k_lo, *k_hi) that can hold unmasked entries for output rows [m0, m1):
// fully masked stages (the causal half, outside a window, padding) are skipped.
template <int MASK>
__device__ __forceinline__ void reduction_range(const TileParams &p, int64_t m0, int64_t m1, int64_t pad_b, int64_t *k_lo, int64_t *k_hi) {
  *k_lo = 0;
  *k_hi = p.K;
  if (MASK == kMaskQueryKey) {  // rows are queries i, the reduction runs over keys j
    int64_t lo = pad_b;
    if (p.window > 0 && p.q0 + m0 - p.window + 1 > lo) lo = p.q0 + m0 - p.window + 1;
    const int64_t hi = p.q0 + m1;  // keys j <= q0 + (m1 - 1)
    *k_lo = lo;
    *k_hi = hi < p.K ? hi : p.K;
  } else if (MASK == kMaskKeyQuery) {  // rows are keys j, the reduction runs over queries i
    if (m1 <= pad_b) {
      *k_hi = 0;  // keys in the padding: no query sees them
      return;
    }
    const int64_t lo = m0 - p.q0;  // q0 + i >= j
    *k_lo = lo > 0 ? lo : 0;
    if (p.window > 0) {
      const int64_t hi = m1 - 1 + p.window - p.q0;  // q0 + i - j < window
      if (hi < *k_hi) *k_hi = hi;
    }
  }
  if (*k_lo > *k_hi) *k_lo = *k_hi;
}

template <bool A_M_CONTIG, bool B_N_CONTIG, int MASK>
__global__ void __launch_bounds__(kTileThreads) attention_grad_tile_f32_kernel(TileParams p, const float *A, const float *B, float *C) {
  __shared__ float As[kTileK][kTileM + 1];  // +1: a k-contiguous load's column writes hit distinct banks
  __shared__ float Bs[kTileK][kTileN + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTileM, n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int64_t z = blockIdx.z, bi = z / p.heads_out, ho = z % p.heads_out;
  const int64_t pad_b = p.pad ? p.pad[bi] : 0;
  const int64_t m1 = m0 + kTileM < p.M ? m0 + kTileM : p.M;
  int64_t k_lo, k_hi;
  reduction_range<MASK>(p, m0, m1, pad_b, &k_lo, &k_hi);
  k_lo -= k_lo % kTileK;  // stage boundaries stay aligned to the tile

  float acc[4][4] = {};
  const int n_heads = p.sum_group ? static_cast<int>(p.group) : 1;
  for (int hh = 0; hh < n_heads; ++hh) {
    const int64_t h = p.sum_group ? ho * p.group + hh : ho, g = h / p.group;
    const float *Ah = A + p.a.base(bi, h, g), *Bh = B + p.b.base(bi, h, g);
    for (int64_t k0 = k_lo; k0 < k_hi; k0 += kTileK) {
      __syncthreads();  // every thread is done with the previous stage before it is overwritten
      for (int e = tid; e < kTileM * kTileK; e += kTileThreads) {
        const int mm = A_M_CONTIG ? e % kTileM : e / kTileK, kk = A_M_CONTIG ? e / kTileM : e % kTileK;
        const int64_t m = m0 + mm, k = k0 + kk;
        float val = 0.0f;
        if (m < p.M && k < p.K) {
          bool visible = true;
          if (MASK == kMaskQueryKey) visible = key_visible(m, k, p.q0, p.KV, pad_b, p.window);
          if (MASK == kMaskKeyQuery) visible = key_visible(k, m, p.q0, p.KV, pad_b, p.window);
          if (visible) val = Ah[m * p.a.first + k * p.a.second];
        }
        As[kk][mm] = val;
      }
      for (int e = tid; e < kTileK * kTileN; e += kTileThreads) {
        const int nn = B_N_CONTIG ? e % kTileN : e / kTileK, kk = B_N_CONTIG ? e / kTileN : e % kTileK;
        const int64_t n = n0 + nn, k = k0 + kk;
        Bs[kk][nn] = n < p.N && k < p.K ? Bh[k * p.b.first + n * p.b.second] : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; ++kk) {
        float a[4], bv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) a[r] = As[kk][ty + 16 * r];
#pragma unroll
        for (int c = 0; c < 4; ++c) bv[c] = Bs[kk][tx + 16 * c];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[r][c] += a[r] * bv[c];
      }
    }
  }
  const int64_t h0 = p.sum_group ? ho * p.group : ho;
  float *Ch = C + p.c.base(bi, h0, h0 / p.group);
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t m = m0 + ty + 16 * r;
    if (m >= p.M) continue;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t n = n0 + tx + 16 * c;
      if (n < p.N) Ch[m * p.c.first + n * p.c.second] = p.alpha * acc[r][c];
    }
  }
}

// Launches one product; the caller has checked the shape.
template <bool A_M_CONTIG, bool B_N_CONTIG, int MASK>
cudaError_t attention_grad_tile(const TileParams &p, int64_t B, const float *A, const float *Bm, float *C, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(nt_ceil_div(p.N, kTileN)), static_cast<unsigned>(nt_ceil_div(p.M, kTileM)),
                  static_cast<unsigned>(B * p.heads_out));
  attention_grad_tile_f32_kernel<A_M_CONTIG, B_N_CONTIG, MASK><<<grid, kTileThreads, 0, stream>>>(p, A, Bm, C);
  return cudaGetLastError();
}

TileParams tile_params(const nt_attention_shape *s, int64_t M, int64_t N, int64_t K, bool per_kv_head, float alpha) {
  TileParams p = {};
  p.M = M;
  p.N = N;
  p.K = K;
  p.group = s->H / s->G;
  p.sum_group = per_kv_head ? 1 : 0;
  p.heads_out = per_kv_head ? s->G : s->H;
  p.alpha = alpha;
  p.q0 = s->q0;
  p.KV = s->KV;
  p.window = s->window;
  p.pad = s->pad;
  return p;
}

// Grid limits: y (row tiles) and z (batch rows x heads) are at most 65535.
int check_tile_grid(nt_backend *be, const char *op, const nt_attention_shape *s) {
  const int64_t rows = s->T > s->KV ? s->T : s->KV;
  if (nt_ceil_div(rows, kTileM) > 65535 || s->B * s->H > 65535)
    return nt_fail(be, "%s: %lld positions x %lld batch rows x %lld heads exceed the grid", op, (long long)rows, (long long)s->B,
                   (long long)s->H);
  return 0;
}

// Rows KV .. S-1 of a [B, S, G, D] gradient (keys past the forward's) are 0.
int zero_tail_rows(nt_backend *be, const nt_attention_shape *s, float *x) {
  if (s->S <= s->KV) return 0;
  const int64_t row = s->G * s->D;
  for (int64_t b = 0; b < s->B; ++b)
    NT_CUDA_CHECK(be, cudaMemsetAsync(x + (b * s->S + s->KV) * row, 0, static_cast<size_t>((s->S - s->KV) * row) * sizeof(float), be->stream));
  return 0;
}

}  // namespace

int nt_cuda_softmax_rows_backward(nt_backend *be, const float *p, const float *dp, int64_t rows, int64_t n, float *dx) {
  if (rows < 0 || n < 0 || rows > INT32_MAX) return nt_fail(be, "softmax_rows_backward: bad shape rows=%lld n=%lld", (long long)rows, (long long)n);
  if (rows == 0 || n == 0) return 0;
  NT_CUDA_ENTER(be);
  const int threads = nt_row_threads(n, 4, 1024);  // as the forward
  softmax_rows_backward_f32_kernel<<<static_cast<unsigned>(rows), threads, 0, be->stream>>>(p, dp, n, dx);
  NT_CUDA_CHECK_LAUNCH(be, "softmax_rows_backward_f32_kernel");
  return 0;
}

// pattern [B, H, T, KV], v and dv [B, S, G, D], dz [B, T, H, D], dpattern [B, H, T, KV]
int nt_cuda_attention_apply_backward(nt_backend *be, const nt_attention_shape *s, const float *pattern, const float *v, const float *dz,
                                     float *dpattern, float *dv) {
  bool empty = false;
  if (check_attention_shape(be, "attention_apply_backward", s, &empty)) return 1;
  if (empty || s->KV == 0) return 0;
  if (check_tile_grid(be, "attention_apply_backward", s)) return 1;
  NT_CUDA_ENTER(be);
  const int64_t T = s->T, H = s->H, G = s->G, D = s->D, S = s->S, KV = s->KV;
  // dpattern[b, h] (T x KV) = dz[b, :, h, :] . v[b, :, g, :]^T: A = dz (k = d contiguous), B(k = d, n = j) = v.
  TileParams p = tile_params(s, T, KV, D, false, 1.0f);
  p.a = {T * H * D, D, 0, H * D, 1};
  p.b = {S * G * D, 0, D, 1, G * D};
  p.c = {H * T * KV, T * KV, 0, KV, 1};
  NT_CUDA_CHECK(be, (attention_grad_tile<false, false, kMaskNone>(p, s->B, dz, v, dpattern, be->stream)));
  // dv[b, :, g, :] (KV x D) = sum_h pattern[b, h]^T . dz[b, :, h, :]: A(m = j, k = i) = pattern (j contiguous).
  p = tile_params(s, KV, D, T, true, 1.0f);
  p.a = {H * T * KV, T * KV, 0, 1, KV};
  p.b = {T * H * D, D, 0, H * D, 1};
  p.c = {S * G * D, 0, D, G * D, 1};
  NT_CUDA_CHECK(be, (attention_grad_tile<true, true, kMaskNone>(p, s->B, pattern, dz, dv, be->stream)));
  return zero_tail_rows(be, s, dv);
}

// q and dq [B, T, H, D], k and dk [B, S, G, D], dscores [B, H, T, KV]
int nt_cuda_attention_scores_backward(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *dscores,
                                      float *dq, float *dk) {
  bool empty = false;
  if (check_attention_shape(be, "attention_scores_backward", s, &empty)) return 1;
  if (empty) return 0;
  if (check_tile_grid(be, "attention_scores_backward", s)) return 1;
  NT_CUDA_ENTER(be);
  const int64_t T = s->T, H = s->H, G = s->G, D = s->D, S = s->S, KV = s->KV;
  // dq[b, :, h, :] (T x D) = scale * mask(dscores[b, h]) . k[b, :, g, :]: A(m = i, k = j), j contiguous.
  TileParams p = tile_params(s, T, D, KV, false, s->scale);
  p.a = {H * T * KV, T * KV, 0, KV, 1};
  p.b = {S * G * D, 0, D, G * D, 1};
  p.c = {T * H * D, D, 0, H * D, 1};
  NT_CUDA_CHECK(be, (attention_grad_tile<false, true, kMaskQueryKey>(p, s->B, dscores, k, dq, be->stream)));
  // dk[b, :, g, :] (KV x D) = scale * sum_h mask(dscores[b, h])^T . q[b, :, h, :]: A(m = j, k = i).
  p = tile_params(s, KV, D, T, true, s->scale);
  p.a = {H * T * KV, T * KV, 0, 1, KV};
  p.b = {T * H * D, D, 0, H * D, 1};
  p.c = {S * G * D, 0, D, G * D, 1};
  NT_CUDA_CHECK(be, (attention_grad_tile<true, true, kMaskKeyQuery>(p, s->B, dscores, q, dk, be->stream)));
  return zero_tail_rows(be, s, dk);
}
