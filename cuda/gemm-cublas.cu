// C[M, N] = A[M, K] . W[N, K]^T (+ bias) through cuBLASLt; the only file that includes cuBLAS.
// Reference: native/ops/gemm.cc (gemm_f32). Helper kernels: convert.cu.
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
// Key: M, N, K, weight dtype, and the alignments of A, W, C (they restrict the algorithms).
using AlgoKey = std::tuple<int64_t, int64_t, int64_t, int, uint32_t, uint32_t, uint32_t>;

}  // namespace

struct nt_gemm_state {
  cublasLtHandle_t lt = nullptr;
  void *workspace = nullptr;  // [kWorkspaceBytes]
  void *scratch = nullptr;    // [M, K] activations rounded to the weight dtype (F16/BF16 weights)
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

// A [M, K] float32, W [N, K] in w_dtype (HF Linear layout), bias [N] float32 or null, C [M, N].
int nt_cuda_gemm(nt_backend *be, const float *A, int64_t M, int64_t K, const void *W, nt_dtype w_dtype, int64_t N,
                 const float *bias, float *C) {
  if (w_dtype != NT_F32 && w_dtype != NT_F16 && w_dtype != NT_BF16) return nt_fail(be, "gemm: unknown dtype %d", static_cast<int>(w_dtype));
  if (M < 0 || K < 0 || N < 0) return nt_fail(be, "gemm: bad shape M=%lld K=%lld N=%lld", (long long)M, (long long)K, (long long)N);
  if (M == 0 || N == 0) return 0;
  NT_CUDA_ENTER(be);
  nt_gemm_state *st = be->gemm;
  if (K == 0) {  // an empty sum: C = bias, or zeros
    NT_CUDA_CHECK(be, cudaMemsetAsync(C, 0, static_cast<size_t>(M * N) * sizeof(float), be->stream));
    if (bias) NT_CUDA_CHECK(be, add_bias_f32(C, M, N, bias, be->stream));
    return 0;
  }

  // cuBLASLt multiplies matching input types, so with F16/BF16 weights the activations are
  // rounded to the weight dtype first (then products accumulate in float32). That rounding is
  // the one difference from the CPU, which widens the weights instead.
  const void *act = A;  // [M, K] in the weight dtype
  cudaDataType_t type = CUDA_R_32F;
  if (w_dtype != NT_F32) {
    type = w_dtype == NT_F16 ? CUDA_R_16F : CUDA_R_16BF;
    if (ensure_scratch(be, st, static_cast<size_t>(M * K) * 2)) return 1;
    NT_CUDA_CHECK(be, w_dtype == NT_F16 ? convert_f32_to_f16(A, M * K, st->scratch, be->stream)
                                        : convert_f32_to_bf16(A, M * K, st->scratch, be->stream));
    act = st->scratch;
  }

  // Row-major C[M, N] is column-major C^T[N, M] (ld N), and C^T = W . A^T:
  //   cuBLAS "A" = W: column-major [K, N] (ld K), transposed -> [N, K];
  //   cuBLAS "B" = A: column-major [K, M] (ld K), as is      -> A^T;
  //   so m = N, n = M, k = K ("TN", the layout cuBLASLt's fastest kernels expect).
  // CUBLAS_COMPUTE_32F without TF32, for fidelity with the CPU. For F32 weights,
  // CUBLAS_COMPUTE_32F_FAST_TF32 would be the place to trade ~1e-3 relative error for ~7x speed.
  Descriptors ds;
  NT_CUBLAS_CHECK(be, cublasLtMatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_a = CUBLAS_OP_N;
  NT_CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof trans_w));
  NT_CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_a, sizeof trans_a));
  NT_CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&ds.w, type, static_cast<uint64_t>(K), static_cast<uint64_t>(N), K));
  NT_CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&ds.a, type, static_cast<uint64_t>(K), static_cast<uint64_t>(M), K));
  NT_CUBLAS_CHECK(be, cublasLtMatrixLayoutCreate(&ds.c, CUDA_R_32F, static_cast<uint64_t>(N), static_cast<uint64_t>(M), N));

  const uint32_t align_w = alignment_of(W), align_a = alignment_of(act), align_c = alignment_of(C);
  const AlgoKey key{M, N, K, static_cast<int>(w_dtype), align_w, align_a, align_c};
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
      return nt_fail(be, "gemm: cuBLASLt has no algorithm for M=%lld N=%lld K=%lld dtype=%d (alignments W %u, A %u, C %u)",
                     (long long)M, (long long)N, (long long)K, static_cast<int>(w_dtype), align_w, align_a, align_c);
    found = st->algos.emplace(key, result.algo).first;
  }

  const float alpha = 1.0f, beta = 0.0f;  // host scalars, read when the call is enqueued
  NT_CUBLAS_CHECK(be, cublasLtMatmul(st->lt, ds.op, &alpha, W, ds.w, act, ds.a, &beta, C, ds.c, C, ds.c, &found->second,
                                     st->workspace, kWorkspaceBytes, be->stream));
  // The CPU adds the bias to the finished dot product; so does this (one more pass over C; the
  // cuBLASLt BIAS epilogue could fuse it).
  if (bias) NT_CUDA_CHECK(be, add_bias_f32(C, M, N, bias, be->stream));
  return 0;
}
