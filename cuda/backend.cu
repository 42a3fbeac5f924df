// The CUDA backend's context, memory and copies, and the exported nt_backend_get_api table
// (contract: native/ops/backend-abi.h; reference: native/ops/cpu-backend.cc).
#include <cstdint>
#include <new>

#include "common.cuh"
#include "gemm.h"
#include "ops.cuh"

#if defined(_WIN32)
#define NT_EXPORT __declspec(dllexport)
#else
#define NT_EXPORT __attribute__((visibility("default")))
#endif

namespace {

void write_err(char *err, size_t err_len, const char *fmt, ...) {
  if (!err || !err_len) return;
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(err, err_len, fmt, args);
  va_end(args);
}

void release(nt_backend *be) {
  if (!be) return;
  if (be->gemm) nt_gemm_destroy(be, be->gemm);  // enqueues the free of its scratch
  // Wait for every enqueued op and free before the pool and the stream go.
  if (be->stream) cudaStreamSynchronize(be->stream);
  // Allocations the engine has not freed keep their memory until they are (cudaMemPoolDestroy).
  if (be->pool) cudaMemPoolDestroy(be->pool);
  if (be->stream) cudaStreamDestroy(be->stream);
  delete be;
}

// A private stream-ordered pool: alloc/free are cheap and ordered with the ops, and a release
// threshold of "never" keeps freed memory for reuse instead of returning it at every sync.
// Null (plain cudaMalloc) where the device has no memory pools.
cudaError_t create_pool(int device, cudaMemPool_t *pool) {
  *pool = nullptr;
  int supported = 0;
  cudaError_t err = cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device);
  if (err != cudaSuccess || !supported) return cudaSuccess;
  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  err = cudaMemPoolCreate(pool, &props);
  if (err != cudaSuccess) return err;
  uint64_t keep = UINT64_MAX;
  return cudaMemPoolSetAttribute(*pool, cudaMemPoolAttrReleaseThreshold, &keep);
}

// Whether this library has code the device can run. nvcc lists the architectures it compiled for
// in __CUDA_ARCH_LIST__ (e.g. 800,900); every build (CMakeLists.txt, check.mjs, `neurotap
// build-cuda`) embeds a cubin and PTX for each, so a device runs this library when its compute
// capability is at least the lowest one (cubins run on later minors, PTX on later majors).
// Without the macro (another compiler) nothing is checked. Writes the list into `archs`.
bool arch_supported(int major, int minor, char *archs, size_t archs_len) {
#ifdef __CUDA_ARCH_LIST__
  constexpr int kArchs[] = {__CUDA_ARCH_LIST__};
  int lowest = kArchs[0];
  size_t used = 0;
  archs[0] = '\0';
  for (int a : kArchs) {
    if (a < lowest) lowest = a;
    if (used < archs_len) used += std::snprintf(archs + used, archs_len - used, "%s%d.%d", used ? ", " : "", a / 100, a / 10 % 10);
  }
  return major * 100 + minor * 10 >= lowest;
#else
  (void)major, (void)minor, (void)archs, (void)archs_len;
  return true;
#endif
}

nt_backend *cuda_create(int32_t device, int32_t /*threads: the CPU pool size, unused here*/, char *err, size_t err_len) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
    write_err(err, err_len, "no CUDA device found");
    return nullptr;
  }
  if (e != cudaSuccess) {
    write_err(err, err_len, "no CUDA driver: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    return nullptr;
  }
  if (device < 0 || device >= count) {
    write_err(err, err_len, "CUDA device %d does not exist (this machine has %d)", device, count);
    return nullptr;
  }
  if ((e = cudaSetDevice(device)) != cudaSuccess) {
    write_err(err, err_len, "cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
    return nullptr;
  }
  nt_backend *be = new (std::nothrow) nt_backend();
  if (!be) {
    write_err(err, err_len, "out of host memory");
    return nullptr;
  }
  be->device = device;
  cudaDeviceProp prop;
  if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
    write_err(err, err_len, "cannot query CUDA device %d: %s", device, cudaGetErrorString(e));
    release(be);
    return nullptr;
  }
  char archs[128];
  if (!arch_supported(prop.major, prop.minor, archs, sizeof archs)) {
    write_err(err, err_len, "CUDA device %d (%s) has compute capability %d.%d; this libneurotap_cuda.so was built for %s (rebuild it for this GPU: neurotap build-cuda --arch %d%d)",
              device, prop.name, prop.major, prop.minor, archs, prop.major, prop.minor);
    release(be);
    return nullptr;
  }
  std::snprintf(be->name, sizeof be->name, "%s", prop.name);
  be->max_smem_optin = static_cast<int>(prop.sharedMemPerBlockOptin);
  // Non-blocking: our stream never waits for work other libraries put on the legacy stream.
  if ((e = cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking)) != cudaSuccess) {
    write_err(err, err_len, "cannot create a CUDA stream on device %d: %s", device, cudaGetErrorString(e));
    be->stream = nullptr;
    release(be);
    return nullptr;
  }
  if ((e = create_pool(device, &be->pool)) != cudaSuccess) {
    write_err(err, err_len, "cannot create a CUDA memory pool on device %d: %s", device, cudaGetErrorString(e));
    release(be);
    return nullptr;
  }
  if (nt_gemm_init(&be->gemm, err, err_len) != 0) {
    be->gemm = nullptr;
    release(be);
    return nullptr;
  }
  return be;
}

void cuda_destroy(nt_backend *be) {
  if (!be) return;
  nt_use_device(be);
  release(be);
}

