// Native tests of the untrusted-input readers: the JSON parser, safetensors validation under
// random corruption (must throw EngineError, never crash), and exact f16/bf16 upcasts.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "engine/config.h"
#include "engine/error.h"
#include "io/file.h"
#include "io/json.h"
#include "io/safetensors.h"

using nt::Json;

static Json parse(const std::string &s) { return nt::json_parse(s.data(), s.size(), "ERR_TEST", "test"); }

static void test_json() {
  Json j = parse(R"( {"a": [1, -2.5e3, true, null, "x\u00e9\ud83d\ude42\n"], "b": {"c": 9007199254740993}} )");
  CHECK(j.is_object());
  const Json *a = j.get("a");
  CHECK(a && a->array.size() == 5);
  CHECK(a->array[0].is_integer && a->array[0].integer == 1);
  CHECK(a->array[1].number == -2500.0 && !a->array[1].is_integer);
  CHECK(a->array[2].boolean);
  CHECK(a->array[3].is_null());
  CHECK(a->array[4].string == "x\xc3\xa9\xf0\x9f\x99\x82\n", "utf-8 decoding of escapes");
  CHECK(j.get("b")->get("c")->integer == 9007199254740993LL, "integers beyond 2^53 stay exact");
  for (const char *bad : {"", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "\"abc", "01", "1.", "tru", "[1] x", "\"\\x\"", "\"\\ud800\"", "{1:2}", "\"a\tb\""})
    CHECK_THROWS_CODE("ERR_TEST", parse(bad));
  std::string deep(100000, '[');
  CHECK_THROWS_CODE("ERR_TEST", parse(deep));  // depth limit, not a stack overflow
}

static std::string tmp_path(const char *name) { return std::string("/tmp/neurotap-native-") + name; }

static void write_file(const std::string &path, const std::vector<uint8_t> &bytes) {
  FILE *f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

static std::vector<uint8_t> make_safetensors() {
  std::string header = R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                       R"("b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"BF16","shape":[],"data_offsets":[32,34]}})";
  std::vector<uint8_t> out(8);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  for (int i = 0; i < 6; ++i) {
    float v = static_cast<float>(i) - 2.5f;
    uint8_t b[4];
    std::memcpy(b, &v, 4);
    out.insert(out.end(), b, b + 4);
  }
  const uint16_t halves[4] = {0x3C00, 0xC000, 0x0001, 0x7BFF};  // 1, -2, smallest subnormal, 65504
  for (uint16_t h : halves) {
    out.push_back(static_cast<uint8_t>(h));
    out.push_back(static_cast<uint8_t>(h >> 8));
  }
  out.push_back(0x80);  // bf16 0x3F80 = 1.0
  out.push_back(0x3F);
  return out;
}

static void test_safetensors() {
  const std::string path = tmp_path("ok.safetensors");
  const std::vector<uint8_t> good = make_safetensors();
  write_file(path, good);
  auto f = nt::SafetensorsFile::open(path);
  CHECK(f->tensors().size() == 3);
  const nt::TensorView *a = f->find("a");
  CHECK(a && a->dtype == nt::DType::F32 && a->shape == std::vector<int64_t>({2, 3}) && a->nbytes == 24);
  const nt::TensorView *c = f->find("c");
  CHECK(c && c->shape.empty() && c->numel() == 1);

  // Random corruption: flip bytes, truncate, or extend; every outcome is a valid parse or an
  // EngineError, never a crash (run under valgrind/ASan to see memory errors too).
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = good;
    const int kind = trial % 3;
    if (kind == 0) {
      for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) bytes[rng() % bytes.size()] = static_cast<uint8_t>(rng());
    } else if (kind == 1) {
      bytes.resize(rng() % bytes.size());
    } else {
      bytes[8 + rng() % (bytes.size() - 8)] = "{}[],:\"0123456789-e"[rng() % 19];
    }
    const std::string p = tmp_path("fuzz.safetensors");
    write_file(p, bytes);
    try {
      auto g = nt::SafetensorsFile::open(p);
      for (const auto &t : g->tensors()) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < t.nbytes; ++i) sink ^= t.data[i];  // every byte range must be readable
        (void)sink;
      }
    } catch (const nt::EngineError &e) {
      ++rejected;
      CHECK(e.code() == "ERR_SAFETENSORS_INVALID" || e.code() == "ERR_FILE_READ", "unexpected code %s", e.code().c_str());
    }
  }
  CHECK(rejected > 1000, "corruptions rejected: %d", rejected);
  CHECK_THROWS_CODE("ERR_FILE_NOT_FOUND", nt::SafetensorsFile::open(tmp_path("missing.safetensors")));
}

