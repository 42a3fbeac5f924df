// Cross-backend op test (as ggml's test-backend-ops): every op of the backend ABI at real model
// shapes and every dtype it takes, run on the CPU backend (the reference) and on a backend library
// (libneurotap_cuda.so from $NEUROTAP_BACKEND_DIR, default build/Release), compared with the
// tolerances of backend-ops.h. Cases: backend-ops-*.cc (linked in by run.mjs). Without the library
// or a device it prints why and runs only the CPU side; NEUROTAP_BACKEND_REQUIRED=1 makes that a
// failure (for runs that must compare, such as test/cuda-emu/plant-bugs.mjs).
#include <chrono>
#include <cstdlib>

#include "backend-ops.h"

int main() {
  bops::Runner r;
  r.cpu = nt::Backend::cpu(2);
  const char *dir = std::getenv("NEUROTAP_BACKEND_DIR");
  const char *required = std::getenv("NEUROTAP_BACKEND_REQUIRED");
  const std::string backend_dir = dir ? dir : "build/Release";
  try {
    r.other = nt::Backend::load("cuda", backend_dir, 0, 2);
    std::printf("test-backend-ops: comparing %s (%s, from %s) with the CPU backend\n", r.other->api().name,
                r.other->device_name().c_str(), backend_dir.c_str());
  } catch (const nt::EngineError &e) {
    std::printf("test-backend-ops: skipping the comparison, running the CPU side only: %s\n", e.what());
    CHECK(!(required && std::string(required) == "1"), "NEUROTAP_BACKEND_REQUIRED=1 but the backend did not load");
  }

  const auto t0 = std::chrono::steady_clock::now();
  bops::matrix_cases(r);
  bops::row_cases(r);
  bops::attention_cases(r);
  bops::backward_cases(r);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("test-backend-ops: %d cases, %d compared across backends (%.1f s)\n", r.cases, r.compared, secs);
  return report("test-backend-ops");
}
