// RunBuffers: typed arrays copied into native memory at the call, outputs handed back at the
// settlement (native/api/run-buffers.h). Tests: test/robustness.test.ts ("memory a hook or a
// transfer could keep").
#include "api/run-buffers.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <utility>

#include "api/errors.h"
#include "engine/error.h"

namespace nt {

namespace {

size_t element_size(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array:
      return 8;
    default:
      return 4;
  }
}

// The bytes of a live typed array (nullptr when it is detached). napi_get_typedarray_info
// also serves arrays over a SharedArrayBuffer, which napi_get_arraybuffer_info refuses.
void *bytes_of(Napi::TypedArray a) {
  void *data = nullptr;
  size_t length = 0;
  if (napi_get_typedarray_info(a.Env(), a, nullptr, &length, &data, nullptr, nullptr) != napi_ok) return nullptr;
  Napi::Value buffer = a.Get("buffer");  // a detached ArrayBuffer reads as length 0, data null
  if (buffer.IsArrayBuffer() && buffer.As<Napi::ArrayBuffer>().IsDetached()) return nullptr;
  return data;
}

bool is_typed(Napi::Value v, napi_typedarray_type type) { return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type; }

}  // namespace

// Large blocks the engine writes in full (every position's logits) are mapped, and the one
// released last (by the garbage collector, or once copied into a caller's array) is kept for the
// next run: a fresh block faults on every first-touched page, 50,000 faults for the 206 MB of a
// 1 x 1024 GPT-2 run's logits, about 5% of that forward's CPU time. The kept block is MADV_FREE:
// under memory pressure the kernel takes its pages back (they then fault in again, zeroed).
namespace {

constexpr size_t kReuseMin = size_t(4) << 20;
std::mutex reuse_mu;
void *reuse_block = nullptr;
size_t reuse_len = 0;

// The kept block when it fits `bytes` without wasting more than half of it, else a new mapping
// (zero-filled), or null (mmap failed: the caller falls back to calloc).
void *map_reusable(size_t bytes, size_t *len) {
  {
    std::lock_guard<std::mutex> lock(reuse_mu);
    if (reuse_block && reuse_len >= bytes && reuse_len / 2 <= bytes) {
      void *p = reuse_block;
      *len = reuse_len;
      reuse_block = nullptr;
      return p;
    }
  }
  void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  *len = bytes;
  return p;
}

}  // namespace

void RunBuffers::Free::operator()(void *p) const {
  if (!mapped) return std::free(p);
  void *drop = p;
  size_t drop_len = mapped;
  {
    std::lock_guard<std::mutex> lock(reuse_mu);
#ifdef MADV_FREE
    if (madvise(p, mapped, MADV_FREE) == 0) {  // keep the latest: the next run likely has its size
      std::swap(drop, reuse_block);
      std::swap(drop_len, reuse_len);
    }
#endif
  }
  if (drop) munmap(drop, drop_len);
}

RunBuffers::Block RunBuffers::allocate(Napi::Env env, size_t bytes, const std::string &what, bool overwritten) {
  size_t mapped = 0;
  void *p = overwritten && bytes >= kReuseMin ? map_reusable(bytes, &mapped) : nullptr;
  // calloc: large blocks come zeroed from the OS without a pass over them.
  if (!p) p = std::calloc(bytes == 0 ? 1 : bytes, 1);
  if (!p) throw coded_error(env, code::kOutOfMemory, "out of memory allocating " + std::to_string(bytes) + " bytes for " + what);
  return Block(p, Free(mapped));
}

const void *RunBuffers::input(Napi::Env env, Napi::Value v, napi_typedarray_type type, const char *what) {
  if (!is_typed(v, type)) throw coded_error(env, code::kInvalidInput, std::string(what) + " has the wrong type");
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  const size_t bytes = a.ByteLength();
  Block b = allocate(env, bytes, what);
  if (bytes > 0) {
    const void *src = bytes_of(a);
    if (!src) throw coded_error(env, code::kInvalidInput, std::string(what) + " is detached");
    std::memcpy(b.get(), src, bytes);
  }
  inputs_.push_back(std::move(b));
  return inputs_.back().get();
}

void *RunBuffers::output(Napi::Env env, const std::string &what, napi_typedarray_type type, size_t count, Napi::Value target, bool copy_in,
                         bool overwritten) {
  Output o;
  o.what = what;
  o.type = type;
  o.count = count;
  o.bytes = count * element_size(type);
  if (!target.IsUndefined() && !target.IsNull()) {
    if (!is_typed(target, type)) throw coded_error(env, code::kInvalidInput, what + " has the wrong type");
    const size_t have = target.As<Napi::TypedArray>().ElementLength();
    if (have != count)
      throw coded_error(env, code::kBufferSize, what + " has " + std::to_string(have) + " elements, needs " + std::to_string(count));
    o.target = Napi::Persistent(target);
  }
  o.data = allocate(env, o.bytes, what, overwritten && !copy_in);
  if (copy_in && !o.target.IsEmpty()) {
    const void *src = bytes_of(target.As<Napi::TypedArray>());
    if (src) std::memcpy(o.data.get(), src, o.bytes);
  }
  outputs_.push_back(std::move(o));
  return outputs_.back().data.get();
}

std::vector<Napi::Value> RunBuffers::deliver(Napi::Env env) {
  // Every target is checked before any is filled, so a failed delivery changes nothing.
  for (const Output &o : outputs_) {
    if (o.target.IsEmpty()) continue;
    Napi::TypedArray t = o.target.Value().As<Napi::TypedArray>();
    if (t.ElementLength() != o.count || bytes_of(t) == nullptr)
      throw coded_error(env, code::kBufferSize, o.what + " was detached (transferred) while the run was in flight; it now holds " +
                                                    std::to_string(t.ElementLength()) + " elements, needs " + std::to_string(o.count));
  }
  std::vector<Napi::Value> out;
  for (Output &o : outputs_) {
    if (!o.target.IsEmpty()) {
      Napi::TypedArray t = o.target.Value().As<Napi::TypedArray>();
      std::memcpy(bytes_of(t), o.data.get(), o.bytes);
      out.push_back(t);
      continue;
    }
    Napi::ArrayBuffer buffer;
    try {
      // Zero-copy: JS owns the block from here on and frees it with the ArrayBuffer.
      // The finalizer's hint carries the mapped length (0: malloc'ed).
      const uintptr_t mapped = o.data.get_deleter().mapped;
      buffer = Napi::ArrayBuffer::New(
          env, o.data.get(), o.bytes, [](Napi::Env, void *p, void *hint) { Free(reinterpret_cast<uintptr_t>(hint))(p); },
          reinterpret_cast<void *>(mapped));
      o.data.release();
    } catch (const Napi::Error &) {
      // Runtimes that forbid external buffers: copy instead.
      buffer = Napi::ArrayBuffer::New(env, o.bytes);
      std::memcpy(buffer.Data(), o.data.get(), o.bytes);
    }
    napi_value array;
    if (napi_create_typedarray(env, o.type, o.count, buffer, 0, &array) != napi_ok) {
      bool pending = false;
      napi_value ignored;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &ignored);
      throw coded_error(env, code::kOutOfMemory, o.what + ": " + std::to_string(o.count) + " elements do not fit in a JS typed array");
    }
    out.push_back(Napi::Value(env, array));
  }
  return out;
}

}  // namespace nt
