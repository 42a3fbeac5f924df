// Kernel execution for the CUDA emulator: launch checks, each block's threads as fibers
// (context.h), __syncthreads as a block barrier, warp shuffles and votes as warp barriers that
// exchange values, and the checks a GPU would fail on (barrier divergence, partial warps).
#include <signal.h>
#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../include/cuda-emu.h"
#include "context.h"
#include "emu.h"
#include "tsan.h"

namespace nt_emu {

thread_local const ThreadIds *t_ids = nullptr;

namespace {

#if NT_EMU_TSAN
constexpr size_t kStackBytes = 1024 * 1024;  // instrumented frames are larger
#else
constexpr size_t kStackBytes = 256 * 1024;
#endif

enum State : uint8_t { kFresh, kReady, kAtBlockBarrier, kAtWarpOp, kDone };

struct Fiber {
  Context ctx;
  char *stack = nullptr;  // [kStackBytes], the lowest page a guard
  void *tsan = nullptr;
  ThreadIds ids;
  State state = kFresh;
  WarpOp op = kShfl;
  unsigned mask = 0;
  int arg = 0, width = 32;
  uint64_t value = 0, result = 0;
};

// The launch running on this host thread.
struct Launch {
  const char *name;
  Invoke invoke;
  const void *closure;
  LaunchConfig cfg;
  int n;  // threads per block
  std::vector<Fiber> fibers;
  // Shared memory of the running block, one mapping: [static __shared__ arena, 48 KB]
  // [dynamic shared memory, ending at a guard page].
  char *smem_map;
  size_t smem_map_size;
  char *smem;  // [cfg.smem]
  size_t static_used = 0;
  std::vector<std::pair<const void *, char *>> statics;  // declaration key -> storage, this block
  Context sched;
  void *sched_tsan;
  Fiber *current = nullptr;
  uint3 block;
  bool failed = false;
  TsanBlock sync;  // barrier sync objects of the running block
};

thread_local Launch *t_launch = nullptr;
thread_local std::vector<char *> t_stacks;  // free fiber stacks
// TSan builds: thread i of every block runs on stack i as TSan fiber i.
thread_local std::vector<char *> t_index_stacks;
thread_local std::vector<void *> t_index_fibers;
constexpr size_t kStaticSharedBytes = 48 * 1024;  // a GPU's static shared memory limit

char *take_stack() {
  if (!t_stacks.empty()) {
    char *s = t_stacks.back();
    t_stacks.pop_back();
    return s;
  }
  void *m = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (m == MAP_FAILED) {
    report("out of memory for fiber stacks");
    std::abort();
  }
  mprotect(m, kPage, PROT_NONE);
  return static_cast<char *>(m);
}

bool fail(Launch *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool fail(Launch *L, const char *fmt, ...) {
  char msg[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  report("kernel %s, block (%u, %u, %u): %s", L->name, L->block.x, L->block.y, L->block.z, msg);
  L->failed = true;
  set_sticky(cudaErrorLaunchFailure);
  return false;
}

void fiber_main() {
  Launch *L = t_launch;
  Fiber *f = L->current;
  tsan_thread_start(L->sync);
  L->invoke(L->closure);
  tsan_thread_end(L->sync);
  f->state = kDone;
  tsan_switch(L->sched_tsan);
  context_switch(&f->ctx, &L->sched);  // never resumed
}

void switch_to(Launch *L, Fiber *f) {
  L->current = f;
  t_ids = &f->ids;
  tsan_switch(f->tsan);
  context_switch(&L->sched, &f->ctx);
  t_ids = nullptr;
}

// In a fiber: wait in state s until the scheduler resumes this thread.
void wait_as(State s) {
  Launch *L = t_launch;
  if (!L || !L->current) {
    report("a barrier or warp operation was called outside a kernel");
    std::abort();
  }
  Fiber *f = L->current;
  f->state = s;
  tsan_switch(L->sched_tsan);
  context_switch(&f->ctx, &L->sched);
}

const char *op_name(WarpOp op) {
  static const char *names[] = {"__shfl_sync", "__shfl_xor_sync", "__shfl_up_sync", "__shfl_down_sync", "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp"};
  return names[op];
}

// Completes warp w's operation once every lane of its mask waits at it. *woke: lanes resumed.
bool resolve_warp(Launch *L, int w, bool *woke) {
  const int first = w * 32, lanes = L->n - first < 32 ? L->n - first : 32;
  Fiber *lane = &L->fibers[first];
  const Fiber *lead = nullptr;
  for (int l = 0; l < lanes; ++l) {
    if (lane[l].state != kAtWarpOp) continue;
    if (!lead) lead = &lane[l];
    const Fiber &f = lane[l];
    if (f.op != lead->op || f.mask != lead->mask || f.width != lead->width)
      return fail(L, "warp %d: lanes wait at different warp operations (%s mask 0x%08x, %s mask 0x%08x)", w, op_name(lead->op), lead->mask,
                  op_name(f.op), f.mask);
    if (!(f.mask >> l & 1u)) return fail(L, "warp %d: lane %d calls %s with mask 0x%08x, which leaves it out", w, l, op_name(f.op), f.mask);
  }
  if (!lead) return true;
  const unsigned mask = lead->mask;
  const int width = lead->width;
  if (width < 1 || width > 32 || (width & (width - 1)))
    return fail(L, "warp %d: %s with width %d (a power of two up to 32)", w, op_name(lead->op), width);
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    if (l >= lanes)
      return fail(L, "warp %d: %s with mask 0x%08x names lane %d, but the block has %d threads (%d in this warp): a partial-warp shuffle", w,
                  op_name(lead->op), mask, l, L->n, lanes);
    if (lane[l].state == kDone)
      return fail(L, "warp %d: %s with mask 0x%08x, but lane %d has already exited: a partial-warp shuffle", w, op_name(lead->op), mask, l);
    if (lane[l].state != kAtWarpOp) return true;  // not there yet
  }
  uint64_t ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u && lane[l].value) ballot |= 1ull << l;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber &f = lane[l];
    const int seg = l & ~(width - 1);
    int src = l;
    switch (f.op) {
      case kShfl: src = seg + (((f.arg % width) + width) % width); break;
      case kShflXor: src = l ^ f.arg; break;
      case kShflUp: src = l - f.arg; break;
      case kShflDown: src = l + f.arg; break;
      default: break;
    }
    if (src < seg || src >= seg + width) src = l;  // outside the lane's segment: its own value
    if (src < 0 || src >= 32 || !(mask >> src & 1u))
      return fail(L, "warp %d: lane %d's %s reads lane %d, which is not in the mask 0x%08x", w, l, op_name(f.op), src, mask);
    switch (f.op) {
      case kBallot: f.result = ballot; break;
      case kAny: f.result = ballot != 0; break;
      case kAll: f.result = ballot == static_cast<uint64_t>(mask); break;
      case kSyncWarp: f.result = 0; break;
      default: f.result = lane[src].value; break;
    }
  }
  const bool syncs = lead->op == kSyncWarp;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) lane[l].state = kReady;
  if (syncs) tsan_warp_barrier(L->sync, w);
  *woke = true;
  return true;
}

