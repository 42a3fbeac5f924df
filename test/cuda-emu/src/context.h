// Fiber context switching for the CUDA emulator's scheduler (scheduler.cc): a few instructions
// on x86-64 (callee-saved registers, MXCSR and the x87 control word), ucontext elsewhere.
// ThreadSanitizer only needs __tsan_switch_to_fiber before each switch (scheduler.cc).
#pragma once

#include <ucontext.h>

#include <cstddef>

#include "tsan.h"

namespace nt_emu {

#if defined(__x86_64__)
#define NT_EMU_FAST_SWITCH 1
#else
#define NT_EMU_FAST_SWITCH 0
#endif

struct Context {
#if NT_EMU_FAST_SWITCH
  void *sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// Prepares c to run entry() on [stack, stack + bytes) at the first switch to it; entry must
// never return (it switches away for good instead).
void context_start(Context *c, char *stack, size_t bytes, void (*entry)());
// Saves the running context into from and resumes to.
void context_switch(Context *from, Context *to);

}  // namespace nt_emu
