// Strict recursive-descent JSON parser with a depth limit; never reads past `len`.
#include "io/json.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "engine/error.h"

namespace nt {

const Json *Json::get(const std::string &key) const {
  if (type != Type::Object) return nullptr;
  for (const auto &kv : object)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

namespace {

constexpr int kMaxDepth = 128;

class Parser {
 public:
  Parser(const char *data, size_t len, const char *code, const std::string &what)
      : p_(data), begin_(data), end_(data + len), code_(code), what_(what) {}

  Json parse_document() {
    Json value = parse_value(0);
    skip_ws();
    if (p_ != end_) error("unexpected trailing characters");
    return value;
  }

 private:
  const char *p_;
  const char *begin_;
  const char *end_;
  const char *code_;
  const std::string &what_;

  [[noreturn]] void error(const std::string &reason) {
    fail(code_, what_ + ": invalid JSON: " + reason + " at byte " + std::to_string(p_ - begin_));
  }

  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool consume_literal(const char *lit) {
    const char *q = p_;
    for (; *lit; ++lit, ++q)
      if (q >= end_ || *q != *lit) return false;
    p_ = q;
    return true;
  }

  Json parse_value(int depth) {
    if (depth > kMaxDepth) error("nesting too deep");
    skip_ws();
    if (p_ >= end_) error("unexpected end of input");
    Json v;
    char c = *p_;
    if (c == '{') {
      v.type = Json::Type::Object;
      ++p_;
      skip_ws();
      if (p_ < end_ && *p_ == '}') { ++p_; return v; }
      for (;;) {
        skip_ws();
        if (p_ >= end_ || *p_ != '"') error("expected a string key");
        std::string key = parse_string();
        skip_ws();
        if (p_ >= end_ || *p_ != ':') error("expected ':'");
        ++p_;
        Json member = parse_value(depth + 1);
        v.object.emplace_back(std::move(key), std::move(member));
        skip_ws();
        if (p_ < end_ && *p_ == ',') { ++p_; continue; }
        if (p_ < end_ && *p_ == '}') { ++p_; return v; }
        error("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.type = Json::Type::Array;
      ++p_;
      skip_ws();
      if (p_ < end_ && *p_ == ']') { ++p_; return v; }
      for (;;) {
        v.array.push_back(parse_value(depth + 1));
        skip_ws();
        if (p_ < end_ && *p_ == ',') { ++p_; continue; }
        if (p_ < end_ && *p_ == ']') { ++p_; return v; }
        error("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.type = Json::Type::String;
      v.string = parse_string();
      return v;
    }
    if (consume_literal("true")) { v.type = Json::Type::Bool; v.boolean = true; return v; }
    if (consume_literal("false")) { v.type = Json::Type::Bool; v.boolean = false; return v; }
    if (consume_literal("null")) return v;
    // Python's json module writes these for non-finite floats; configs in the wild contain them.
    if (consume_literal("NaN")) { v.type = Json::Type::Number; v.number = NAN; return v; }
    if (consume_literal("Infinity")) { v.type = Json::Type::Number; v.number = INFINITY; return v; }
    if (consume_literal("-Infinity")) { v.type = Json::Type::Number; v.number = -INFINITY; return v; }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    error(std::string("unexpected character '") + c + "'");
  }

  Json parse_number() {
    const char *start = p_;
    bool integral = true;
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) error("malformed number");
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && *p_ == '.') {
      integral = false;
      ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) error("malformed number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integral = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) error("malformed number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    // strtod needs a terminated buffer: the literal is short, copy it.
    std::string literal(start, p_);
    Json v;
    v.type = Json::Type::Number;
    v.number = std::strtod(literal.c_str(), nullptr);
    if (integral) {
      errno = 0;
      long long i = std::strtoll(literal.c_str(), nullptr, 10);
      if (errno == 0) {
        v.is_integer = true;
        v.integer = static_cast<int64_t>(i);
      }
    }
    return v;
  }

  static void append_utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t parse_hex4() {
    if (end_ - p_ < 4) error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      char c = *p_;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else error("bad \\u escape");
    }
    return v;
  }

  std::string parse_string() {
    ++p_;  // opening quote
    std::string out;
    for (;;) {
      if (p_ >= end_) error("unterminated string");
      char c = *p_++;
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') { out += c; continue; }
      if (p_ >= end_) error("unterminated escape");
      char e = *p_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
              p_ += 2;
              uint32_t lo = parse_hex4();
              if (lo < 0xDC00 || lo >= 0xE000) error("bad surrogate pair");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else {
              error("lone surrogate");
            }
          }
          append_utf8(out, cp);
          break;
        }
        default: error("bad escape");
      }
    }
  }
};

}  // namespace

Json json_parse(const char *data, size_t len, const char *error_code, const std::string &what) {
  return Parser(data, len, error_code, what).parse_document();
}

}  // namespace nt