void map_shared(Launch *L) {
  const size_t body = (L->cfg.smem + 15) / 16 * 16, pages = (body + kPage - 1) / kPage * kPage;
  L->smem_map_size = kStaticSharedBytes + pages + kPage;
  void *m = mmap(nullptr, L->smem_map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    report("out of memory for shared memory");
    std::abort();
  }
  L->smem_map = static_cast<char *>(m);
  mprotect(L->smem_map + kStaticSharedBytes + pages, kPage, PROT_NONE);
  L->smem = L->smem_map + kStaticSharedBytes + pages - body;
}

void unmap_shared(Launch *L) { munmap(L->smem_map, L->smem_map_size); }

void fill_nan(void *p, size_t bytes) {
  volatile unsigned char *c = static_cast<unsigned char *>(p);
  for (size_t i = 0; i < bytes; ++i) c[i] = 0xFF;
}

// Runs one block to completion; false when it failed (reported, sticky error set).
bool run_block(Launch *L, uint3 b) {
  L->block = b;
  L->statics.clear();
  L->static_used = 0;
  if (kTsan && (b.x | b.y | b.z)) {  // fresh memory: TSan forgets the previous block's accesses
    unmap_shared(L);
    map_shared(L);
  }
  fill_nan(L->smem, L->cfg.smem);
  tsan_block_begin(&L->sync, (L->n + 31) / 32);
  const dim3 bd = L->cfg.block;
  for (int i = 0; i < L->n; ++i) {
    Fiber &f = L->fibers[i];
    f.ids.thread = make_uint3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
    f.ids.block = b;
    f.ids.block_dim = bd;
    f.ids.grid_dim = L->cfg.grid;
    f.state = kFresh;
  }
  int done = 0;
  bool ok = true;
  while (ok) {
    for (int i = 0; i < L->n; ++i) {
      Fiber &f = L->fibers[i];
      if (f.state == kFresh) {
        if (kTsan) {
          while (t_index_stacks.size() <= static_cast<size_t>(i)) t_index_stacks.push_back(take_stack()), t_index_fibers.push_back(tsan_fiber_create());
          f.stack = t_index_stacks[i];
          f.tsan = t_index_fibers[i];
        } else {
          f.stack = take_stack();
        }
        context_start(&f.ctx, f.stack + kPage, kStackBytes - kPage, fiber_main);
      } else if (f.state != kReady) {
        continue;
      }
      switch_to(L, &f);
      if (f.state == kDone) {
        if (!kTsan) t_stacks.push_back(f.stack);
        f.stack = nullptr;
        f.tsan = nullptr;
        ++done;
      }
    }
    if (done == L->n) break;
    bool woke = false;
    for (int w = 0; ok && w < (L->n + 31) / 32; ++w) ok = resolve_warp(L, w, &woke);
    if (!ok || woke) continue;
    int at_barrier = 0, at_warp = 0;
    for (const Fiber &f : L->fibers) at_barrier += f.state == kAtBlockBarrier, at_warp += f.state == kAtWarpOp;
    if (at_barrier == L->n - done) {
      if (done > 0) {
        ok = fail(L, "barrier divergence: %d threads wait at __syncthreads while %d have exited", at_barrier, done);
        break;
      }
      tsan_block_barrier(&L->sync);
      for (Fiber &f : L->fibers) f.state = kReady;
      continue;
    }
    ok = fail(L, "deadlock: %d threads wait at __syncthreads, %d at warp operations that cannot complete, %d exited", at_barrier, at_warp, done);
  }
  for (Fiber &f : L->fibers) {  // abandoned fibers of a failed block
    if (f.stack && !kTsan) t_stacks.push_back(f.stack);
    f.stack = nullptr;
    f.tsan = nullptr;
  }
  tsan_block_end(&L->sync);
  return ok;
}

