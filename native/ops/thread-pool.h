// A fixed pool of worker threads for data-parallel loops; the calling thread takes part.
// Items are claimed from an atomic counter, so uneven items balance themselves.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nt {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Calls fn(i) for every i in [0, n) across the pool and returns when all are done.
  // Not reentrant: one parallel_for at a time per pool (the engine serializes runs).
  void parallel_for(int64_t n, const std::function<void(int64_t)> &fn);

 private:
  void worker_loop();
  void drain();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)> *job_ = nullptr;
  int64_t job_n_ = 0;
  std::atomic<int64_t> next_{0};
  size_t finished_ = 0;  // workers done with the current generation
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace nt
