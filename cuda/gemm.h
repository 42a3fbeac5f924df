// The GEMM's private interface: setup of the cuBLASLt state (gemm-cublas.cu, the only file that
// includes cuBLAS headers) and the small kernels it launches (convert.cu). No cuBLAS types here.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

struct nt_backend;
struct nt_gemm_state;

// Creates the cuBLASLt handle and its workspace on the current device; on failure returns 1
// with the reason in err (e.g. "cuBLASLt could not be initialized: ...").
int nt_gemm_init(nt_gemm_state **out, char *err, size_t err_len);
// Releases what nt_gemm_init made (be: the owning backend, whose pool and stream are still alive).
void nt_gemm_destroy(nt_backend *be, nt_gemm_state *st);

// convert.cu: dst[n] = src[n] rounded to nearest even, as 16-bit halves or bfloat16 bits.
cudaError_t convert_f32_to_f16(const float *src, int64_t n, void *dst, cudaStream_t stream);
cudaError_t convert_f32_to_bf16(const float *src, int64_t n, void *dst, cudaStream_t stream);
// convert.cu: dst[rows, cols] = src rounded to f16 after scaling each row by a power of two that
// brings its largest |value| to [2^14, 2^15); row_unscale[rows] gets the inverse powers.
cudaError_t convert_rows_f32_to_f16_scaled(const float *src, int64_t rows, int64_t cols, void *dst, float *row_unscale, cudaStream_t stream);
// convert.cu: x[rows, cols] *= row_scale[rows]
cudaError_t scale_rows_f32(float *x, int64_t rows, int64_t cols, const float *row_scale, cudaStream_t stream);
// convert.cu: C[M, N] += bias[N]
cudaError_t add_bias_f32(float *C, int64_t M, int64_t N, const float *bias, cudaStream_t stream);
