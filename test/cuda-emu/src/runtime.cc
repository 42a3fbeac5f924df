// The CUDA runtime calls the backend (cuda/*.cu) makes, emulated on the CPU: one sm_90 device,
// streams (work runs at once, in order), memory pools, malloc / free, copies and memsets with
// kind and range checks, pointer and function attributes, and CUDA's error state.
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "emu.h"

namespace nt_emu {

namespace {

thread_local cudaError_t t_last = cudaSuccess;
thread_local int t_device = 0;
cudaError_t g_sticky = cudaSuccess;
std::set<const void *> g_streams, g_pools, g_pinned;
std::map<const void *, size_t> g_smem_attr;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize

bool memory_pools() {
  const char *v = std::getenv("NT_EMU_NO_MEMORY_POOLS");
  return !(v && *v && std::strcmp(v, "0") != 0);
}

const char *kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "HostToHost";
    case cudaMemcpyHostToDevice: return "HostToDevice";
    case cudaMemcpyDeviceToHost: return "DeviceToHost";
    case cudaMemcpyDeviceToDevice: return "DeviceToDevice";
    default: return "Default";
  }
}

// Checks a copy of `rows` rows of `width` bytes (pitches in bytes) against its kind and the
// allocation table.
cudaError_t check_copy(const char *what, const void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t rows,
                       cudaMemcpyKind kind) {
  if (width > dpitch || width > spitch) {
    report("%s: width %zu exceeds a pitch (dst %zu, src %zu)", what, width, dpitch, spitch);
    return cudaErrorInvalidPitchValue;
  }
  const bool dst_dev = find_allocation(dst) != nullptr, src_dev = find_allocation(src) != nullptr;
  bool want_dst = dst_dev, want_src = src_dev;
  switch (kind) {
    case cudaMemcpyHostToHost: want_dst = want_src = false; break;
    case cudaMemcpyHostToDevice: want_dst = true, want_src = false; break;
    case cudaMemcpyDeviceToHost: want_dst = false, want_src = true; break;
    case cudaMemcpyDeviceToDevice: want_dst = want_src = true; break;
    case cudaMemcpyDefault: break;
    default: report("%s: unknown copy kind %d", what, static_cast<int>(kind)); return cudaErrorInvalidMemcpyDirection;
  }
  if (dst_dev != want_dst || src_dev != want_src) {
    report("%s: kind %s, but the destination %p is %s memory and the source %p is %s memory", what, kind_name(kind), dst, dst_dev ? "device" : "host",
           src, src_dev ? "device" : "host");
    return cudaErrorInvalidValue;
  }
  const size_t dst_span = rows ? (rows - 1) * dpitch + width : 0, src_span = rows ? (rows - 1) * spitch + width : 0;
  if (dst_dev && !device_range(dst, dst_span)) {
    const Allocation *a = find_allocation(dst);
    report("%s: %zu bytes to %p overrun the %zu-byte device allocation at %p (by %zu bytes)", what, dst_span, dst, a->size,
           static_cast<void *>(a->ptr), static_cast<size_t>(static_cast<const char *>(dst) + dst_span - (a->ptr + a->size)));
    return cudaErrorInvalidValue;
  }
  if (src_dev && !device_range(src, src_span)) {
    const Allocation *a = find_allocation(src);
    report("%s: %zu bytes from %p overrun the %zu-byte device allocation at %p (by %zu bytes)", what, src_span, src, a->size,
           static_cast<void *>(a->ptr), static_cast<size_t>(static_cast<const char *>(src) + src_span - (a->ptr + a->size)));
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t copy2d(const char *what, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t rows, cudaMemcpyKind kind,
                   cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (sticky()) return record(sticky());
  if (!valid_stream(stream)) return record(cudaErrorInvalidResourceHandle);
  if (width == 0 || rows == 0) return cudaSuccess;
  const cudaError_t e = check_copy(what, dst, dpitch, src, spitch, width, rows, kind);
  if (e != cudaSuccess) return record(e);
  for (size_t r = 0; r < rows; ++r) std::memmove(static_cast<char *>(dst) + r * dpitch, static_cast<const char *>(src) + r * spitch, width);
  return cudaSuccess;
}

cudaError_t memset_device(void *p, int value, size_t bytes, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (sticky()) return record(sticky());
  if (!valid_stream(stream)) return record(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  if (!device_range(p, bytes)) {
    report("cudaMemset: %zu bytes at %p are not inside one device allocation", bytes, p);
    return record(cudaErrorInvalidValue);
  }
  std::memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t alloc(void **p, size_t bytes, const char *what) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!p) return record(cudaErrorInvalidValue);
  if (sticky()) return record(sticky());
  const cudaError_t e = device_alloc(p, bytes);
  if (e != cudaSuccess) report("%s: cannot allocate %zu bytes", what, bytes);
  return record(e);
}

cudaError_t free_device(const void *p, const char *what) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (sticky()) return record(sticky());
  return record(device_free(p, what));
}

}  // namespace