const char *cuda_device_name(nt_backend *be) { return be->name; }
const char *cuda_last_error(nt_backend *be) { return be->last_error; }

int cuda_synchronize(nt_backend *be) {
  NT_CUDA_ENTER(be);
  NT_CUDA_CHECK(be, cudaStreamSynchronize(be->stream));
  return 0;
}

void *cuda_alloc(nt_backend *be, size_t bytes) {
  if (nt_use_device(be) != cudaSuccess) {
    nt_fail(be, "alloc: cannot make CUDA device %d current", be->device);
    return nullptr;
  }
  if (bytes == 0) bytes = 1;  // a distinct, freeable pointer, as the CPU backend gives
  void *p = nullptr;
  const cudaError_t e = nt_device_malloc(be, &p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();  // allocation failures are not sticky; clear them for the next launch check
    nt_fail(be, "cannot allocate %zu bytes on CUDA device %d: %s", bytes, be->device, cudaGetErrorString(e));
    return nullptr;
  }
  return p;
}

void cuda_free(nt_backend *be, void *ptr) {
  if (!ptr) return;
  nt_use_device(be);
  // Stream-ordered: the memory is reused only after the ops already enqueued are done with it.
  const cudaError_t e = nt_device_free(be, ptr);
  if (e != cudaSuccess) nt_fail(be, "free: %s", cudaGetErrorString(e));
}

int cuda_copy_to_device(nt_backend *be, void *dst, const void *host_src, size_t bytes) {
  if (bytes == 0) return 0;
  NT_CUDA_ENTER(be);
  NT_CUDA_CHECK(be, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, be->stream));
  // From pageable memory the call returns once the bytes are staged, so the caller may reuse its
  // buffer at once. From page-locked memory the DMA reads it later: wait so the same holds.
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, host_src) == cudaSuccess) {
    if (attr.type == cudaMemoryTypeHost) NT_CUDA_CHECK(be, cudaStreamSynchronize(be->stream));
  } else {
    cudaGetLastError();
  }
  return 0;
}

int cuda_copy_to_host(nt_backend *be, void *host_dst, const void *src, size_t bytes) {
  if (bytes == 0) return 0;
  NT_CUDA_ENTER(be);
  NT_CUDA_CHECK(be, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, be->stream));
  // The host reads the bytes as soon as we return.
  NT_CUDA_CHECK(be, cudaStreamSynchronize(be->stream));
  return 0;
}

int cuda_copy_2d(nt_backend *be, void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t row_bytes, size_t rows) {
  if (rows == 0 || row_bytes == 0) return 0;
  if (row_bytes > dst_pitch || row_bytes > src_pitch)
    return nt_fail(be, "copy_2d: row_bytes %zu exceeds a pitch (dst %zu, src %zu)", row_bytes, dst_pitch, src_pitch);
  NT_CUDA_ENTER(be);
  NT_CUDA_CHECK(be, cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows, cudaMemcpyDeviceToDevice, be->stream));
  return 0;
}

nt_backend_api make_api() {
  nt_backend_api a = {};
  a.abi_version = NT_BACKEND_ABI_VERSION;
  a.name = "cuda";
  a.create = cuda_create;
  a.destroy = cuda_destroy;
  a.device_name = cuda_device_name;
  a.last_error = cuda_last_error;
  a.synchronize = cuda_synchronize;
  a.alloc = cuda_alloc;
  a.free = cuda_free;
  a.copy_to_device = cuda_copy_to_device;
  a.copy_to_host = cuda_copy_to_host;
  a.copy_2d = cuda_copy_2d;
  a.embed = nt_cuda_embed;
  a.add_positions = nt_cuda_add_positions;
  a.gemm = nt_cuda_gemm;
  a.layer_norm = nt_cuda_layer_norm;
  a.rms_norm = nt_cuda_rms_norm;
  a.mul_rows = nt_cuda_mul_rows;
  a.add = nt_cuda_add;
  a.activation = nt_cuda_activation;
  a.gated_activation = nt_cuda_gated_activation;
  a.rope = nt_cuda_rope;
  a.attention = nt_cuda_attention;
  a.attention_scores = nt_cuda_attention_scores;
  a.softmax_rows = nt_cuda_softmax_rows;
  a.attention_apply = nt_cuda_attention_apply;
  a.apply_edit = nt_cuda_apply_edit;
  a.softcap = nt_cuda_softcap;
  a.gemm_backward = nt_cuda_gemm_backward;
  a.norm_scale_backward = nt_cuda_norm_scale_backward;
  a.norm_backward = nt_cuda_norm_backward;
  a.activation_backward = nt_cuda_activation_backward;
  a.gated_activation_backward = nt_cuda_gated_activation_backward;
  a.softcap_backward = nt_cuda_softcap_backward;
  a.softmax_rows_backward = nt_cuda_softmax_rows_backward;
  a.attention_apply_backward = nt_cuda_attention_apply_backward;
  a.attention_scores_backward = nt_cuda_attention_scores_backward;
  // pack_weight_compute stays NULL: cuBLASLt already rounds the activations to the weight dtype
  // for F16 / BF16 weights (gemm-cublas.cu), so the engine reports that dtype as the compute mode.
  return a;
}

}  // namespace

extern "C" NT_EXPORT const nt_backend_api *nt_backend_get_api(int32_t abi_version) {
  static const nt_backend_api api = make_api();
  return abi_version == NT_BACKEND_ABI_VERSION ? &api : nullptr;
}
