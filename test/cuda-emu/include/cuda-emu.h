// CPU emulation of the CUDA device code cuda/*.cu uses, force-included (g++ -include) before
// each rewritten .cu by test/cuda-emu/build.mjs: thread indices, barriers, warp shuffles and
// votes, atomics, float intrinsics, shared memory and kernel launches. Runtime: ../src/;
// exercised by npm run test:cuda-emu (run.mjs), documented in cuda/README.md.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// The backend ABI's structs carry device pointers into kernels; the launch checks them too.
#if __has_include("ops/backend-abi.h")
#include "ops/backend-abi.h"
#define NT_EMU_BACKEND_ABI 1
#endif

#define __launch_bounds__(...)

namespace nt_emu {

// The built-in index variables of the emulated thread that is running (one set per fiber).
struct ThreadIds {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
extern thread_local const ThreadIds *t_ids;

// Barriers and warp operations (scheduler.cc): the calling fiber waits until its block or
// warp arrives, then continues. Values travel as up to 64 bits.
enum WarpOp { kShfl, kShflXor, kShflUp, kShflDown, kBallot, kAny, kAll, kSyncWarp };
void sync_block();
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width);

// Shared memory of the running block: its dynamic buffer, and the storage of a static
// __shared__ variable (key: a unique address per declaration), NaN-filled when the block
// first reaches the declaration.
void *dynamic_smem();
void *static_shared(const void *key, size_t bytes);

template <class T>
T warp_exchange(WarpOp op, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "warp operations move at most 64 bits");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_op(op, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Kernel launches: kernel<<<grid, block, smem, stream>>>(args) is rewritten to
// nt_emu::launch(kernel, "kernel", nt_emu::config(grid, block, smem, stream), args).
struct LaunchConfig {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
inline LaunchConfig config(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr) {
  return LaunchConfig{grid, block, smem, stream};
}

// A pointer a kernel receives, for the device-memory check at launch.
struct PointerArg {
  const void *ptr;
  int index;          // parameter position, from 0
  const char *field;  // the struct member it came from, or null
};
using Invoke = void (*)(const void *closure);
void launch_erased(const void *kernel, const char *name, const LaunchConfig &cfg, Invoke invoke, const void *closure,
                   const PointerArg *pointers, int n_pointers);

constexpr int kPointersPerArg = 5;  // at most, from one argument (nt_edit's lists)

template <class T>
void collect_pointer(const T &v, int index, PointerArg *out, int *n) {
  if constexpr (std::is_pointer_v<T>) out[(*n)++] = PointerArg{static_cast<const void *>(v), index, nullptr};
  (void)v, (void)index, (void)out, (void)n;
}
#if NT_EMU_BACKEND_ABI
inline void collect_pointer(const nt_edit &e, int index, PointerArg *out, int *n) {
  out[(*n)++] = PointerArg{e.vec, index, "nt_edit.vec"};
  out[(*n)++] = PointerArg{e.source, index, "nt_edit.source"};
  out[(*n)++] = PointerArg{e.positions, index, "nt_edit.positions"};
  out[(*n)++] = PointerArg{e.rows, index, "nt_edit.rows"};
  out[(*n)++] = PointerArg{e.heads, index, "nt_edit.heads"};
}
inline void collect_pointer(const nt_edit_context &c, int index, PointerArg *out, int *n) {
  out[(*n)++] = PointerArg{c.pad, index, "nt_edit_context.pad"};
}
inline void collect_pointer(const nt_attention_shape &s, int index, PointerArg *out, int *n) {
  out[(*n)++] = PointerArg{s.pad, index, "nt_attention_shape.pad"};
}
#endif

template <class... P, class... A>
void launch(void (*kernel)(P...), const char *name, const LaunchConfig &cfg, A &&...args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  using Params = std::tuple<std::decay_t<P>...>;
  struct Closure {
    void (*kernel)(P...);
    Params params;
  };
  const Closure closure{kernel, Params(std::forward<A>(args)...)};
  PointerArg pointers[sizeof...(P) * kPointersPerArg + 1];
  int n = 0;
  std::apply(
      [&](const auto &...p) {
        int index = 0;
        (collect_pointer(p, index++, pointers, &n), ...);
      },
      closure.params);
  launch_erased(reinterpret_cast<const void *>(kernel), name, cfg,
                [](const void *c) {
                  const Closure *cl = static_cast<const Closure *>(c);
                  std::apply(cl->kernel, cl->params);
                },
                &closure, pointers, n);
}

}  // namespace nt_emu

// The C++ overloads cuda_runtime.h declares for nvcc only: kernels passed by function pointer.
template <class T>
cudaError_t cudaFuncSetAttribute(T *kernel, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel), attr, value);
}
template <class T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, T *kernel) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void *>(kernel));
}