std::recursive_mutex &device_mutex() {
  static std::recursive_mutex m;
  return m;
}

void report(const char *fmt, ...) {
  char msg[2048];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  std::fprintf(stderr, "cuda-emu: %s\n", msg);
}

cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) t_last = e;
  return e;
}
void set_sticky(cudaError_t e) {
  if (g_sticky == cudaSuccess) g_sticky = e;
}
cudaError_t sticky() { return g_sticky; }

size_t kernel_max_dynamic_smem(const void *kernel) {
  auto it = g_smem_attr.find(kernel);
  return it == g_smem_attr.end() ? kSmemDefault : it->second;
}

bool valid_stream(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread || g_streams.count(s); }

}  // namespace nt_emu

using namespace nt_emu;

#define NT_EMU_ENTER()                                         \
  std::lock_guard<std::recursive_mutex> nt_lock_(device_mutex()); \
  if (sticky()) return record(sticky())

extern "C" {

// ---- errors -----------------------------------------------------------------------------

cudaError_t cudaGetLastError(void) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  const cudaError_t e = sticky() ? sticky() : t_last;
  t_last = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  return sticky() ? sticky() : t_last;
}

#define NT_EMU_ERRORS(X)                                                                       \
  X(cudaSuccess, "no error")                                                                   \
  X(cudaErrorInvalidValue, "invalid argument")                                                 \
  X(cudaErrorMemoryAllocation, "out of memory")                                                \
  X(cudaErrorInvalidConfiguration, "invalid configuration argument")                           \
  X(cudaErrorInvalidPitchValue, "invalid pitch argument")                                      \
  X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                      \
  X(cudaErrorInvalidDevice, "invalid device ordinal")                                          \
  X(cudaErrorNoDevice, "no CUDA-capable device is detected")                                   \
  X(cudaErrorInvalidResourceHandle, "invalid resource handle")                                 \
  X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                       \
  X(cudaErrorLaunchFailure, "unspecified launch failure")                                      \
  X(cudaErrorInvalidDeviceFunction, "invalid device function")                                 \
  X(cudaErrorNotSupported, "operation not supported")

const char *cudaGetErrorName(cudaError_t e) {
#define NT_EMU_NAME(code, text) \
  if (e == code) return #code;
  NT_EMU_ERRORS(NT_EMU_NAME)
  return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
#define NT_EMU_TEXT(code, text) \
  if (e == code) return text;
  NT_EMU_ERRORS(NT_EMU_TEXT)
  return "unknown error";
}

// ---- devices ----------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int *count) {
  if (!count) return record(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) return record(cudaErrorInvalidDevice);
  t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
  if (!device) return record(cudaErrorInvalidValue);
  *device = t_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  NT_EMU_ENTER();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
  if (!prop) return record(cudaErrorInvalidValue);
  if (device != 0) return record(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "neurotap CUDA emulator (CPU)");
  prop->totalGlobalMem = size_t{64} << 30;
  prop->sharedMemPerBlock = kSmemDefault;
  prop->sharedMemPerBlockOptin = kSmemOptin;
  prop->sharedMemPerMultiprocessor = 233472;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = kMaxThreadsPerBlock;
  prop->maxThreadsDim[0] = 1024, prop->maxThreadsDim[1] = 1024, prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = static_cast<int>(kMaxGridX), prop->maxGridSize[1] = kMaxGridYZ, prop->maxGridSize[2] = kMaxGridYZ;
  // Compute capability 9.0, or NT_EMU_COMPUTE_CAPABILITY ("7.5"): tests of the backend's
  // refusal of a device older than the architectures it was built for.
  prop->major = 9;
  prop->minor = 0;
  if (const char *cc = std::getenv("NT_EMU_COMPUTE_CAPABILITY")) std::sscanf(cc, "%d.%d", &prop->major, &prop->minor);
  prop->multiProcessorCount = 132;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->l2CacheSize = 50 << 20;
  prop->unifiedAddressing = 1;
  prop->memoryPoolsSupported = memory_pools() ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
  if (!value) return record(cudaErrorInvalidValue);
  if (device != 0) return record(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMemoryPoolsSupported: *value = memory_pools() ? 1 : 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(kSmemOptin); break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(kSmemDefault); break;
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxGridDimX: *value = static_cast<int>(kMaxGridX); break;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ: *value = static_cast<int>(kMaxGridYZ); break;
    default: report("cudaDeviceGetAttribute: attribute %d is not emulated", static_cast<int>(attr)); return record(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

// ---- streams ----------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int) {
  NT_EMU_ENTER();
  if (!stream) return record(cudaErrorInvalidValue);
  *stream = reinterpret_cast<cudaStream_t>(new char);
  g_streams.insert(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!g_streams.erase(stream)) return record(cudaErrorInvalidResourceHandle);
  delete reinterpret_cast<char *>(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  NT_EMU_ENTER();
  return valid_stream(stream) ? cudaSuccess : record(cudaErrorInvalidResourceHandle);
}

// ---- memory -----------------------------------------------------------------------------

cudaError_t cudaMalloc(void **p, size_t bytes) { return alloc(p, bytes, "cudaMalloc"); }
cudaError_t cudaFree(void *p) { return free_device(p, "cudaFree"); }

cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!valid_stream(stream)) return record(cudaErrorInvalidResourceHandle);
  return alloc(p, bytes, "cudaMallocAsync");
}

