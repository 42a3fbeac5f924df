// C[M, N] = A[M, K] . W[N, K]^T (+ bias) and its backward dA = dC . W through cuBLASLt; the only
// file that includes cuBLAS. Reference: native/ops/gemm.cc (gemm_f32). Helper kernels: convert.cu.
#include <cublasLt.h>

#include <map>
#include <new>
#include <tuple>

#include "common.cuh"
#include "gemm.h"
#include "ops.cuh"

namespace {

// 32 MiB: what NVIDIA recommends for cuBLASLt on Hopper (smaller parts need less, none more).
constexpr size_t kWorkspaceBytes = 32u << 20;

// Heuristic results per problem: cublasLtMatmulAlgoGetHeuristic costs tens of microseconds of
// host time, comparable to a decode-step GEMM, and the engine repeats the same few shapes.
// Key: M, N, K, weight dtype, whether W is transposed (forward) or not (backward), and the
// alignments of A, W, C (they restrict the algorithms).
using AlgoKey = std::tuple<int64_t, int64_t, int64_t, int, int, uint32_t, uint32_t, uint32_t>;

}  // namespace

struct nt_gemm_state {
  cublasLtHandle_t lt = nullptr;
  void *workspace = nullptr;  // [kWorkspaceBytes]
  void *scratch = nullptr;    // [M, K] activations (or [M, N] gradients) rounded to the weight dtype (F16/BF16 weights)
  size_t scratch_bytes = 0;
  std::map<AlgoKey, cublasLtMatmulAlgo_t> algos;
};