#define threadIdx (::nt_emu::t_ids->thread)
#define blockIdx (::nt_emu::t_ids->block)
#define blockDim (::nt_emu::t_ids->block_dim)
#define gridDim (::nt_emu::t_ids->grid_dim)
#define warpSize 32

// build.mjs rewrites `__shared__ T name[N];` into NT_EMU_SHARED(T, name, [N]) and
// `extern __shared__ T name[];` into NT_EMU_DYNAMIC_SHARED(T, name): references into the
// running block's shared memory.
#define NT_EMU_SHARED(type, name, dims)   \
  static char nt_emu_shared_key_##name;   \
  type(&name) dims = *static_cast<type(*) dims>(::nt_emu::static_shared(&nt_emu_shared_key_##name, sizeof(type dims)))
#define NT_EMU_DYNAMIC_SHARED(type, name) type *const name = static_cast<type *>(::nt_emu::dynamic_smem())

// ---------------------------------------------------------------------------------------
// Synchronization and warp operations.

inline void __syncthreads() { ::nt_emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::nt_emu::warp_op(::nt_emu::kSyncWarp, mask, 0, 0, 32); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::nt_emu::warp_exchange(::nt_emu::kShfl, mask, v, src_lane, width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::nt_emu::warp_exchange(::nt_emu::kShflXor, mask, v, lane_mask, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::nt_emu::warp_exchange(::nt_emu::kShflUp, mask, v, static_cast<int>(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::nt_emu::warp_exchange(::nt_emu::kShflDown, mask, v, static_cast<int>(delta), width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(::nt_emu::warp_op(::nt_emu::kBallot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return static_cast<int>(::nt_emu::warp_op(::nt_emu::kAny, mask, pred != 0, 0, 32)); }
inline int __all_sync(unsigned mask, int pred) { return static_cast<int>(::nt_emu::warp_op(::nt_emu::kAll, mask, pred != 0, 0, 32)); }

// ---------------------------------------------------------------------------------------
// Atomics (fibers of one block share a host thread, but blocks of different launches may
// run on different host threads: real atomic instructions).

template <class T>
T nt_emu_atomic_update(T *p, T (*f)(T, T), T v) {
  T old, next;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  do {
    next = f(old, v);
  } while (!__atomic_compare_exchange(p, &old, &next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return old;
}
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline float atomicAdd(float *p, float v) {
  return nt_emu_atomic_update<float>(p, [](float a, float b) { return a + b; }, v);
}
inline double atomicAdd(double *p, double v) {
  return nt_emu_atomic_update<double>(p, [](double a, double b) { return a + b; }, v);
}
inline int atomicSub(int *p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicSub(unsigned *p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline int atomicExch(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned *p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline float atomicExch(float *p, float v) {
  return nt_emu_atomic_update<float>(p, [](float, float b) { return b; }, v);
}
inline int atomicMax(int *p, int v) {
  return nt_emu_atomic_update<int>(p, [](int a, int b) { return a > b ? a : b; }, v);
}
inline unsigned atomicMax(unsigned *p, unsigned v) {
  return nt_emu_atomic_update<unsigned>(p, [](unsigned a, unsigned b) { return a > b ? a : b; }, v);
}
inline int atomicMin(int *p, int v) {
  return nt_emu_atomic_update<int>(p, [](int a, int b) { return a < b ? a : b; }, v);
}
inline unsigned atomicMin(unsigned *p, unsigned v) {
  return nt_emu_atomic_update<unsigned>(p, [](unsigned a, unsigned b) { return a < b ? a : b; }, v);
}
inline int atomicAnd(int *p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline int atomicOr(int *p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline int atomicXor(int *p, int v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }
template <class T>
T nt_emu_atomic_cas(T *p, T compare, T v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;  // the old value either way
}
inline int atomicCAS(int *p, int c, int v) { return nt_emu_atomic_cas(p, c, v); }
inline unsigned atomicCAS(unsigned *p, unsigned c, unsigned v) { return nt_emu_atomic_cas(p, c, v); }
inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long c, unsigned long long v) { return nt_emu_atomic_cas(p, c, v); }

// ---------------------------------------------------------------------------------------
// Float intrinsics. The build uses ISO C++ (no FMA contraction), so these round as named.

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __expf(float a) { return std::exp(a); }
inline float __logf(float a) { return std::log(a); }
inline float __sinf(float a) { return std::sin(a); }
inline float __cosf(float a) { return std::cos(a); }
inline float __saturatef(float a) { return a < 0.0f ? 0.0f : a > 1.0f ? 1.0f : a; }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
