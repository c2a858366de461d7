// Fiber scheduler behind the CUDA emulation: NOTE [CUDA emulation] in emulator.h.
#include "emulator.h"

#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitrobust::cuda_emulation {
namespace {

enum class Wait { Running, Warp, Block, Exited };

namespace ctx = boost::context;

struct Thread {
  ctx::fiber self;  ///< where the scheduler resumes this thread
  ctx::fiber sink;  ///< where this thread returns to the scheduler (valid while it runs)
  ThreadIndex index;
  Wait wait = Wait::Running;
  unsigned int warp_mask = 0;
  WarpBarrier warp_kind = WarpBarrier::Syncwarp;
};

// Fiber stacks with a guard page below each (an overflow faults instead of corrupting the heap),
// reused from block to block: a fresh mapping per emulated thread would cost system calls and page
// faults for each of a launch's threads.
class RecyclingStacks {
 public:
  static constexpr size_t kBytes = 64 * 1024;
  RecyclingStacks() = default;
  RecyclingStacks(const RecyclingStacks&) = delete;
  RecyclingStacks& operator=(const RecyclingStacks&) = delete;
  ~RecyclingStacks() {
    for (char* base : free_) munmap(base, page() + kBytes);
  }
  ctx::stack_context allocate() {
    char* base;
    if (free_.empty()) {
      void* mapped = mmap(nullptr, page() + kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (mapped == MAP_FAILED) throw std::bad_alloc();
      base = static_cast<char*>(mapped);
      mprotect(base, page(), PROT_NONE);
    } else {
      base = free_.back();
      free_.pop_back();
    }
    ctx::stack_context sc;
    sc.size = kBytes;
    sc.sp = base + page() + kBytes;  // stacks grow down, toward the guard page
    return sc;
  }
  void deallocate(ctx::stack_context& sc) { free_.push_back(static_cast<char*>(sc.sp) - sc.size - page()); }

 private:
  static size_t page() {
    static const size_t bytes = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return bytes;
  }
  std::vector<char*> free_;
};

// Stack allocator handle for ctx::fiber (which copies it).
struct StackAllocator {
  RecyclingStacks* stacks;
  ctx::stack_context allocate() { return stacks->allocate(); }
  void deallocate(ctx::stack_context& sc) { stacks->deallocate(sc); }
};

struct Scheduler {
  RecyclingStacks stacks;  // (before threads: outlives the fibers that use it)
  // Never reallocated: a suspended thread's frames hold references into it.
  std::vector<Thread> threads = std::vector<Thread>(kMaxThreadsPerBlock);
  int current = -1;
  const std::function<void()>* body = nullptr;
  std::exception_ptr failure;
  uint64_t exchange[kMaxThreadsPerBlock] = {};
  std::vector<uint64_t> dynamic_shared;  // (8-byte words; aligned 16 by the allocator in practice)
  uint64_t schedule_seed = 1;
  bool in_grid = false;
};

Scheduler& scheduler() {
  static Scheduler s;
  static const bool seeded = [] {
    if (const char* seed = std::getenv("BITROBUST_EMULATION_SCHEDULE_SEED")) s.schedule_seed = std::stoull(seed);
    return true;
  }();
  (void)seeded;
  return s;
}

Thread& running_thread(const char* what) {
  Scheduler& s = scheduler();
  if (s.current < 0) throw std::logic_error(std::string("CUDA emulation: ") + what + " called outside a kernel");
  return s.threads[static_cast<size_t>(s.current)];
}

ctx::fiber thread_body(ctx::fiber&& sink, int i) {
  Scheduler& s = scheduler();
  Thread& t = s.threads[static_cast<size_t>(i)];
  t.sink = std::move(sink);
  try {
    (*s.body)();
  } catch (const ctx::detail::forced_unwind&) {
    throw;  // (a thread abandoned after another one failed: its stack is being unwound)
  } catch (...) {
    if (!s.failure) s.failure = std::current_exception();
  }
  t.wait = Wait::Exited;
  return std::move(t.sink);
}

void wait_at(Wait kind, unsigned int mask, WarpBarrier warp_kind) {
  Thread& t = running_thread("a barrier");
  t.wait = kind;
  t.warp_mask = mask;
  t.warp_kind = warp_kind;
  t.sink = std::move(t.sink).resume();
}

const char* name_of(WarpBarrier kind) { return kind == WarpBarrier::Syncwarp ? "__syncwarp" : "a shuffle"; }

std::string hex(unsigned int mask) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", mask);
  return text;
}

std::string where(const ThreadIndex& index) {
  return "block (" + std::to_string(index.block_idx.x) + "," + std::to_string(index.block_idx.y) + "," +
         std::to_string(index.block_idx.z) + ") thread " + std::to_string(index.linear);
}

// The threads that can run, by warp, and which runs next (NOTE [CUDA emulation]): drawn at random
// among all of them, or (greedy warps) among those of the warp that ran last while it has any, so
// that one warp runs as far ahead of the others as barriers let it.
class ReadyThreads {
 public:
  ReadyThreads(int num_threads, bool greedy_warps)
      : by_warp_(static_cast<size_t>((num_threads + kWarpSize - 1) / kWarpSize)), greedy_(greedy_warps) {}
  void add(int thread) {
    by_warp_[static_cast<size_t>(thread / kWarpSize)].push_back(thread);
    ++count_;
  }
  bool empty() const { return count_ == 0; }
  int take(std::mt19937_64& rng) {
    if (!(greedy_ && last_warp_ >= 0 && !by_warp_[static_cast<size_t>(last_warp_)].empty())) {
      uint64_t r = rng() % static_cast<uint64_t>(count_);
      last_warp_ = 0;
      while (r >= by_warp_[static_cast<size_t>(last_warp_)].size()) r -= by_warp_[static_cast<size_t>(last_warp_++)].size();
    }
    std::vector<int>& lanes = by_warp_[static_cast<size_t>(last_warp_)];
    const size_t k = static_cast<size_t>(rng() % lanes.size());
    const int thread = lanes[k];
    lanes[k] = lanes.back();
    lanes.pop_back();
    --count_;
    return thread;
  }

