// KV cache row operations for continuous batching (src/serve/batcher.ts): sequences join a
// shared cache between forwards by copying in their row of their prompts' forward, leave by
// masking their row, and the cache's positions move as a whole when a longer prompt joins or the
// cache fills. A row's positions are its indices minus its left padding, so moving keys and
// padding together changes nothing a forward computes. Tests: test/cache-ops.test.ts.
#include <algorithm>
#include <string>

#include "engine/error.h"
#include "engine/model.h"

namespace nt {

namespace {

void check_cache(const Model &m, const KvCache &c, const char *what) {
  const ModelConfig &cfg = m.config();
  if (c.backend.get() != &m.backend() || c.heads != cfg.n_kv_heads || c.d_head != cfg.d_head || static_cast<int>(c.k.size()) != cfg.n_layers)
    fail(code::kInvalidInput, std::string("the ") + what + " KV cache was made for another model");
}

}  // namespace

void Model::shift_cache(KvCache &cache, int64_t delta) {
  std::lock_guard<std::mutex> lock(run_mutex_);
  check_cache(*this, cache, "shifted");
  if (delta == 0) return;
  const int64_t min_pad = *std::min_element(cache.pad.begin(), cache.pad.end());
  if (delta > 0 && cache.len + delta > cache.capacity)
    fail(code::kInvalidInput, "cannot move the KV cache's " + std::to_string(cache.len) + " positions " + std::to_string(delta) + " later: its capacity is " +
                                  std::to_string(cache.capacity));
  if (delta < 0 && -delta > min_pad)
    fail(code::kInvalidInput, "cannot move the KV cache's positions " + std::to_string(-delta) + " earlier: a row has only " + std::to_string(min_pad) +
                                  " padding positions");
  // Kept positions [from, len) go to [from + delta, len + delta), through a scratch buffer (they overlap).
  const int64_t from = delta < 0 ? -delta : 0, n = cache.len - from;
  if (n > 0) {
    const size_t dkv = static_cast<size_t>(cache.heads * cache.d_head) * sizeof(float);
    const size_t pitch = static_cast<size_t>(cache.capacity) * dkv, width = static_cast<size_t>(n) * dkv, rows = static_cast<size_t>(cache.batch);
    DeviceBuffer tmp(be_, width * rows);
    const nt_backend_api &api = be_->api();
    for (std::vector<DeviceBuffer> *layers : {&cache.k, &cache.v})
      for (DeviceBuffer &buf : *layers) {
        char *base = static_cast<char *>(buf.data());
        be_->check(api.copy_2d(be_->ctx(), tmp.data(), width, base + from * dkv, pitch, width, rows), "kv shift");
        be_->check(api.copy_2d(be_->ctx(), base + (from + delta) * dkv, pitch, tmp.data(), width, width, rows), "kv shift");
      }
    be_->check(api.synchronize(be_->ctx()), "kv shift");
  }
  for (int32_t &p : cache.pad) p = static_cast<int32_t>(std::max<int64_t>(0, p + delta));
  cache.len += delta;
}

void Model::admit_to_cache(KvCache &dst, int64_t row, const KvCache *src, int64_t src_row) {
  std::lock_guard<std::mutex> lock(run_mutex_);
  check_cache(*this, dst, "target");
  if (row < 0 || row >= dst.batch) fail(code::kInvalidInput, "row " + std::to_string(row) + " is outside the KV cache's " + std::to_string(dst.batch) + " rows");
  if (!src) {  // the row leaves: its queries see no key before the next position
    dst.pad[static_cast<size_t>(row)] = static_cast<int32_t>(dst.len);
    return;
  }
  check_cache(*this, *src, "source");
  if (src_row < 0 || src_row >= src->batch)
    fail(code::kInvalidInput, "source row " + std::to_string(src_row) + " is outside the source KV cache's " + std::to_string(src->batch) + " rows");
  if (src->len > dst.len)
    fail(code::kInvalidInput, "the source KV cache's " + std::to_string(src->len) + " positions do not fit before the target's position " +
                                  std::to_string(dst.len) + " (move the target's positions later first)");
  if (src->len > 0) {
    const size_t dkv = static_cast<size_t>(dst.heads * dst.d_head) * sizeof(float);
    const size_t at = (static_cast<size_t>(row) * static_cast<size_t>(dst.capacity) + static_cast<size_t>(dst.len - src->len)) * dkv;
    const size_t width = static_cast<size_t>(src->len) * dkv;
    const size_t from = static_cast<size_t>(src_row) * static_cast<size_t>(src->capacity) * dkv;
    const nt_backend_api &api = be_->api();
    for (size_t L = 0; L < dst.k.size(); ++L) {
      be_->check(api.copy_2d(be_->ctx(), static_cast<char *>(dst.k[L].data()) + at, width, static_cast<const char *>(src->k[L].data()) + from, width, width, 1), "kv admit");
      be_->check(api.copy_2d(be_->ctx(), static_cast<char *>(dst.v[L].data()) + at, width, static_cast<const char *>(src->v[L].data()) + from, width, width, 1), "kv admit");
    }
    be_->check(api.synchronize(be_->ctx()), "kv admit");
  }
  dst.pad[static_cast<size_t>(row)] = static_cast<int32_t>(dst.len - src->len + src->pad[static_cast<size_t>(src_row)]);
}

}  // namespace nt
