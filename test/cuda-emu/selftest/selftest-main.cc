// Runs one case of the CUDA emulator's self-test (selftest.cu) from the library build.mjs made
// of it: selftest-main LIB CASE. Exit 0 when the emulator behaved as a GPU would.
#include <dlfcn.h>

#include <cstdio>

int main(int argc, char **argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: selftest-main LIB CASE\n"), 2;
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) return std::fprintf(stderr, "%s\n", dlerror()), 2;
  auto run = reinterpret_cast<int (*)(const char *)>(dlsym(lib, "nt_emu_selftest"));
  if (!run) return std::fprintf(stderr, "no nt_emu_selftest in %s\n", argv[1]), 2;
  return run(argv[2]);
}
