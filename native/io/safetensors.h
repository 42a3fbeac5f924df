// Memory-mapped safetensors reader that validates the whole header before any tensor is
// touched, plus a checkpoint view over single-file and sharded (index.json) models.
// Tests: test/native/test-io.cc and test/errors.test.ts (truncated/malformed files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/task.h"

namespace nt {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char *dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr;  // inside the mapping; valid while the file is open
  size_t nbytes = 0;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws EngineError (ERR_FILE_NOT_FOUND, ERR_FILE_READ,
  // ERR_SAFETENSORS_INVALID) with the path and the reason.
  static std::unique_ptr<SafetensorsFile> open(const std::string &path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile &) = delete;
  SafetensorsFile &operator=(const SafetensorsFile &) = delete;

  const std::string &path() const { return path_; }
  const std::vector<TensorView> &tensors() const { return tensors_; }
  const TensorView *find(const std::string &name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void *map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<uint8_t> heap_;  // used where mmap is unavailable
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
};

// All tensors of a model directory: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json`.
class Checkpoint {
 public:
  static std::unique_ptr<Checkpoint> open(const std::string &dir);

  const TensorView *find(const std::string &name) const;
  bool has(const std::string &name) const { return find(name) != nullptr; }
  // Copies a tensor as float32 (upcasting F16/BF16/F64), checking its shape.
  // Throws ERR_TENSOR_MISSING / ERR_TENSOR_SHAPE / ERR_SAFETENSORS_INVALID (non-float dtype).
  std::vector<float> load_f32(const std::string &name, const std::vector<int64_t> &shape) const;
  std::vector<std::string> names() const;
  const std::string &dir() const { return dir_; }
  // From now on load_f32 adds each tensor's bytes to control->done (control->total: all
  // tensors' bytes) and throws ERR_ABORTED once control->cancelled is set.
  void set_control(TaskControl *control);

 private:
  std::string dir_;
  TaskControl *control_ = nullptr;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView *> by_name_;
};

// Scalar conversions, exact (round-trip tested against numpy in test/native).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);
// Round to nearest even, as torch's .to(float16 / bfloat16).
uint16_t f32_to_f16(float f);
uint16_t f32_to_bf16(float f);

std::string shape_string(const std::vector<int64_t> &shape);

}  // namespace nt
