// C++ side of the backend ABI (ops/backend-abi.h): a Backend owns one device context (the
// in-process CPU backend, or a library such as libneurotap_cuda.so found and dlopen'ed at run
// time), and DeviceBuffer owns memory on it. Failures become coded EngineErrors.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ops/backend-abi.h"

namespace nt {

const nt_backend_api *cpu_backend_api();
class ThreadPool;
// The built-in CPU backend's worker pool, for engine-side loops over host data (SAEs).
ThreadPool *cpu_backend_pool(nt_backend *be);

class Backend {
 public:
  // The CPU backend with `threads` workers.
  static std::shared_ptr<Backend> cpu(int threads);
  // A backend library (e.g. "cuda"): looked up next to the addon (`dir`), then on the loader
  // path. A dependency the loader cannot find (libcublasLt.so.13) is looked for in
  // `library_dirs`, then the CUDA toolkit (CUDA_HOME, CUDA_PATH, /usr/local/cuda), and preloaded.
  // Throws EngineError(ERR_DEVICE_UNAVAILABLE) with the reason: library or dependency missing
  // (with every folder searched), ABI mismatch, no driver or device, unsupported GPU.
  static std::shared_ptr<Backend> load(const std::string &name, const std::string &dir, int device, int threads,
                                       const std::vector<std::string> &library_dirs = {});
  // Why `load` would fail, or "" if it works (for device: 'auto' and for tests).
  static std::string probe(const std::string &name, const std::string &dir, std::string *device_name,
                           const std::vector<std::string> &library_dirs = {});
  ~Backend();
  Backend(const Backend &) = delete;
  Backend &operator=(const Backend &) = delete;

  const nt_backend_api &api() const { return *api_; }
  nt_backend *ctx() const { return ctx_; }
  const std::string &name() const { return name_; }
  std::string device_name() const { return api_->device_name(ctx_); }
  // Host-addressable memory: hooks can read and write backend buffers in place.
  bool host_memory() const { return host_memory_; }
  // The built-in CPU backend's thread pool, or null for other backends.
  ThreadPool *host_pool() const { return library_ == nullptr && api_ == cpu_backend_api() ? cpu_backend_pool(ctx_) : nullptr; }
  // Throws EngineError(ERR_BACKEND) with the backend's last error when rc != 0.
  void check(int rc, const char *what) const;

 private:
  Backend() = default;
  const nt_backend_api *api_ = nullptr;
  nt_backend *ctx_ = nullptr;
  void *library_ = nullptr;  // dlopen handle, or null for the built-in CPU backend
  std::string name_;
  bool host_memory_ = false;
};

// Memory on a backend, freed on destruction. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(std::shared_ptr<Backend> be, size_t bytes);
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer &&o) noexcept { *this = std::move(o); }
  DeviceBuffer &operator=(DeviceBuffer &&o) noexcept;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  // Uploads `bytes` from host memory into a new buffer.
  static DeviceBuffer upload(std::shared_ptr<Backend> be, const void *host, size_t bytes);
  // Takes ownership of memory the backend allocated (e.g. by pack_weight).
  static DeviceBuffer adopt(std::shared_ptr<Backend> be, void *ptr, size_t bytes);

  void *data() const { return ptr_; }
  float *f32() const { return static_cast<float *>(ptr_); }
  size_t bytes() const { return bytes_; }
  bool empty() const { return ptr_ == nullptr; }
  void reset();

 private:
  std::shared_ptr<Backend> be_;
  void *ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace nt