 private:
  std::vector<std::vector<int>> by_warp_;
  bool greedy_;
  int64_t count_ = 0;
  int last_warp_ = -1;  // (none yet: the first warp is drawn too)
};

// After thread i of the block arrived at a warp barrier: throws for lanes that meet it with another
// mask or at another kind of barrier, for a named lane that has exited or waits at __syncthreads
// (it never comes), and for a mask without the lane; releases the lanes named by its mask into
// `ready` once all of them have arrived.
void arrive_at_warp_barrier(Scheduler& s, int num_threads, int i, ReadyThreads& ready) {
  const Thread& t = s.threads[static_cast<size_t>(i)];
  const int warp_base = i - i % kWarpSize, lane = i % kWarpSize;
  const int lanes = std::min(kWarpSize, num_threads - warp_base);
  const std::string at =
      "CUDA emulation: " + where(t.index) + " at " + name_of(t.warp_kind) + " (mask " + hex(t.warp_mask) + ")";
  if (!(t.warp_mask >> lane & 1u)) throw std::runtime_error(at + ": the mask does not name the lane itself");
  bool complete = true;
  for (int other = 0; other < lanes; ++other) {
    if (other == lane) continue;
    const Thread& o = s.threads[static_cast<size_t>(warp_base + other)];
    const bool named = t.warp_mask >> other & 1u;
    if (o.wait == Wait::Warp && (named || (o.warp_mask >> lane & 1u)) &&
        (o.warp_mask != t.warp_mask || o.warp_kind != t.warp_kind)) {
      throw std::runtime_error(at + " meets lane " + std::to_string(other) + " at " + name_of(o.warp_kind) +
                               " (mask " + hex(o.warp_mask) + ")");
    }
    if (!named) continue;
    if (o.wait == Wait::Exited) {
      throw std::runtime_error(at + " waits for lane " + std::to_string(other) +
                               ", which has exited (an error here: NOTE [CUDA emulation])");
    }
    if (o.wait == Wait::Block) {
      throw std::runtime_error(at + ": deadlock: lane " + std::to_string(other) + " waits at __syncthreads");
    }
    complete = complete && o.wait == Wait::Warp;
  }
  if (!complete) return;
  for (int other = 0; other < lanes; ++other) {
    if (!(t.warp_mask >> other & 1u)) continue;
    s.threads[static_cast<size_t>(warp_base + other)].wait = Wait::Running;
    ready.add(warp_base + other);
  }
}

// After thread i exited: a lane of its warp waiting at a barrier that names it would wait forever.
void check_exit(Scheduler& s, int num_threads, int i) {
  const int warp_base = i - i % kWarpSize, lane = i % kWarpSize;
  const int lanes = std::min(kWarpSize, num_threads - warp_base);
  for (int other = 0; other < lanes; ++other) {
    const Thread& o = s.threads[static_cast<size_t>(warp_base + other)];
    if (o.wait == Wait::Warp && (o.warp_mask >> lane & 1u)) {
      throw std::runtime_error("CUDA emulation: " + where(o.index) + " at " + name_of(o.warp_kind) + " (mask " +
                               hex(o.warp_mask) + ") waits for lane " + std::to_string(lane) +
                               ", which has exited (an error here: NOTE [CUDA emulation])");
    }
  }
}

// The threads run one at a time, each until its next barrier, the next one drawn by ReadyThreads.
void run_block(Scheduler& s, dim3 grid, dim3 block, dim3 block_idx, std::mt19937_64& rng, bool greedy_warps) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  for (int i = 0; i < n; ++i) {
    Thread& t = s.threads[static_cast<size_t>(i)];
    t.index.block_idx = block_idx;
    t.index.block_dim = block;
    t.index.grid_dim = grid;
    t.index.linear = i;
    t.index.thread_idx = dim3(static_cast<unsigned>(i) % block.x, static_cast<unsigned>(i) / block.x % block.y,
                              static_cast<unsigned>(i) / (block.x * block.y));
    t.wait = Wait::Running;
    t.self = ctx::fiber(std::allocator_arg, StackAllocator{&s.stacks},
                        [i](ctx::fiber&& sink) { return thread_body(std::move(sink), i); });
  }
  std::fill(std::begin(s.exchange), std::end(s.exchange), 0xA5A5A5A5A5A5A5A5ull);
  std::fill(s.dynamic_shared.begin(), s.dynamic_shared.end(), 0xA5A5A5A5A5A5A5A5ull);
  ReadyThreads ready(n, greedy_warps);
  for (int i = 0; i < n; ++i) ready.add(i);
  int at_block = 0, exited = 0;
  while (!ready.empty()) {
    const int i = ready.take(rng);
    s.current = i;
    Thread& t = s.threads[static_cast<size_t>(i)];
    t.self = std::move(t.self).resume();
    s.current = -1;
    if (s.failure) std::rethrow_exception(s.failure);
    switch (t.wait) {
      case Wait::Warp: arrive_at_warp_barrier(s, n, i, ready); break;
      case Wait::Block: ++at_block; break;
      case Wait::Exited:
        ++exited;
        check_exit(s, n, i);
        break;
      case Wait::Running: throw std::logic_error("CUDA emulation: a thread yielded without waiting");
    }
    if (at_block > 0 && at_block + exited == n) {  // (exited threads count as arrived)
      for (int k = 0; k < n; ++k) {
        Thread& w = s.threads[static_cast<size_t>(k)];
        if (w.wait != Wait::Block) continue;
        w.wait = Wait::Running;
        ready.add(k);
      }
      at_block = 0;
    }
  }
  if (exited != n) {
    throw std::runtime_error("CUDA emulation: deadlock in block " + std::to_string(block_idx.x) + ": " +
                             std::to_string(at_block) + " threads wait at __syncthreads, " +
                             std::to_string(n - exited - at_block) + " at warp barriers, " +
                             std::to_string(exited) + " have exited");
  }
}

}  // namespace

