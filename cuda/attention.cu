// Fused causal attention for float32 (flash-style: online softmax over key tiles, the pattern is
// never materialized), with GQA, sliding windows, left padding and a strided KV cache.
// Reference: native/ops/attention.cc (attention_f32).
#include "attention.cuh"
#include "ops.cuh"

namespace {

// Launch configuration. A block serves one (batch row b, kv head g) and a tile of 16 "rows":
// the (query t, query head h) pairs of that kv head, flattened t-major, so all query heads
// sharing g read each K/V tile once (GQA) and decode (T = 1) still fills a block with
// H/G heads. 4 warps x 4 rows each; per key tile of 32 keys:
//   load:   the 128 threads copy K and V [32, D] into shared memory (coalesced along D);
//   scores: lane l scores key l against the warp's 4 query rows (float4 dot products from
//           shared memory: Q reads are warp broadcasts, K rows are padded to dodge bank
//           conflicts);
//   update: per row, warp max/sum give the online-softmax rescale, then each lane
//           accumulates its D/32 output dims over the 32 keys (V reads are consecutive).
// Shared memory: (16 + 32 + 32) rows of ~D floats = 41 KB at D = 128, 81 KB at D = 256
// (above 48 KB needs the opt-in attribute; every sm_80+ part allows >= 99 KB).
constexpr int kAttnWarps = 4;
constexpr int kAttnThreads = kAttnWarps * kWarp;
constexpr int kAttnRowsPerWarp = 4;
constexpr int kAttnRows = kAttnWarps * kAttnRowsPerWarp;  // query rows per block
constexpr int kAttnKeys = kWarp;                          // keys per tile: one per lane when scoring
constexpr int kAttnMaxD = 256;                            // 8 output dims per lane

struct AttnParams {
  int64_t T, H, G, D, S, q0, group;  // group = H / G
  float scale;
  int window;
  const int32_t *pad;  // [B] or null
  int DP;              // D rounded up to a multiple of 4: row stride of the Q and V tiles
  int KP;              // row stride of the K tile: DP, or DP + 4 when DP / 4 is even (bank spread)
};

// q [B, T, H, D], k and v [B, S, G, D] (first KV rows in use), z [B, T, H, D].
// NC = ceil(D / 32): output dims per lane (lane owns d = lane + 32 c).
template <int NC>
__global__ void __launch_bounds__(kAttnThreads) attention_f32_kernel(AttnParams p, const float *q, const float *k, const float *v,
                                                                     float *z) {
  extern __shared__ float4 attn_smem[];           // float4: 16-byte alignment for the vector reads
  float *Qs = reinterpret_cast<float *>(attn_smem);  // [kAttnRows, DP]
  float *Ks = Qs + kAttnRows * p.DP;                 // [kAttnKeys, KP]
  float *Vs = Ks + kAttnKeys * p.KP;                 // [kAttnKeys, DP]

  const int64_t b = blockIdx.z, g = blockIdx.y;
  const int64_t rows_total = p.T * p.group;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kAttnRows;  // first flattened (t, h) row
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t pad_b = p.pad ? p.pad[b] : 0;

  // Q tile, zero-filled past D and past the last row so the dot products need no bounds.
  for (int e = threadIdx.x; e < kAttnRows * p.DP; e += kAttnThreads) {
    const int r = e / p.DP, d = e % p.DP;
    const int64_t flat = r0 + r;
    float val = 0.0f;
    if (flat < rows_total && d < p.D) {
      const int64_t t = flat / p.group, h = g * p.group + flat % p.group;
      val = q[((b * p.T + t) * p.H + h) * p.D + d];
    }
    Qs[e] = val;
  }

  // This warp's rows and their visible keys; rows past the end get an empty range.
  int64_t lo[kAttnRowsPerWarp], hi[kAttnRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kAttnRowsPerWarp; ++rr) {
    const int64_t flat = r0 + warp * kAttnRowsPerWarp + rr;
    if (flat < rows_total) {
      attention_key_range(p.q0 + flat / p.group, pad_b, p.window, &lo[rr], &hi[rr]);
    } else {
      lo[rr] = 0;
      hi[rr] = -1;
    }
  }
  // The block's key span: the union of its rows' ranges (lo and hi grow with t).
  const int64_t last = (r0 + kAttnRows < rows_total ? r0 + kAttnRows : rows_total) - 1;
  int64_t blk_lo, blk_hi, unused;
  attention_key_range(p.q0 + r0 / p.group, pad_b, p.window, &blk_lo, &unused);
  attention_key_range(p.q0 + last / p.group, pad_b, p.window, &unused, &blk_hi);

  // Online softmax state per row: running max m, running sum l, unnormalized output acc.
  float m[kAttnRowsPerWarp], l[kAttnRowsPerWarp], acc[kAttnRowsPerWarp][NC];
#pragma unroll
  for (int rr = 0; rr < kAttnRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[rr][c] = 0.0f;
  }

  const int DP4 = p.DP / 4;
  for (int64_t j0 = blk_lo; j0 <= blk_hi; j0 += kAttnKeys) {
    __syncthreads();  // every warp is done with the previous tile before it is overwritten
    for (int kk = warp; kk < kAttnKeys; kk += kAttnWarps) {
      const int64_t j = j0 + kk;
      const bool in = j <= blk_hi;  // keys past the span are zeros: never read from global
      const int64_t off = ((b * p.S + (in ? j : 0)) * p.G + g) * p.D;
      for (int d = lane; d < p.DP; d += kWarp) {
        const bool ok = in && d < p.D;
        Ks[kk * p.KP + d] = ok ? k[off + d] : 0.0f;
        Vs[kk * p.DP + d] = ok ? v[off + d] : 0.0f;
      }
    }
    __syncthreads();  // the tile (and, on the first pass, the Q tile) is visible to all warps

    // Scores of key j = j0 + lane against the warp's rows.
    const int64_t j = j0 + lane;
    float s[kAttnRowsPerWarp];
#pragma unroll
    for (int rr = 0; rr < kAttnRowsPerWarp; ++rr) s[rr] = 0.0f;
    const float4 *k4 = reinterpret_cast<const float4 *>(Ks + lane * p.KP);
    const float4 *q4 = reinterpret_cast<const float4 *>(Qs + warp * kAttnRowsPerWarp * p.DP);
    for (int c = 0; c < DP4; ++c) {
      const float4 kv = k4[c];
#pragma unroll
      for (int rr = 0; rr < kAttnRowsPerWarp; ++rr) {
        const float4 qv = q4[rr * DP4 + c];
        s[rr] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
      }
    }

#pragma unroll
    for (int rr = 0; rr < kAttnRowsPerWarp; ++rr) {
      const float sc = (j >= lo[rr] && j <= hi[rr]) ? s[rr] * p.scale : -INFINITY;
      const float m_new = fmaxf(m[rr], warp_reduce_max(sc));
      if (m_new == -INFINITY) continue;  // warp-uniform: no visible key for this row yet
      const float alpha = expf(m[rr] - m_new);  // 0 on the first visible tile (m = -inf)
      const float pj = expf(sc - m_new);        // 0 for masked keys
      l[rr] = l[rr] * alpha + warp_reduce_sum(pj);
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[rr][c] *= alpha;
      for (int kk = 0; kk < kAttnKeys; ++kk) {
        const float w = __shfl_sync(0xffffffffu, pj, kk);
        if (w == 0.0f) continue;  // warp-uniform; masked keys never touch acc (as on the CPU)
        const float *vr = Vs + kk * p.DP;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
          const int d = lane + kWarp * c;
          if (d < p.D) acc[rr][c] += w * vr[d];
        }
      }
      m[rr] = m_new;
    }
  }

