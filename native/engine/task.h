// Cancellation and progress shared by a JS caller and a native task (a model load or a
// forward): JS sets `cancelled` from an AbortSignal and polls the progress counters; the task
// checks the flag between units of work (tensors, blocks) and throws ERR_ABORTED.
#pragma once

#include <atomic>
#include <cstdint>

#include "engine/error.h"

namespace nt {

struct TaskControl {
  std::atomic<bool> cancelled{false};
  std::atomic<uint64_t> done{0}, total{0};  // bytes read of a load (total set once the headers are read)

  void check(const char *what) const {
    if (cancelled.load(std::memory_order_relaxed)) fail(code::kAborted, std::string(what) + " was aborted");
  }
};

}  // namespace nt
