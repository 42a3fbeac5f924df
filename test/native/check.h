// A tiny check framework for the native tests (no dependencies): CHECK records failures and
// keeps going; each test file's main() returns the failure count.
#pragma once

#include <cstdio>
#include <string>

namespace ntest {
inline int failures = 0;
inline int checks = 0;
}  // namespace ntest

#define CHECK(cond, ...)                                                          \
  do {                                                                           \
    ++ntest::checks;                                                             \
    if (!(cond)) {                                                               \
      ++ntest::failures;                                                         \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
      std::fprintf(stderr, "" __VA_ARGS__);                                      \
      std::fprintf(stderr, "\n");                                                \
    }                                                                            \
  } while (0)

// Runs `body`, expecting an nt::EngineError with `code`.
#define CHECK_THROWS_CODE(code_str, body)                                                  \
  do {                                                                                    \
    std::string got = "(no exception)";                                                   \
    try {                                                                                 \
      body;                                                                               \
    } catch (const nt::EngineError &e) {                                                  \
      got = e.code();                                                                     \
    } catch (const std::exception &e) {                                                   \
      got = std::string("non-engine exception: ") + e.what();                             \
    }                                                                                     \
    CHECK(got == (code_str), "expected %s, got %s", (code_str), got.c_str());             \
  } while (0)

inline int report(const char *name) {
  std::printf("%s: %d checks, %d failures\n", name, ntest::checks, ntest::failures);
  return ntest::failures == 0 ? 0 : 1;
}
