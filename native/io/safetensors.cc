// Safetensors format: u64 little-endian header length N, N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then data.
#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "engine/error.h"
#include "io/file.h"
#include "io/json.h"

#ifndef _WIN32
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace nt {

namespace {

// Headers and shard indexes are small (a few MB for the largest hub checkpoints); anything
// bigger is hostile.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

bool parse_dtype(const std::string &s, DType *out) {
  static const std::pair<const char *, DType> table[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  for (const auto &e : table)
    if (s == e.first) { *out = e.second; return true; }
  return false;
}

}  // namespace

const char *dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 1;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t> &shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do { ++e; mant <<= 1; } while ((mant & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3FF) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t absf = bits & 0x7FFFFFFFu;
  if (absf >= 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u | (absf > 0x7F800000u ? 0x200u : 0u));
  if (absf >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds past 65504: infinity
  if (absf < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (absf < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t mant = (absf & 0x007FFFFFu) | 0x00800000u;
    const int shift = 113 - static_cast<int>(absf >> 23) + 13;  // bits dropped from the 24-bit mantissa
    uint32_t half = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t h = ((absf >> 13) - (112u << 10));
  const uint32_t rest = absf & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string &path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const uint8_t *base = nullptr;
  size_t size = 0;
#ifndef _WIN32
  struct stat st;
  const int fd = open_regular_file(path, &st);
  size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void *m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      fail(code::kFileRead, "cannot map " + path + ": " + std::strerror(errno));
    }
    file->map_ = m;
    file->map_size_ = size;
    base = static_cast<const uint8_t *>(m);
  }
  ::close(fd);
#else
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(code::kFileNotFound, "no such file: " + path);
  size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  file->heap_.resize(size);
  if (size && !in.read(reinterpret_cast<char *>(file->heap_.data()), size))
    fail(code::kFileRead, "cannot read " + path);
  base = file->heap_.data();
#endif
  const std::string where = "safetensors file " + path;
  if (size < 8) fail(code::kSafetensorsInvalid, where + ": file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | base[i];
  if (header_len > kMaxHeaderBytes)
    fail(code::kSafetensorsInvalid, where + ": header length " + std::to_string(header_len) + " exceeds the 100 MiB limit");
  if (header_len > size - 8)
    fail(code::kSafetensorsInvalid, where + ": header length " + std::to_string(header_len) +
                                        " runs past the end of the file (" + std::to_string(size) + " bytes; truncated?)");
  const char *header = reinterpret_cast<const char *>(base + 8);
  Json root = json_parse(header, header_len, code::kSafetensorsInvalid, where + " header");
  if (!root.is_object()) fail(code::kSafetensorsInvalid, where + ": header is not a JSON object");
  const uint8_t *data = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  for (const auto &kv : root.object) {
    const std::string &name = kv.first;
    if (name == "__metadata__") continue;
    const Json &e = kv.second;
    const std::string tw = where + ": tensor '" + name + "'";
    if (!e.is_object()) fail(code::kSafetensorsInvalid, tw + " entry is not an object");
    const Json *jd = e.get("dtype");
    const Json *js = e.get("shape");
    const Json *jo = e.get("data_offsets");
    if (!jd || !jd->is_string()) fail(code::kSafetensorsInvalid, tw + " has no string 'dtype'");
    if (!js || !js->is_array()) fail(code::kSafetensorsInvalid, tw + " has no array 'shape'");
    if (!jo || !jo->is_array() || jo->array.size() != 2)
      fail(code::kSafetensorsInvalid, tw + " has no 'data_offsets' pair");
    TensorView t;
    t.name = name;
    if (!parse_dtype(jd->string, &t.dtype)) fail(code::kSafetensorsInvalid, tw + " has unknown dtype '" + jd->string + "'");
    uint64_t numel = 1;
    for (const Json &d : js->array) {
      if (!d.is_number() || !d.is_integer || d.integer < 0)
        fail(code::kSafetensorsInvalid, tw + " has a shape entry that is not a non-negative integer");
      uint64_t dim = static_cast<uint64_t>(d.integer);
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim)
        fail(code::kSafetensorsInvalid, tw + " shape overflows");
      numel *= dim;
      t.shape.push_back(d.integer);
    }
    const Json &b = jo->array[0], &en = jo->array[1];
    if (!b.is_integer || !en.is_integer || b.integer < 0 || en.integer < b.integer)
      fail(code::kSafetensorsInvalid, tw + " has invalid data_offsets");
    uint64_t begin = static_cast<uint64_t>(b.integer), end = static_cast<uint64_t>(en.integer);
    if (end > data_size)
      fail(code::kSafetensorsInvalid, tw + " data ends at byte " + std::to_string(end) + " but the data section has only " +
                                          std::to_string(data_size) + " bytes (truncated file?)");
    uint64_t expect = numel * dtype_size(t.dtype);
    if (end - begin != expect)
      fail(code::kSafetensorsInvalid, tw + " has " + std::to_string(end - begin) + " bytes but dtype " + jd->string +
                                          " and shape " + shape_string(t.shape) + " need " + std::to_string(expect));
    t.data = data + begin;
    t.nbytes = static_cast<size_t>(end - begin);
    if (file->index_.count(name)) fail(code::kSafetensorsInvalid, tw + " appears twice");
    file->index_[name] = file->tensors_.size();
    file->tensors_.push_back(std::move(t));
  }

  // Overlap check: sort byte ranges; each must start at or after the previous end.
  std::vector<const TensorView *> sorted;
  for (const auto &t : file->tensors_) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorView *a, const TensorView *b) { return a->data < b->data; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const TensorView *prev = sorted[i - 1], *cur = sorted[i];
    if (cur->nbytes > 0 && prev->nbytes > 0 && cur->data < prev->data + prev->nbytes)
      fail(code::kSafetensorsInvalid, where + ": tensors '" + prev->name + "' and '" + cur->name + "' overlap");
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
#ifndef _WIN32
  if (map_) munmap(map_, map_size_);
#endif
}

const TensorView *SafetensorsFile::find(const std::string &name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string &dir) {
  std::unique_ptr<Checkpoint> ck(new Checkpoint());
  ck->dir_ = dir;
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  if (path_exists(index_path)) {
    const std::string text = read_regular_file(index_path, kMaxHeaderBytes, code::kSafetensorsInvalid);
    Json root = json_parse(text.data(), text.size(), code::kSafetensorsInvalid, index_path);
    const Json *map = root.get("weight_map");
    if (!map || !map->is_object()) fail(code::kSafetensorsInvalid, index_path + ": no 'weight_map' object");
    std::map<std::string, SafetensorsFile *> shards;
    for (const auto &kv : map->object) {
      if (!kv.second.is_string()) fail(code::kSafetensorsInvalid, index_path + ": weight_map['" + kv.first + "'] is not a file name");
      const std::string &shard = kv.second.string;
      if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos || shard == "..")
        fail(code::kSafetensorsInvalid, index_path + ": shard name '" + shard + "' must be a plain file name in the model directory");
      if (!shards.count(shard)) {
        ck->files_.push_back(SafetensorsFile::open(dir + "/" + shard));
        shards[shard] = ck->files_.back().get();
      }
      const TensorView *t = shards[shard]->find(kv.first);
      if (!t) fail(code::kTensorMissing, index_path + " maps '" + kv.first + "' to " + shard + ", which does not contain it");
      ck->by_name_[kv.first] = t;
    }
  } else if (path_exists(single_path)) {
    ck->files_.push_back(SafetensorsFile::open(single_path));
    for (const auto &t : ck->files_.back()->tensors()) ck->by_name_[t.name] = &t;
  } else {
    fail(code::kFileNotFound, "no model.safetensors or model.safetensors.index.json in " + dir);
  }
  return ck;
}

const TensorView *Checkpoint::find(const std::string &name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto &kv : by_name_) out.push_back(kv.first);
  return out;
}

void Checkpoint::set_control(TaskControl *control) {
  control_ = control;
  uint64_t total = 0;
  for (const auto &f : files_)
    for (const TensorView &t : f->tensors()) total += t.nbytes;
  if (control_) control_->total = total;
}

std::vector<float> Checkpoint::load_f32(const std::string &name, const std::vector<int64_t> &shape) const {
  if (control_) control_->check("loading the model");
  const TensorView *t = find(name);
  if (!t) fail(code::kTensorMissing, "tensor '" + name + "' is missing from the checkpoint in " + dir_);
  if (t->shape != shape)
    fail(code::kTensorShape, "tensor '" + name + "' has shape " + shape_string(t->shape) + ", expected " + shape_string(shape) +
                                 " from config.json");
  const size_t n = static_cast<size_t>(t->numel());
  std::vector<float> out(n);
  const uint8_t *p = t->data;
  switch (t->dtype) {
    case DType::F32: std::memcpy(out.data(), p, n * 4); break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = f16_to_f32(h); }
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = bf16_to_f32(h); }
      break;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) { double d; std::memcpy(&d, p + 8 * i, 8); out[i] = static_cast<float>(d); }
      break;
    default:
      fail(code::kSafetensorsInvalid, "tensor '" + name + "' has dtype " + dtype_name(t->dtype) + "; weights must be F32, F16, BF16 or F64");
  }
  if (control_) control_->done += t->nbytes;
  return out;
}

}  // namespace nt