namespace {

int lt_fail(nt_backend *be, cublasStatus_t st, const char *what, int line) {
  return nt_fail(be, "%s: %s (gemm-cublas.cu:%d)", what, cublasLtGetStatusString(st), line);
}

#define NT_CUBLAS_CHECK(be, call)                                          \
  do {                                                                     \
    const cublasStatus_t nt_st_ = (call);                                  \
    if (nt_st_ != CUBLAS_STATUS_SUCCESS) return lt_fail((be), nt_st_, #call, __LINE__); \
  } while (0)

// Largest power of two (<= 256) dividing the address: what the kernels may assume of it.
uint32_t alignment_of(const void *p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

// Owns the descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, a = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (w) cublasLtMatrixLayoutDestroy(w);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Grows the scratch buffer to `bytes`, stream-ordered: the old buffer is released only after
// the GEMMs already enqueued have read it.
int ensure_scratch(nt_backend *be, nt_gemm_state *st, size_t bytes) {
  if (st->scratch_bytes >= bytes) return 0;
  if (st->scratch) {
    NT_CUDA_CHECK(be, nt_device_free(be, st->scratch));
    st->scratch = nullptr;
    st->scratch_bytes = 0;
  }
  NT_CUDA_CHECK(be, nt_device_malloc(be, &st->scratch, bytes));
  st->scratch_bytes = bytes;
  return 0;
}

}  // namespace

int nt_gemm_init(nt_gemm_state **out, char *err, size_t err_len) {
  *out = nullptr;
  nt_gemm_state *st = new (std::nothrow) nt_gemm_state();
  if (!st) {
    if (err && err_len) std::snprintf(err, err_len, "out of host memory");
    return 1;
  }
  const cublasStatus_t s = cublasLtCreate(&st->lt);
  if (s != CUBLAS_STATUS_SUCCESS) {
    if (err && err_len) std::snprintf(err, err_len, "cuBLASLt could not be initialized: %s", cublasLtGetStatusString(s));
    delete st;
    return 1;
  }
  const cudaError_t e = cudaMalloc(&st->workspace, kWorkspaceBytes);
  if (e != cudaSuccess) {
    if (err && err_len) std::snprintf(err, err_len, "cannot allocate the cuBLASLt workspace: %s", cudaGetErrorString(e));
    cublasLtDestroy(st->lt);
    delete st;
    return 1;
  }
  *out = st;
  return 0;
}

void nt_gemm_destroy(nt_backend *be, nt_gemm_state *st) {
  if (!st) return;
  if (st->scratch) nt_device_free(be, st->scratch);
  if (st->workspace) cudaFree(st->workspace);
  if (st->lt) cublasLtDestroy(st->lt);
  delete st;
}

namespace {

// out = act . op(W) with float32 accumulation, the one cuBLASLt call behind gemm and gemm_backward.
// Row-major out[rows, cols] is column-major out^T[cols, rows] (ld cols), and out^T = op(W)^T . act^T:
//   forward  (transposed W): out[M, N] = A[M, K] . W[N, K]^T; cuBLAS "A" = W column-major [K, N]
//            (ld K) transposed, "B" = A column-major [K, M] (ld K): m = N, n = M, k = K ("TN", the
//            layout cuBLASLt's fastest kernels expect);
//   backward (W as is):   out[M, K] = dC[M, N] . W[N, K]; cuBLAS "A" = W column-major [K, N] (ld K),
//            "B" = dC column-major [N, M] (ld N): m = K, n = M, k = N ("NN").
// `inner` is the reduction length, `cols` the output width. F16 / BF16 weights: act (float32) is
// rounded to the weight dtype into the scratch buffer first (cuBLASLt multiplies matching types).
// `scale_rows` (gradients with F16 weights): each row of act is scaled by a power of two before
// the rounding and the output row by its inverse after, exactly (rows of out depend only on the
// same rows of act), so gradients far below f16's range (a loss over many positions) stay exact
// to f16's 11 bits instead of flushing to zero; bf16 has float32's range and needs none.
// CUBLAS_COMPUTE_32F without TF32, for fidelity with the CPU. For F32 weights,
// CUBLAS_COMPUTE_32F_FAST_TF32 would be the place to trade ~1e-3 relative error for ~7x speed.
int lt_matmul(nt_backend *be, const char *op, const float *act, int64_t rows, int64_t inner, const void *W, nt_dtype w_dtype, int64_t cols,
              bool transpose_w, bool scale_rows, float *out) {
  nt_gemm_state *st = be->gemm;
  const void *a = act;  // [rows, inner] in the weight dtype
  cudaDataType_t type = CUDA_R_32F;
  float *row_unscale = nullptr;  // [rows], after the rounded act in the scratch buffer
  scale_rows = scale_rows && w_dtype == NT_F16;
  if (w_dtype != NT_F32) {
    type = w_dtype == NT_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const size_t act_bytes = static_cast<size_t>(rows * inner) * 2, unscale_at = (act_bytes + 255) / 256 * 256;
    if (ensure_scratch(be, st, scale_rows ? unscale_at + static_cast<size_t>(rows) * sizeof(float) : act_bytes)) return 1;
    if (scale_rows) {
      row_unscale = reinterpret_cast<float *>(static_cast<char *>(st->scratch) + unscale_at);
      NT_CUDA_CHECK(be, convert_rows_f32_to_f16_scaled(act, rows, inner, st->scratch, row_unscale, be->stream));
    } else {
      NT_CUDA_CHECK(be, w_dtype == NT_F16 ? convert_f32_to_f16(act, rows * inner, st->scratch, be->stream)
                                          : convert_f32_to_bf16(act, rows * inner, st->scratch, be->stream));
    }
    a = st->scratch;
  }
  // W [N, K] row-major is column-major [K, N] either way: the forward has N = cols, K = inner,
  // the backward K = cols, N = inner.
  const int64_t w_rows = transpose_w ? inner : cols, w_cols = transpose_w ? cols : inner;
  Descriptors ds;
  NT_CUBLAS_CHECK(be, cublasLtMatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = transpose_w ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a = CUBLAS_OP_N;
  NT_CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof trans_w));
  NT_CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_a, sizeof trans_a));
  NT_CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&ds.w, type, static_cast<uint64_t>(w_rows), static_cast<uint64_t>(w_cols), w_rows));
  NT_CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&ds.a, type, static_cast<uint64_t>(inner), static_cast<uint64_t>(rows), inner));
  NT_CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&ds.c, CUDA_R_32F, static_cast<uint64_t>(cols), static_cast<uint64_t>(rows), cols));

  const uint32_t align_w = alignment_of(W), align_a = alignment_of(a), align_c = alignment_of(out);
  const AlgoKey key{rows, cols, inner, static_cast<int>(w_dtype), transpose_w ? 1 : 0, align_w, align_a, align_c};
  auto found = st->algos.find(key);
  if (found == st->algos.end()) {
    NT_CUBLAS_CHECK(be, cublasLtMatmulPreferenceCreate(&ds.pref));
    const uint64_t ws = kWorkspaceBytes;
    NT_CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    // Buffers may be offsets into larger allocations: only let cuBLASLt assume what holds.
    NT_CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_w, sizeof align_w));
    NT_CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_a, sizeof align_a));
    NT_CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof align_c));
    NT_CUBLAS_CHECK(be, cublasLtMatmulPreferenceSetAttribute(ds.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof align_c));
    cublasLtMatmulHeuristicResult_t result = {};
    int returned = 0;
    NT_CUBLAS_CHECK(be, cublasLtMatmulAlgoGetHeuristic(st->lt, ds.op, ds.w, ds.a, ds.c, ds.c, ds.pref, 1, &result, &returned));
    if (returned == 0 || result.state != CUBLAS_STATUS_SUCCESS)
      return nt_fail(be, "%s: cuBLASLt has no algorithm for rows=%lld cols=%lld inner=%lld dtype=%d (alignments W %u, A %u, C %u)", op,
                     (long long)rows, (long long)cols, (long long)inner, static_cast<int>(w_dtype), align_w, align_a, align_c);
    found = st->algos.emplace(key, result.algo).first;
  }

  const float alpha = 1.0f, beta = 0.0f;  // host scalars, read when the call is enqueued
  NT_CUBLAS_CHECK(be, cublasLtMatmul(st->lt, ds.op, &alpha, W, ds.w, a, ds.a, &beta, out, ds.c, out, ds.c, &found->second,
                                     st->workspace, kWorkspaceBytes, be->stream));
  if (row_unscale) NT_CUDA_CHECK(be, scale_rows_f32(out, rows, cols, row_unscale, be->stream));
  return 0;
}