  // z = acc / l; a query with no visible key (l = 0) gets z = 0.
#pragma unroll
  for (int rr = 0; rr < kAttnRowsPerWarp; ++rr) {
    const int64_t flat = r0 + warp * kAttnRowsPerWarp + rr;
    if (flat >= rows_total) continue;
    const int64_t t = flat / p.group, h = g * p.group + flat % p.group;
    float *zr = z + ((b * p.T + t) * p.H + h) * p.D;
    const float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + kWarp * c;
      if (d < p.D) zr[d] = acc[rr][c] * inv;
    }
  }
}

template <int NC>
cudaError_t attention_f32(const AttnParams &p, int64_t B, const float *q, const float *k, const float *v, float *z,
                          size_t smem, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(attention_f32_kernel<NC>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(nt_ceil_div(p.T * p.group, kAttnRows)), static_cast<unsigned>(p.G), static_cast<unsigned>(B));
  attention_f32_kernel<NC><<<grid, kAttnThreads, smem, stream>>>(p, q, k, v, z);
  return cudaGetLastError();
}

}  // namespace

int nt_cuda_attention(nt_backend *be, const nt_attention_shape *s, const float *q, const float *k, const float *v, float *z) {
  bool empty = false;
  if (check_attention_shape(be, "attention", s, &empty)) return 1;
  if (empty) return 0;
  if (s->D > kAttnMaxD) return nt_fail(be, "attention: head dim %lld is above the CUDA kernel's %d", (long long)s->D, kAttnMaxD);
  if (s->B > 65535 || s->G > 65535 || nt_ceil_div(s->T * (s->H / s->G), kAttnRows) > INT32_MAX)
    return nt_fail(be, "attention: grid too large (B=%lld G=%lld T=%lld)", (long long)s->B, (long long)s->G, (long long)s->T);

  AttnParams p;
  p.T = s->T;
  p.H = s->H;
  p.G = s->G;
  p.D = s->D;
  p.S = s->S;
  p.q0 = s->q0;
  p.group = s->H / s->G;
  p.scale = s->scale;
  p.window = s->window;
  p.pad = s->pad;
  p.DP = static_cast<int>((s->D + 3) / 4 * 4);
  p.KP = (p.DP / 4) % 2 == 0 ? p.DP + 4 : p.DP;
  const size_t smem = sizeof(float) * (static_cast<size_t>(kAttnRows) * p.DP + static_cast<size_t>(kAttnKeys) * p.KP +
                                       static_cast<size_t>(kAttnKeys) * p.DP);
  if (smem > static_cast<size_t>(be->max_smem_optin))
    return nt_fail(be, "attention: head dim %lld needs %zu bytes of shared memory, the device allows %d", (long long)s->D, smem,
                   be->max_smem_optin);

  NT_CUDA_ENTER(be);
  cudaError_t err = cudaSuccess;
  switch ((s->D + kWarp - 1) / kWarp) {
    case 1: err = attention_f32<1>(p, s->B, q, k, v, z, smem, be->stream); break;
    case 2: err = attention_f32<2>(p, s->B, q, k, v, z, smem, be->stream); break;
    case 3: err = attention_f32<3>(p, s->B, q, k, v, z, smem, be->stream); break;
    case 4: err = attention_f32<4>(p, s->B, q, k, v, z, smem, be->stream); break;
    case 5: err = attention_f32<5>(p, s->B, q, k, v, z, smem, be->stream); break;
    case 6: err = attention_f32<6>(p, s->B, q, k, v, z, smem, be->stream); break;
    case 7: err = attention_f32<7>(p, s->B, q, k, v, z, smem, be->stream); break;
    default: err = attention_f32<8>(p, s->B, q, k, v, z, smem, be->stream); break;
  }
  NT_CUDA_CHECK(be, err);
  return 0;
}
