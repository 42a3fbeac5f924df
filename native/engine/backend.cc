// Backend loading: the built-in CPU table, or dlopen of libneurotap_<name>.so and its versioned
// nt_backend_get_api symbol. A dependency the loader cannot find (cuBLAS, the CUDA runtime) is
// looked for in the CUDA toolkit and the given folders (pip wheels) and preloaded. Every failure
// names its cause (file, symbol, version, driver, the folders searched). Test: test/cuda-load.test.ts.
#include "engine/backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "engine/config.h"
#include "engine/error.h"

#ifndef _WIN32
#include <dlfcn.h>
#include <unistd.h>
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

#ifndef _WIN32
// Where a backend's dependencies are looked for after the loader's own search: the caller's
// folders (pip wheels' nvidia/cu13/lib, found by the TypeScript side), then the CUDA toolkit.
std::vector<std::string> dependency_dirs(const std::vector<std::string> &extra) {
  std::vector<std::string> dirs = extra;
  for (const char *var : {"CUDA_HOME", "CUDA_PATH"}) {
    const char *home = std::getenv(var);
    if (home && *home) {
      dirs.push_back(std::string(home) + "/lib64");
      dirs.push_back(std::string(home) + "/lib");
    }
  }
  dirs.push_back("/usr/local/cuda/lib64");
  dirs.push_back("/usr/local/cuda/targets/x86_64-linux/lib");
  std::vector<std::string> unique;
  for (const std::string &d : dirs)
    if (!d.empty() && std::find(unique.begin(), unique.end(), d) == unique.end()) unique.push_back(d);
  return unique;
}

// The library a dlopen error says is missing when it is not `file` itself (glibc:
// "libcublasLt.so.13: cannot open shared object file: ..."); "" otherwise.
std::string missing_dependency(const std::string &error, const std::string &file) {
  const size_t at = error.find(": cannot open shared object file");
  if (at == std::string::npos) return "";
  std::string lib = error.substr(0, at);
  const size_t colon = lib.rfind(": ");
  if (colon != std::string::npos) lib = lib.substr(colon + 2);
  const size_t slash = lib.rfind('/');
  if ((slash == std::string::npos ? lib : lib.substr(slash + 1)) == file || lib.find('/') != std::string::npos) return "";
  return lib;
}

// dlopens `dep` (RTLD_GLOBAL, kept for the process) from the first folder that has it, so that
// the backend's own dlopen finds it loaded. Otherwise returns false and `looked` says where.
bool preload_dependency(const std::string &dep, const std::string &file, const std::vector<std::string> &dirs, std::string *looked) {
  const char *ld = std::getenv("LD_LIBRARY_PATH");
  *looked = "LD_LIBRARY_PATH (" + std::string(ld && *ld ? ld : "unset") + "), the system library folders (ld.so.cache), " + file +
            "'s RUNPATH (its own folder, /usr/local/cuda/lib64)";
  for (const std::string &d : dirs) {
    const std::string path = d + "/" + dep;
    *looked += ", " + d;
    if (access(path.c_str(), F_OK) != 0) continue;
    dlerror();
    if (dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) return true;
    const char *e = dlerror();
    *looked += " (" + std::string(e ? e : "could not be loaded") + ")";
  }
  return false;
}
#endif

// Opens the library and resolves a table of our ABI version; throws with the reason.
Opened open_library(const std::string &name, const std::string &dir, const std::vector<std::string> &library_dirs) {
#ifdef _WIN32
  fail(code::kDeviceUnavailable, "the " + name + " backend is not supported on Windows yet");
#else
  const std::string file = "libneurotap_" + name + ".so";
  const std::vector<std::string> dep_dirs = dependency_dirs(library_dirs);
  std::string errors;
  std::string hint = "build it with `neurotap build-cuda` on a machine with nvcc and cuBLAS; see docs/gpu.md";
  void *lib = nullptr;
  for (const std::string &candidate : {dir + "/" + file, file}) {
    std::set<std::string> tried;
    for (;;) {
      dlerror();
      lib = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib) break;
      const char *e = dlerror();
      const std::string error = e ? e : "not found";
      const std::string dep = missing_dependency(error, file);
      if (dep.empty() || tried.count(dep)) {
        errors += "\n  " + candidate + ": " + error;
        break;
      }
      tried.insert(dep);
      std::string looked;
      if (!preload_dependency(dep, file, dep_dirs, &looked)) {
        errors += "\n  " + candidate + " needs " + dep + ", which was not found. Looked in: " + looked;
        hint = dep + " is missing: install the CUDA toolkit or `pip install nvidia-cublas`, or add its folder to LD_LIBRARY_PATH or NEUROTAP_CUDA_LIBRARY_PATH; see docs/gpu.md";
        break;
      }
    }
    // A library in the addon's folder that failed on a dependency is the one meant: the loader
    // path's copy, if any, would only add noise to the error.
    if (lib || (candidate != file && access(candidate.c_str(), F_OK) == 0)) break;
  }
  if (!lib) fail(code::kDeviceUnavailable, "the " + name + " backend library " + file + " could not be loaded (" + hint + "):" + errors);
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

std::shared_ptr<Backend> Backend::load(const std::string &name, const std::string &dir, int device, int threads, const std::vector<std::string> &library_dirs) {
  Opened o = open_library(name, dir, library_dirs);
  std::shared_ptr<Backend> b(new Backend());
  b->library_ = o.library;
  b->api_ = o.api;
  b->name_ = name;
  char err[512] = {0};
  b->ctx_ = o.api->create(device, threads, err, sizeof err);
  if (!b->ctx_) fail(code::kDeviceUnavailable, "the " + name + " backend could not start: " + (err[0] ? err : "unknown reason"));
  return b;
}

std::string Backend::probe(const std::string &name, const std::string &dir, std::string *device_name, const std::vector<std::string> &library_dirs) {
  try {
    std::shared_ptr<Backend> b = load(name, dir, 0, 1, library_dirs);
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