struct sigaction g_previous_segv, g_previous_bus;

// A fault in a kernel: name the kernel, the thread and what the address is, then abort.
void on_fault(int sig, siginfo_t *si, void *) {
  Launch *L = t_launch;
  if (!L) {  // not ours: put the previous handler back and fault again into it
    sigaction(sig, sig == SIGSEGV ? &g_previous_segv : &g_previous_bus, nullptr);
    return;
  }
  const char *addr = static_cast<const char *>(si->si_addr);
  char what[256];
  const Allocation *a = find_mapping(addr);
  if (a && addr >= a->ptr + a->size)
    std::snprintf(what, sizeof what, "%zu bytes past the end of the %zu-byte device allocation at %p", static_cast<size_t>(addr - (a->ptr + a->size)),
                  a->size, static_cast<void *>(a->ptr));
  else if (a)
    std::snprintf(what, sizeof what, "%zu bytes before the %zu-byte device allocation at %p", static_cast<size_t>(a->ptr - addr), a->size,
                  static_cast<void *>(a->ptr));
  else if (addr >= L->smem_map && addr < L->smem_map + kStaticSharedBytes)
    std::snprintf(what, sizeof what, "in the static __shared__ arena");
  else if (addr >= L->smem_map && addr < L->smem_map + L->smem_map_size)
    std::snprintf(what, sizeof what, "%zu bytes past the end of the %zu bytes of dynamic shared memory", static_cast<size_t>(addr - (L->smem + L->cfg.smem)),
                  L->cfg.smem);
  else if (L->current && L->current->stack && addr >= L->current->stack && addr < L->current->stack + kPage)
    std::snprintf(what, sizeof what, "a thread's stack overflowed (%zu KiB)", kStackBytes / 1024);
  else
    std::snprintf(what, sizeof what, "not device memory (a host pointer, freed memory or a wild index)");
  const Fiber *f = L->current;
  report("kernel %s, block (%u, %u, %u), thread (%u, %u, %u): invalid access at %p: %s", L->name, L->block.x, L->block.y, L->block.z,
         f ? f->ids.thread.x : 0, f ? f->ids.thread.y : 0, f ? f->ids.thread.z : 0, si->si_addr, what);
  std::abort();
}

void install_fault_handler() {
  static thread_local bool alt_stack = false;
  if (!alt_stack) {  // the handler must not run on a fiber stack that overflowed
    stack_t ss{};
    ss.ss_size = 64 * 1024;
    ss.ss_sp = std::malloc(ss.ss_size);
    sigaltstack(&ss, nullptr);
    alt_stack = true;
  }
  static bool installed = false;
  if (installed) return;
  struct sigaction sa{};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_previous_segv);
  sigaction(SIGBUS, &sa, &g_previous_bus);
  installed = true;
}