const ThreadIndex& current_thread() { return running_thread("threadIdx").index; }

void warp_barrier(unsigned int mask, WarpBarrier kind) { wait_at(Wait::Warp, mask, kind); }

void block_barrier() { wait_at(Wait::Block, 0, WarpBarrier::Syncwarp); }

void check_shuffle_source(unsigned int mask, int source) {
  const ThreadIndex& me = current_thread();
  const int warp_base = me.linear - me.linear % kWarpSize;
  const int threads = static_cast<int>(me.block_dim.x * me.block_dim.y * me.block_dim.z);
  if (source >= kWarpSize || !(mask >> source & 1u) || warp_base + source >= threads) {
    throw std::runtime_error("CUDA emulation: " + where(me) + ": a shuffle with mask " + hex(mask) + " reads lane " +
                             std::to_string(source) +
                             (warp_base + source >= threads ? ", which does not exist" : ", outside the mask"));
  }
}

void* dynamic_shared_memory() {
  running_thread("dynamic shared memory");
  return scheduler().dynamic_shared.data();  // (null when the launch has none)
}

int lane_in_warp() { return current_thread().linear % kWarpSize; }

int group_base(int width) {
  if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0) {
    throw std::logic_error("CUDA emulation: shuffle width " + std::to_string(width) + " is not a power of 2 in [1, 32]");
  }
  const int lane = lane_in_warp();
  return lane - lane % width;
}

