// ThreadSanitizer hooks of the CUDA emulator's scheduler (scheduler.cc). In a --tsan build
// (NT_EMU_TSAN=1) each emulated thread is a TSan fiber and fiber switches do not synchronize:
// only __syncthreads / __syncwarp and the host before and after a launch order memory, so a
// missing barrier is a reported race. Thread i of every block reuses TSan fiber i and stack i
// (a fresh fiber per thread costs too much), and each block gets freshly mapped shared memory
// (TSan forgets unmapped memory), so blocks do not look racy through reuse. Without TSan every
// hook is empty.
#pragma once

#include <cstddef>
#include <vector>

#ifndef NT_EMU_TSAN
#define NT_EMU_TSAN 0
#endif

#if NT_EMU_TSAN
extern "C" {
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
}
#endif

namespace nt_emu {

constexpr bool kTsan = NT_EMU_TSAN;

// Sync objects of one block: the block barrier and one per warp, each two slots used by
// alternate barrier episodes so a thread released late never acquires the next episode's
// releases. Heap memory, freed at the end of the block: TSan forgets the clocks with it, so
// blocks stay unordered with each other.
struct TsanBlock {
  char *objs = nullptr;
  int episode = 0;
  std::vector<int> warp_episode;
};

#if NT_EMU_TSAN
inline char g_launch_begin, g_launch_end;

inline void *tsan_current_fiber() { return __tsan_get_current_fiber(); }
inline void *tsan_fiber_create() { return __tsan_create_fiber(0); }
inline void tsan_fiber_destroy(void *f) { __tsan_destroy_fiber(f); }
inline void tsan_switch(void *f) { __tsan_switch_to_fiber(f, 1 /* __tsan_switch_to_fiber_no_sync */); }
inline void tsan_launch_begin() { __tsan_release(&g_launch_begin); }
inline void tsan_launch_end() { __tsan_acquire(&g_launch_end); }
inline void tsan_thread_start(const TsanBlock &) { __tsan_acquire(&g_launch_begin); }
inline void tsan_thread_end(const TsanBlock &) { __tsan_release(&g_launch_end); }
// The host's work before the block (the fresh shared memory mapping among it) happens before it.
inline void tsan_block_begin(TsanBlock *b, int warps) {
  __tsan_release(&g_launch_begin);
  b->objs = new char[2 + 2 * warps];
  b->episode = 0;
  b->warp_episode.assign(warps, 0);
}
inline void tsan_block_end(TsanBlock *b) {
  delete[] b->objs;
  b->objs = nullptr;
}
// Called by the scheduler when every thread has arrived: each waiting thread's release was
// made on arrival (below, per fiber), so here the episode flips.
inline void tsan_block_barrier(TsanBlock *b) { ++b->episode; }
inline void tsan_warp_barrier(TsanBlock &b, int w) { ++b.warp_episode[w]; }
inline void tsan_arrive_block(TsanBlock &b) { __tsan_release(b.objs + (b.episode & 1)); }
inline void tsan_leave_block(TsanBlock &b) { __tsan_acquire(b.objs + ((b.episode - 1) & 1)); }
inline void tsan_arrive_warp(TsanBlock &b, int w) { __tsan_release(b.objs + 2 + 2 * w + (b.warp_episode[w] & 1)); }
inline void tsan_leave_warp(TsanBlock &b, int w) { __tsan_acquire(b.objs + 2 + 2 * w + ((b.warp_episode[w] - 1) & 1)); }
#else
inline void *tsan_current_fiber() { return nullptr; }
inline void *tsan_fiber_create() { return nullptr; }
inline void tsan_fiber_destroy(void *) {}
inline void tsan_switch(void *) {}
inline void tsan_launch_begin() {}
inline void tsan_launch_end() {}
inline void tsan_thread_start(const TsanBlock &) {}
inline void tsan_thread_end(const TsanBlock &) {}
inline void tsan_block_begin(TsanBlock *, int) {}
inline void tsan_block_end(TsanBlock *) {}
inline void tsan_block_barrier(TsanBlock *) {}
inline void tsan_warp_barrier(TsanBlock &, int) {}
inline void tsan_arrive_block(TsanBlock &) {}
inline void tsan_leave_block(TsanBlock &) {}
inline void tsan_arrive_warp(TsanBlock &, int) {}
inline void tsan_leave_warp(TsanBlock &, int) {}
#endif

}  // namespace nt_emu
