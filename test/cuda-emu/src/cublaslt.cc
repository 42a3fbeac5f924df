// CPU reference for the cuBLASLt calls cuda/gemm-cublas.cu makes (declared by the stand-in
// ../include/cublasLt.h): column-major D = alpha op(A) op(B) + beta C for f32 / f16 / bf16 inputs
// with a float32 result, checking shapes, device pointers, extents and the alignments the
// chosen algorithm was promised.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "emu.h"

using namespace nt_emu;

struct cublasLtContext {
  int live = 1;
};
struct cublasLtMatmulDescOpaque {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
};
struct cublasLtMatrixLayoutOpaque {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque {
  uint64_t workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // cuBLASLt assumes 256-byte aligned pointers unless told less
};

namespace {

size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2 : 0; }

float load(const void *p, cudaDataType_t t, size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float *>(p)[i];
  if (t == CUDA_R_16F) return __half2float(static_cast<const __half *>(p)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
}

// The matrix a layout describes lies inside one device allocation.
bool in_device(const char *what, const void *p, const cublasLtMatrixLayoutOpaque *l) {
  const size_t extent = l->cols ? ((l->cols - 1) * static_cast<size_t>(l->ld) + l->rows) * type_bytes(l->type) : 0;
  if (device_range(p, extent)) return true;
  const Allocation *a = find_allocation(p);
  if (a)
    report("cublasLtMatmul: matrix %s (%llu x %llu, ld %lld) at %p overruns the %zu-byte device allocation at %p", what,
           static_cast<unsigned long long>(l->rows), static_cast<unsigned long long>(l->cols), static_cast<long long>(l->ld), p, a->size,
           static_cast<void *>(a->ptr));
  else
    report("cublasLtMatmul: matrix %s at %p is not device memory", what, p);
  return false;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasLtContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_INTERNAL_ERROR";
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  *desc = new cublasLtMatmulDescOpaque{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void *buf, size_t size) {
  if (!desc || !buf || size != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
  int32_t v;
  std::memcpy(&v, buf, sizeof v);
  if (v != CUBLAS_OP_N && v != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA) desc->trans_a = static_cast<cublasOperation_t>(v);
  else if (attr == CUBLASLT_MATMUL_DESC_TRANSB) desc->trans_b = static_cast<cublasOperation_t>(v);
  else return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld) {
  if (!layout || !type_bytes(type)) return CUBLAS_STATUS_INVALID_VALUE;
  if (ld < static_cast<int64_t>(rows) || ld < 1) {
    report("cublasLtMatrixLayoutCreate: ld %lld is below the %llu rows", static_cast<long long>(ld), static_cast<unsigned long long>(rows));
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  *layout = new cublasLtMatrixLayoutOpaque{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = new cublasLtMatmulPreferenceOpaque();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size) {
  if (!pref || !buf) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
    if (size != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&pref->workspace, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
    if (size != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, size);
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *returned) {
  if (!handle || !desc || !a || !b || !c || !d || !pref || requested < 1 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  std::memset(results, 0, sizeof *results);
  if (a->type != b->type || c->type != CUDA_R_32F || d->type != CUDA_R_32F || desc->compute != CUBLAS_COMPUTE_32F || desc->scale != CUDA_R_32F)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  for (int i = 0; i < 4; ++i) results->algo.data[i] = pref->align[i];
  results->workspaceSize = 0;
  results->state = CUBLAS_STATUS_SUCCESS;
  results->wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha, const void *A, cublasLtMatrixLayout_t a,
                              const void *B, cublasLtMatrixLayout_t b, const void *beta, const void *C, cublasLtMatrixLayout_t c, void *D,
                              cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!handle || !desc || !alpha || !beta || !a || !b || !c || !d || !algo) return CUBLAS_STATUS_INVALID_VALUE;
  if (sticky() != cudaSuccess || !valid_stream(stream)) return CUBLAS_STATUS_EXECUTION_FAILED;
  if (a->type != b->type || c->type != CUDA_R_32F || d->type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  // op(A) [m, k], op(B) [k, n], C and D [m, n], all column-major.
  const bool ta = desc->trans_a == CUBLAS_OP_T, tb = desc->trans_b == CUBLAS_OP_T;
  const uint64_t m = ta ? a->cols : a->rows, k = ta ? a->rows : a->cols;
  const uint64_t kb = tb ? b->cols : b->rows, n = tb ? b->rows : b->cols;
  if (k != kb || c->rows != m || c->cols != n || d->rows != m || d->cols != n || d->ld != c->ld) {
    report("cublasLtMatmul: shapes do not agree: op(A) %llu x %llu, op(B) %llu x %llu, C %llu x %llu, D %llu x %llu", (unsigned long long)m,
           (unsigned long long)k, (unsigned long long)kb, (unsigned long long)n, (unsigned long long)c->rows, (unsigned long long)c->cols,
           (unsigned long long)d->rows, (unsigned long long)d->cols);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const void *ptrs[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i) {
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % algo->data[i] != 0) {
      report("cublasLtMatmul: matrix %c at %p is not %llu-byte aligned, as the algorithm's preference promised", "ABCD"[i], ptrs[i],
             static_cast<unsigned long long>(algo->data[i]));
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  }
  if (!in_device("A", A, a) || !in_device("B", B, b) || !in_device("C", C, c) || !in_device("D", D, d) ||
      (workspace_bytes && !device_range(workspace, workspace_bytes))) {
    set_sticky(cudaErrorIllegalAddress);
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  const float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
  float *out = static_cast<float *>(D);
  const float *cin = static_cast<const float *>(C);
  for (uint64_t j = 0; j < n; ++j) {
    for (uint64_t i = 0; i < m; ++i) {
      double acc = 0.0;
      for (uint64_t p = 0; p < k; ++p) {
        const size_t ia = ta ? i * a->ld + p : p * a->ld + i, ib = tb ? p * b->ld + j : j * b->ld + p;
        acc += static_cast<double>(load(A, a->type, ia)) * static_cast<double>(load(B, b->type, ib));
      }
      float r = al * static_cast<float>(acc);
      if (be != 0.0f) r += be * cin[j * c->ld + i];  // beta = 0: C is not read (it may be uninitialized)
      out[j * d->ld + i] = r;
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