cudaError_t cudaMallocFromPoolAsync(void **p, size_t bytes, cudaMemPool_t pool, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!g_pools.count(pool)) {
    report("cudaMallocFromPoolAsync: %p is not a live memory pool", static_cast<void *>(pool));
    return record(cudaErrorInvalidValue);
  }
  if (!valid_stream(stream)) return record(cudaErrorInvalidResourceHandle);
  return alloc(p, bytes, "cudaMallocFromPoolAsync");
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!valid_stream(stream)) return record(cudaErrorInvalidResourceHandle);
  return free_device(p, "cudaFreeAsync");
}

cudaError_t cudaMemPoolCreate(cudaMemPool_t *pool, const cudaMemPoolProps *props) {
  NT_EMU_ENTER();
  if (!memory_pools()) return record(cudaErrorNotSupported);
  if (!pool || !props || props->location.type != cudaMemLocationTypeDevice || props->location.id != 0 ||
      props->allocType != cudaMemAllocationTypePinned)
    return record(cudaErrorInvalidValue);
  *pool = reinterpret_cast<cudaMemPool_t>(new char);
  g_pools.insert(*pool);
  return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr, void *value) {
  NT_EMU_ENTER();
  return g_pools.count(pool) && value ? cudaSuccess : record(cudaErrorInvalidValue);
}

cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!g_pools.erase(pool)) return record(cudaErrorInvalidValue);
  delete reinterpret_cast<char *>(pool);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!p) return record(cudaErrorInvalidValue);
  *p = std::malloc(bytes ? bytes : 1);
  g_pinned.insert(*p);
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!g_pinned.erase(p)) return record(cudaErrorInvalidValue);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *attr, const void *p) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (!attr) return record(cudaErrorInvalidValue);
  std::memset(attr, 0, sizeof *attr);
  attr->device = 0;
  if (find_allocation(p)) {
    attr->type = cudaMemoryTypeDevice;
    attr->devicePointer = const_cast<void *>(p);
  } else if (g_pinned.count(p)) {
    attr->type = cudaMemoryTypeHost;
    attr->hostPointer = const_cast<void *>(p);
    attr->devicePointer = const_cast<void *>(p);
  } else {
    attr->type = cudaMemoryTypeUnregistered;
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  return copy2d("cudaMemcpyAsync", dst, bytes, src, bytes, bytes, 1, kind, stream);
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
  return copy2d("cudaMemcpy", dst, bytes, src, bytes, bytes, 1, kind, nullptr);
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  return copy2d("cudaMemcpy2DAsync", dst, dpitch, src, spitch, width, height, kind, stream);
}
cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height, cudaMemcpyKind kind) {
  return copy2d("cudaMemcpy2D", dst, dpitch, src, spitch, width, height, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t stream) { return memset_device(p, value, bytes, stream); }
cudaError_t cudaMemset(void *p, int value, size_t bytes) { return memset_device(p, value, bytes, nullptr); }

// ---- kernels ----------------------------------------------------------------------------

cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value) {
  NT_EMU_ENTER();
  if (!func) return record(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > kSmemOptin) {
      report("cudaFuncSetAttribute: %d bytes of dynamic shared memory, above the device's %zu", value, kSmemOptin);
      return record(cudaErrorInvalidValue);
    }
    g_smem_attr[func] = static_cast<size_t>(value);
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return value >= -1 && value <= 100 ? cudaSuccess : record(cudaErrorInvalidValue);
  report("cudaFuncSetAttribute: attribute %d is not emulated", static_cast<int>(attr));
  return record(cudaErrorInvalidValue);
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, const void *func) {
  NT_EMU_ENTER();
  if (!attr || !func) return record(cudaErrorInvalidValue);
  std::memset(attr, 0, sizeof *attr);
  attr->maxThreadsPerBlock = kMaxThreadsPerBlock;
  attr->maxDynamicSharedSizeBytes = static_cast<int>(kernel_max_dynamic_smem(func));
  attr->ptxVersion = attr->binaryVersion = 90;
  return cudaSuccess;
}

}  // extern "C"