uint64_t& exchange_slot(int linear_thread) {
  if (linear_thread < 0 || linear_thread >= kMaxThreadsPerBlock) {
    throw std::logic_error("CUDA emulation: exchange slot outside the block");
  }
  return scheduler().exchange[linear_thread];
}

void set_schedule_seed(uint64_t seed) { scheduler().schedule_seed = seed; }

void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body) {
  Scheduler& s = scheduler();
  if (s.in_grid) throw std::logic_error("CUDA emulation: a launch from inside a kernel is not emulated");
  if (dynamic_shared_bytes > 48 * 1024) {
    throw std::runtime_error("CUDA emulation: " + std::to_string(dynamic_shared_bytes) +
                             " bytes of dynamic shared memory need cudaFuncSetAttribute (48 KB without)");
  }
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535) {
    throw std::runtime_error("CUDA emulation: invalid launch configuration (" + std::to_string(threads) +
                             " threads per block, grid " + std::to_string(grid.x) + "x" + std::to_string(grid.y) +
                             "x" + std::to_string(grid.z) + ")");
  }
  struct Scope {
    Scheduler& s;
    ~Scope() {
      s.in_grid = false;
      s.current = -1;
      s.body = nullptr;
    }
  } scope{s};
  s.in_grid = true;
  s.body = &body;
  s.dynamic_shared.assign((dynamic_shared_bytes + 15) / 16 * 2, 0);
  s.failure = nullptr;
  std::mt19937_64 rng(s.schedule_seed);
  std::exception_ptr error;
  try {
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          run_block(s, grid, block, dim3(x, y, z), rng, s.schedule_seed % 2 == 0);
        }
      }
    }
  } catch (...) {
    error = std::current_exception();
  }
  if (!error) return;
  // The threads still suspended at barriers are abandoned: destroying a fiber unwinds its stack.
  for (Thread& t : s.threads) t.self = ctx::fiber{};
  std::rethrow_exception(error);
}

}  // namespace bitrobust::cuda_emulation