// The reason a launch configuration is refused, or null.
cudaError_t check_config(const void *kernel, const char *name, const LaunchConfig &c) {
  const dim3 g = c.grid, b = c.block;
  const uint64_t threads = static_cast<uint64_t>(b.x) * b.y * b.z;
  if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z || threads > kMaxThreadsPerBlock || b.x > 1024 || b.y > 1024 || b.z > 64 || g.x > kMaxGridX ||
      g.y > kMaxGridYZ || g.z > kMaxGridYZ) {
    report("launch of %s: invalid configuration: grid (%u, %u, %u), block (%u, %u, %u) (at most %d threads per block, block z <= 64, grid y and z <= %u)",
           name, g.x, g.y, g.z, b.x, b.y, b.z, kMaxThreadsPerBlock, kMaxGridYZ);
    return cudaErrorInvalidConfiguration;
  }
  const size_t limit = kernel_max_dynamic_smem(kernel);
  if (c.smem > limit) {
    report("launch of %s: %zu bytes of dynamic shared memory, above this kernel's limit of %zu%s", name, c.smem, limit,
           c.smem <= kSmemOptin ? " (above 48 KB needs cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes))"
                                : " (and above the device's opt-in maximum)");
    return cudaErrorInvalidValue;
  }
  if (!valid_stream(c.stream)) {
    report("launch of %s: stream %p is not a live stream", name, static_cast<void *>(c.stream));
    return cudaErrorInvalidResourceHandle;
  }
  return cudaSuccess;
}

}  // namespace

void sync_block() {
  Launch *L = t_launch;
  if (L) tsan_arrive_block(L->sync);
  wait_as(kAtBlockBarrier);
  tsan_leave_block(L->sync);
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width) {
  Launch *L = t_launch;
  if (!L || !L->current) wait_as(kAtWarpOp);  // reports the misuse
  Fiber *f = L->current;
  f->op = op, f->mask = mask, f->value = value, f->arg = arg, f->width = width;
  const int w = static_cast<int>(f - L->fibers.data()) / 32;
  if (op == kSyncWarp) tsan_arrive_warp(L->sync, w);
  wait_as(kAtWarpOp);
  if (op == kSyncWarp) tsan_leave_warp(L->sync, w);
  return f->result;
}

void *dynamic_smem() { return t_launch ? t_launch->smem : nullptr; }

void *static_shared(const void *key, size_t bytes) {
  Launch *L = t_launch;
  if (!L) {
    report("a __shared__ variable was declared outside a kernel");
    std::abort();
  }
  for (const auto &kv : L->statics)
    if (kv.first == key) return kv.second;
  const size_t at = (L->static_used + 15) / 16 * 16;
  if (at + bytes > kStaticSharedBytes) {
    report("kernel %s: more than %zu bytes of static __shared__ memory", L->name, kStaticSharedBytes);
    std::abort();
  }
  char *p = L->smem_map + at;
  L->static_used = at + bytes;
  fill_nan(p, bytes);
  L->statics.emplace_back(key, p);
  return p;
}

void launch_erased(const void *kernel, const char *name, const LaunchConfig &cfg, Invoke invoke, const void *closure,
                   const PointerArg *pointers, int n_pointers) {
  std::lock_guard<std::recursive_mutex> lock(device_mutex());
  if (sticky() != cudaSuccess) {
    record(sticky());
    return;
  }
  if (t_launch) {
    report("launch of %s from inside kernel %s (dynamic parallelism is not emulated)", name, t_launch->name);
    std::abort();
  }
  const cudaError_t config_err = check_config(kernel, name, cfg);
  if (config_err != cudaSuccess) {
    record(config_err);
    return;
  }
  for (int i = 0; i < n_pointers; ++i) {
    const void *p = pointers[i].ptr;
    if (p && !find_allocation(p)) {
      const Allocation *near = find_mapping(p);
      report("launch of %s: pointer argument %d%s%s (%p) is not device memory%s", name, pointers[i].index, pointers[i].field ? ", " : "",
             pointers[i].field ? pointers[i].field : "", p, near ? " (it is in the guard or slack around an allocation)" : " (a host pointer, or freed memory)");
      set_sticky(cudaErrorIllegalAddress);
      record(cudaErrorIllegalAddress);
      return;
    }
  }
  Launch L;
  L.name = name;
  L.invoke = invoke;
  L.closure = closure;
  L.cfg = cfg;
  L.n = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
  L.fibers.resize(L.n);
  map_shared(&L);
  L.sched_tsan = tsan_current_fiber();
  install_fault_handler();
  tsan_launch_begin();
  t_launch = &L;
  for (unsigned z = 0; z < cfg.grid.z && !L.failed; ++z)
    for (unsigned y = 0; y < cfg.grid.y && !L.failed; ++y)
      for (unsigned x = 0; x < cfg.grid.x && !L.failed; ++x) run_block(&L, make_uint3(x, y, z));
  t_launch = nullptr;
  tsan_launch_end();
  unmap_shared(&L);
  char after[300];
  std::snprintf(after, sizeof after, "kernel %s", name);
  check_guards(after);
}

}  // namespace nt_emu
