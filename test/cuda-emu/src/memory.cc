// Emulated device memory: one mapping per allocation with guard pages around it, 0xFF (NaN)
// fill, an allocation table for pointer checks, and slack checks that catch writes past the end.
#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "emu.h"

namespace nt_emu {

namespace {

// Keyed by the user pointer.
std::map<uintptr_t, Allocation> &table() {
  static std::map<uintptr_t, Allocation> t;
  return t;
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The first byte in [p, end) that is not 0xFF, or null.
const char *damaged(const char *p, const char *end) {
  for (; p < end; ++p)
    if (static_cast<unsigned char>(*p) != 0xFF) return p;
  return nullptr;
}

bool check_one(const Allocation &a, const char *after) {
  const char *data = a.map + kPage, *data_end = a.map + a.map_size - kPage;
  if (const char *bad = damaged(a.ptr + a.size, data_end)) {
    report("%s wrote past the end of the %zu-byte device allocation at %p (byte %zu after the end changed)", after, a.size,
           static_cast<void *>(a.ptr), static_cast<size_t>(bad - (a.ptr + a.size)));
    return false;
  }
  if (const char *bad = damaged(data, a.ptr)) {
    report("%s wrote before the start of the %zu-byte device allocation at %p (%zu bytes before it changed)", after, a.size,
           static_cast<void *>(a.ptr), static_cast<size_t>(a.ptr - bad));
    return false;
  }
  return true;
}

}  // namespace

cudaError_t device_alloc(void **p, size_t bytes) {
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (bytes > (size_t{64} << 30)) return cudaErrorMemoryAllocation;  // more than the emulated 64 GiB
  const size_t body = round_up(bytes, 256), data = round_up(body, kPage), map_size = data + 2 * kPage;
  void *m = mmap(nullptr, map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return cudaErrorMemoryAllocation;
  char *map = static_cast<char *>(m);
  if (mprotect(map + kPage, data, PROT_READ | PROT_WRITE) != 0) {
    munmap(m, map_size);
    return cudaErrorMemoryAllocation;
  }
  std::memset(map + kPage, 0xFF, data);
  Allocation a{map + kPage + data - body, bytes, map, map_size};
  table()[reinterpret_cast<uintptr_t>(a.ptr)] = a;
  *p = a.ptr;
  return cudaSuccess;
}

cudaError_t device_free(const void *p, const char *what) {
  if (!p) return cudaSuccess;
  auto it = table().find(reinterpret_cast<uintptr_t>(p));
  if (it == table().end()) {
    const Allocation *inside = find_allocation(p);
    if (inside)
      report("%s(%p): not the start of an allocation (it is %zu bytes into the one at %p)", what, p,
             static_cast<size_t>(static_cast<const char *>(p) - inside->ptr), static_cast<void *>(inside->ptr));
    else
      report("%s(%p): not a live device allocation (freed twice, or never allocated)", what, p);
    return cudaErrorInvalidValue;
  }
  const bool intact = check_one(it->second, "a kernel or copy");
  munmap(it->second.map, it->second.map_size);
  table().erase(it);
  if (!intact) set_sticky(cudaErrorIllegalAddress);
  return cudaSuccess;
}

const Allocation *find_allocation(const void *p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = table().upper_bound(a);
  if (it == table().begin()) return nullptr;
  --it;
  return a <= it->first + it->second.size ? &it->second : nullptr;
}

const Allocation *find_mapping(const void *p) {
  const char *c = static_cast<const char *>(p);
  for (const auto &kv : table())
    if (c >= kv.second.map && c < kv.second.map + kv.second.map_size) return &kv.second;
  return nullptr;
}

bool device_range(const void *p, size_t bytes) {
  const Allocation *a = find_allocation(p);
  return a && static_cast<const char *>(p) + bytes <= a->ptr + a->size;
}

bool check_guards(const char *after) {
  for (const auto &kv : table()) {
    if (!check_one(kv.second, after)) {
      set_sticky(cudaErrorIllegalAddress);
      return false;
    }
  }
  return true;
}

}  // namespace nt_emu
