// A small strict JSON reader for untrusted headers and configs (safetensors headers,
// config.json, model.safetensors.index.json). Tested in test/native/test-io.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nt {

class Json {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  bool is_integer = false;  // the literal had no fraction or exponent and fits int64
  int64_t integer = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // in file order

  bool is_null() const { return type == Type::Null; }
  bool is_object() const { return type == Type::Object; }
  bool is_array() const { return type == Type::Array; }
  bool is_string() const { return type == Type::String; }
  bool is_number() const { return type == Type::Number; }
  bool is_bool() const { return type == Type::Bool; }

  // Member lookup on an object; nullptr when absent or when this is not an object.
  const Json *get(const std::string &key) const;
};

// Parses `len` bytes. Throws EngineError(error_code, "<what>: <reason> at byte N").
Json json_parse(const char *data, size_t len, const char *error_code, const std::string &what);

}  // namespace nt
