// Internal interface of the CUDA emulator's runtime (test/cuda-emu/src): device memory with
// guard pages, error state, device limits, kernel attributes. Device-side API: ../include/cuda-emu.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>

namespace nt_emu {

// Limits of the emulated device (an sm_90 part).
constexpr int kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxGridX = 2147483647u, kMaxGridYZ = 65535u;
constexpr size_t kSmemDefault = 48 * 1024;  // dynamic shared memory without the opt-in
constexpr size_t kSmemOptin = 232448;       // sharedMemPerBlockOptin of an H100
constexpr size_t kPage = 4096;

// One lock for the whole emulated device: API calls and kernels run one at a time.
std::recursive_mutex &device_mutex();

// Prints "cuda-emu: <message>" to stderr.
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Errors: record() sets the calling thread's last error (cudaGetLastError) and returns e;
// a sticky error (a fault in a kernel) is returned by every later call, as on a real device.
cudaError_t record(cudaError_t e);
void set_sticky(cudaError_t e);
cudaError_t sticky();

// Device memory (memory.cc). Each allocation ends at a page boundary, 256-byte aligned,
// between inaccessible guard pages; the slack around it and fresh memory are 0xFF bytes
// (NaN as f32 / f16 / bf16, -1 as integers).
struct Allocation {
  char *ptr;
  size_t size;
  char *map;  // the whole mapping: guard page, slack, data, slack, guard page
  size_t map_size;
};
cudaError_t device_alloc(void **p, size_t bytes);
cudaError_t device_free(const void *p, const char *what);
// The live allocation holding p (p == its end counts too, for empty ranges), or null.
const Allocation *find_allocation(const void *p);
// The allocation whose mapping (guards included) holds p, or null: for fault messages.
const Allocation *find_mapping(const void *p);
// Whether [p, p + bytes) lies inside one live allocation.
bool device_range(const void *p, size_t bytes);
// Checks that nothing wrote into the slack around any allocation; reports and returns false
// (with a sticky cudaErrorIllegalAddress) when something did. `after`: what just ran.
bool check_guards(const char *after);

// The largest dynamic shared memory a kernel may use (48 KB unless cudaFuncSetAttribute raised it).
size_t kernel_max_dynamic_smem(const void *kernel);
bool valid_stream(cudaStream_t s);

}  // namespace nt_emu
