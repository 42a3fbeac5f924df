// Backend loading: the built-in CPU table, or dlopen of libneurotap_<name>.so and its versioned
// nt_backend_get_api symbol. Every failure names its cause (file, symbol, version, driver).
#include "engine/backend.h"

#include <cstring>

#include "engine/config.h"
#include "engine/error.h"

#ifndef _WIN32
#include <dlfcn.h>
#endif

namespace nt {

static_assert(static_cast<int>(Activation::GeluTanh) == NT_ACT_GELU_TANH && static_cast<int>(Activation::GeluErf) == NT_ACT_GELU_ERF &&
                  static_cast<int>(Activation::Silu) == NT_ACT_SILU && static_cast<int>(Activation::Relu) == NT_ACT_RELU,
              "Activation and nt_activation must share their numbering");

std::shared_ptr<Backend> Backend::cpu(int threads) {
  std::shared_ptr<Backend> b(new Backend());
  b->api_ = cpu_backend_api();
  char err[256] = {0};
  b->ctx_ = b->api_->create(0, threads, err, sizeof err);
  if (!b->ctx_) fail(code::kInternal, err);
  b->name_ = "cpu";
  b->host_memory_ = true;
  return b;
}

namespace {

struct Opened {
  void *library = nullptr;
  const nt_backend_api *api = nullptr;
};

// Opens the library and resolves a table of our ABI version; throws with the reason.
Opened open_library(const std::string &name, const std::string &dir) {
#ifdef _WIN32
  fail(code::kDeviceUnavailable, "the " + name + " backend is not supported on Windows yet");
#else
  const std::string file = "libneurotap_" + name + ".so";
  std::string errors;
  void *lib = nullptr;
  for (const std::string &candidate : {dir + "/" + file, file}) {
    dlerror();
    lib = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    const char *e = dlerror();
    errors += "\n  " + candidate + ": " + (e ? e : "not found");
  }
  if (!lib)
    fail(code::kDeviceUnavailable, "the " + name + " backend library " + file + " could not be loaded (build it with `npm run build:cmake` on a machine with CUDA and cuBLAS):" + errors);
  auto get = reinterpret_cast<nt_backend_get_api_fn>(dlsym(lib, NT_BACKEND_GET_API_SYMBOL));
  if (!get) {
    dlclose(lib);
    fail(code::kDeviceUnavailable, file + " has no " NT_BACKEND_GET_API_SYMBOL " symbol");
  }
  const nt_backend_api *api = get(NT_BACKEND_ABI_VERSION);
  if (!api || api->abi_version != NT_BACKEND_ABI_VERSION) {
    dlclose(lib);
    fail(code::kDeviceUnavailable, file + " does not implement backend ABI version " + std::to_string(NT_BACKEND_ABI_VERSION) + " (rebuild it)");
  }
  return {lib, api};
#endif
}

}  // namespace

std::shared_ptr<Backend> Backend::load(const std::string &name, const std::string &dir, int device, int threads) {
  Opened o = open_library(name, dir);
  std::shared_ptr<Backend> b(new Backend());
  b->library_ = o.library;
  b->api_ = o.api;
  b->name_ = name;
  char err[512] = {0};
  b->ctx_ = o.api->create(device, threads, err, sizeof err);
  if (!b->ctx_) fail(code::kDeviceUnavailable, "the " + name + " backend could not start: " + (err[0] ? err : "unknown reason"));
  return b;
}

std::string Backend::probe(const std::string &name, const std::string &dir, std::string *device_name) {
  try {
    std::shared_ptr<Backend> b = load(name, dir, 0, 1);
    if (device_name) *device_name = b->device_name();
    return "";
  } catch (const EngineError &e) {
    return e.what();
  }
}

Backend::~Backend() {
  if (ctx_) api_->destroy(ctx_);
#ifndef _WIN32
  if (library_) dlclose(library_);
#endif
}

void Backend::check(int rc, const char *what) const {
  if (rc != 0) fail(code::kBackend, std::string(name_) + " backend: " + what + " failed: " + api_->last_error(ctx_));
}

DeviceBuffer::DeviceBuffer(std::shared_ptr<Backend> be, size_t bytes) : be_(std::move(be)), bytes_(bytes) {
  if (bytes == 0) return;
  ptr_ = be_->api().alloc(be_->ctx(), bytes);
  if (!ptr_) fail(code::kOutOfMemory, "out of " + be_->name() + " memory allocating " + std::to_string(bytes) + " bytes");
}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&o) noexcept {
  if (this != &o) {
    reset();
    be_ = std::move(o.be_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

DeviceBuffer DeviceBuffer::upload(std::shared_ptr<Backend> be, const void *host, size_t bytes) {
  DeviceBuffer b(be, bytes);
  if (bytes) be->check(be->api().copy_to_device(be->ctx(), b.data(), host, bytes), "upload");
  return b;
}

DeviceBuffer DeviceBuffer::adopt(std::shared_ptr<Backend> be, void *ptr, size_t bytes) {
  DeviceBuffer b;
  b.be_ = std::move(be);
  b.ptr_ = ptr;
  b.bytes_ = bytes;
  return b;
}

void DeviceBuffer::reset() {
  if (ptr_) be_->api().free(be_->ctx(), ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

}  // namespace nt