int check_gemm(nt_backend *be, const char *op, nt_dtype w_dtype, int64_t M, int64_t K, int64_t N) {
  if (w_dtype != NT_F32 && w_dtype != NT_F16 && w_dtype != NT_BF16) return nt_fail(be, "%s: unknown dtype %d", op, static_cast<int>(w_dtype));
  if (M < 0 || K < 0 || N < 0) return nt_fail(be, "%s: bad shape M=%lld K=%lld N=%lld", op, (long long)M, (long long)K, (long long)N);
  return 0;
}

}  // namespace

// A [M, K] float32, W [N, K] in w_dtype (HF Linear layout), bias [N] float32 or null, C [M, N].
int nt_cuda_gemm(nt_backend *be, const float *A, int64_t M, int64_t K, const void *W, nt_dtype w_dtype, int64_t N,
                 const float *bias, float *C) {
  if (check_gemm(be, "gemm", w_dtype, M, K, N)) return 1;
  if (M == 0 || N == 0) return 0;
  NT_CUDA_ENTER(be);
  if (K == 0) {  // an empty sum: C = bias, or zeros
    NT_CUDA_CHECK(be, cudaMemsetAsync(C, 0, static_cast<size_t>(M * N) * sizeof(float), be->stream));
    if (bias) NT_CUDA_CHECK(be, add_bias_f32(C, M, N, bias, be->stream));
    return 0;
  }
  // With F16/BF16 weights the activations are rounded to the weight dtype (lt_matmul): the one
  // difference from the CPU, which widens the weights instead.
  if (lt_matmul(be, "gemm", A, M, K, W, w_dtype, N, true, false, C)) return 1;
  // The CPU adds the bias to the finished dot product; so does this (one more pass over C; the
  // cuBLASLt BIAS epilogue could fuse it).
  if (bias) NT_CUDA_CHECK(be, add_bias_f32(C, M, N, bias, be->stream));
  return 0;
}

// dC [M, N] float32, W [N, K] in w_dtype as passed to gemm, dA [M, K] = dC . W. With F16/BF16
// weights dC is rounded to the weight dtype, as the forward rounds A (F16: per-row scaled).
int nt_cuda_gemm_backward(nt_backend *be, const float *dC, int64_t M, int64_t N, const void *W, nt_dtype w_dtype, int64_t K, float *dA) {
  if (check_gemm(be, "gemm_backward", w_dtype, M, K, N)) return 1;
  if (M == 0 || K == 0) return 0;
  NT_CUDA_ENTER(be);
  if (N == 0) {  // an empty sum
    NT_CUDA_CHECK(be, cudaMemsetAsync(dA, 0, static_cast<size_t>(M * K) * sizeof(float), be->stream));
    return 0;
  }
  return lt_matmul(be, "gemm_backward", dC, M, N, W, w_dtype, K, false, true, dA);
}
