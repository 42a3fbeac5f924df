// Fiber context switching for the CUDA emulator (interface and rationale: context.h).
#include "context.h"

#include <cstdint>
#include <cstring>

#if NT_EMU_FAST_SWITCH
// nt_emu_switch(void **save_sp, void *load_sp): pushes the callee-saved registers and the
// floating-point control words on the current stack, stores the stack pointer in *save_sp,
// then loads load_sp and pops the same frame from there.
asm(R"(
  .text
  .globl nt_emu_switch
  .hidden nt_emu_switch
  .type nt_emu_switch, @function
nt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size nt_emu_switch, .-nt_emu_switch
)");
extern "C" void nt_emu_switch(void **save_sp, void *load_sp);
#endif

namespace nt_emu {

#if NT_EMU_FAST_SWITCH
void context_start(Context *c, char *stack, size_t bytes, void (*entry)()) {
  // The frame nt_emu_switch pops: control words, r15..r12, rbx, rbp, then entry as the return
  // address, above it a null "return address" of entry itself so that rsp % 16 == 8 at entry.
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  uint64_t *sp = reinterpret_cast<uint64_t *>(top);
  *--sp = 0;
  *--sp = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp, rbx, r12, r13, r14, r15
  *--sp = 0;
  const uint32_t mxcsr = 0x1F80;  // round to nearest, all exceptions masked
  const uint16_t fpucw = 0x037F;
  std::memcpy(sp, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char *>(sp) + 4, &fpucw, 2);
  c->sp = sp;
}

void context_switch(Context *from, Context *to) { nt_emu_switch(&from->sp, to->sp); }
#else
void context_start(Context *c, char *stack, size_t bytes, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = bytes;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, entry, 0);
}

void context_switch(Context *from, Context *to) { swapcontext(&from->uc, &to->uc); }
#endif

}  // namespace nt_emu
