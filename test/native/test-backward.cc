// Native tests of the CPU backend's backward ops (backend-abi.h ABI 3): each against a scalar
// double-precision reference of its formula and against central finite differences of the
// forward op in double. Cases: backward-*.cc. Run at this CPU's best ISA, then again (as child
// processes) with NEUROTAP_CPU=avx2 and scalar so that every kernel is checked.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backward.h"
#include "engine/backend.h"

int main(int argc, char **argv) {
  bwd::Cpu c{nt::cpu_backend_api(), nullptr};
  char err[256] = {0};
  c.be = c.api->create(0, 2, err, sizeof err);
  CHECK(c.be != nullptr, "cpu backend: %s", err);
  if (!c.be) return report("test-backward");
  const char *isa = std::getenv("NEUROTAP_CPU");
  std::printf("test-backward: ISA %s\n", isa ? isa : "best available");
  bwd::gemm_cases(c);
  bwd::row_cases(c);
  bwd::attention_cases(c);
  c.api->destroy(c.be);
  int rc = report(isa ? (std::string("test-backward NEUROTAP_CPU=") + isa).c_str() : "test-backward");
  std::fflush(stdout);
  if (!isa && argc > 0) {
    for (const char *cap : {"avx2", "scalar"}) {
      const std::string cmd = std::string("NEUROTAP_CPU=") + cap + " '" + argv[0] + "'";
      if (std::system(cmd.c_str()) != 0) rc = 1;
    }
  }
  return rc;
}