static void test_half_conversions() {
  // Every f16 bit pattern against the IEEE formula, computed independently with ldexp.
  for (uint32_t h = 0; h < 65536; ++h) {
    const int sign = (h >> 15) & 1, exp = (h >> 10) & 31, mant = h & 1023;
    double ref;
    if (exp == 0) ref = std::ldexp(mant, -24);
    else if (exp == 31) ref = mant ? NAN : INFINITY;
    else ref = std::ldexp(1024 + mant, exp - 25);
    if (sign) ref = -ref;
    const float got = nt::f16_to_f32(static_cast<uint16_t>(h));
    const bool ok = std::isnan(ref) ? std::isnan(got) : (static_cast<double>(got) == ref && std::signbit(got) == std::signbit(ref));
    if (!ok) {
      CHECK(ok, "f16 0x%04x -> %g, expected %g", h, got, ref);
      break;
    }
  }
  // f32 -> f16 -> f32 is exact on every f16 value, and rounds to nearest even in between.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = nt::f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    const uint16_t back = nt::f32_to_f16(f);
    if (back != h) {
      CHECK(back == h, "f32_to_f16(f16 0x%04x) = 0x%04x", h, back);
      break;
    }
  }
  CHECK(nt::f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00, "ties round to even (down)");
  CHECK(nt::f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02, "ties round to even (up)");
  CHECK(nt::f32_to_f16(70000.0f) == 0x7C00, "overflow to infinity");
  CHECK(nt::f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000, "half the smallest subnormal rounds to zero (even)");
  CHECK(nt::f32_to_f16(std::ldexp(1.5f, -25)) == 0x0001, "above half rounds up to the smallest subnormal");
  CHECK(nt::f32_to_bf16(1.0f) == 0x3F80 && nt::f32_to_bf16(-5.0f) == 0xC0A0);
  CHECK(nt::f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80, "bf16 ties round to even");
  CHECK(nt::f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82, "bf16 ties round to even (up)");
  CHECK(nt::bf16_to_f32(0x3F80) == 1.0f);
  CHECK(nt::bf16_to_f32(0xC0A0) == -5.0f);
  CHECK(std::isinf(nt::bf16_to_f32(0x7F80)));
}

static void test_rope_frequencies() {
  nt::RopeConfig rope;
  rope.theta = 10000.0;
  std::vector<float> inv = nt::rope_inv_freq(rope, 8);
  CHECK(inv.size() == 4 && inv[0] == 1.0f && std::fabs(inv[2] - 0.01f) < 1e-8f);
  // llama3: the highest frequencies stay, the lowest are divided by factor.
  rope.type = "llama3";
  rope.theta = 500000.0;
  rope.factor = 8;
  rope.low_freq_factor = 1;
  rope.high_freq_factor = 4;
  rope.original_max_position_embeddings = 8192;
  nt::RopeConfig plain = rope;
  plain.type = "default";
  std::vector<float> a = nt::rope_inv_freq(plain, 128), b = nt::rope_inv_freq(rope, 128);
  CHECK(a[0] == b[0]);
  CHECK(std::fabs(b[63] - a[63] / 8) <= 1e-12f + 1e-6f * a[63]);
}

// A FIFO, directory or device where a file is expected: refused at once, never a blocking open.
static void test_non_regular_files() {
  const std::string fifo = tmp_path("fifo"), dir = tmp_path("dir"), index_dir = tmp_path("index-fifo");
  std::remove(fifo.c_str());
  ::rmdir(dir.c_str());
  CHECK(::mkfifo(fifo.c_str(), 0600) == 0 && ::mkdir(dir.c_str(), 0700) == 0);
  for (const std::string &path : {fifo, dir, std::string("/dev/zero")}) {
    CHECK_THROWS_CODE("ERR_FILE_READ", nt::SafetensorsFile::open(path));
    CHECK_THROWS_CODE("ERR_FILE_READ", nt::read_regular_file(path, 1 << 20, "ERR_TEST"));
  }
  ::mkdir(index_dir.c_str(), 0700);
  const std::string index = index_dir + "/model.safetensors.index.json";
  std::remove(index.c_str());
  CHECK(::mkfifo(index.c_str(), 0600) == 0);
  CHECK_THROWS_CODE("ERR_FILE_READ", nt::Checkpoint::open(index_dir));
  std::remove(index.c_str());
  ::rmdir(index_dir.c_str());
  std::remove(fifo.c_str());
  ::rmdir(dir.c_str());
}

// Sizes past nt::limits are refused while parsing, before anything is sized from them.
static void test_config_limits() {
  const auto gpt2 = [](const std::string &extra) {
    return R"({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "vocab_size": 384, "n_positions": 64, )" + extra + "}";
  };
  CHECK(nt::parse_model_config(gpt2(R"("n_layer": 1024)"), "c").n_layers == 1024);
  CHECK_THROWS_CODE("ERR_UNSUPPORTED_CONFIG", nt::parse_model_config(gpt2(R"("n_layer": 1025)"), "c"));
  CHECK_THROWS_CODE("ERR_UNSUPPORTED_CONFIG", nt::parse_model_config(gpt2(R"("n_layer": 100000000)"), "c"));
  CHECK_THROWS_CODE("ERR_CONFIG_INVALID", nt::parse_model_config(gpt2(R"("n_layer": -1)"), "c"));
  CHECK_THROWS_CODE("ERR_CONFIG_INVALID", nt::parse_model_config(gpt2(R"("n_layer": 1.5)"), "c"));
  const auto llama = [](const std::string &extra) {
    return R"({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 96, "vocab_size": 384, )" + extra + "}";
  };
  CHECK(nt::parse_model_config(llama(R"("num_attention_heads": 32, "head_dim": 4096)"), "c").d_head == 4096);
  CHECK_THROWS_CODE("ERR_UNSUPPORTED_CONFIG", nt::parse_model_config(llama(R"("num_attention_heads": 4, "head_dim": 1073741824)"), "c"));
  CHECK_THROWS_CODE("ERR_UNSUPPORTED_CONFIG", nt::parse_model_config(llama(R"("num_attention_heads": 64, "head_dim": 4096)"), "c"));
}

int main() {
  test_json();
  test_safetensors();
  test_half_conversions();
  test_rope_frequencies();
  test_non_regular_files();
  test_config_limits();
  return report("test-io");
}
