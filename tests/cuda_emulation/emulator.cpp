// Fiber scheduler behind the CUDA emulation: NOTE [CUDA emulation] in emulator.h.
#include "emulator.h"

#include <boost/context/fiber.hpp>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <memory>
#include <numeric>
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
};

// Fiber stacks, reused from block to block: a fresh stack per emulated thread would cost a mapping
// (and its page faults) for each of a launch's threads.
class RecyclingStacks {
 public:
  static constexpr size_t kBytes = 64 * 1024;
  ctx::stack_context allocate() {
    if (free_.empty()) free_.push_back(std::make_unique<char[]>(kBytes));
    std::unique_ptr<char[]> stack = std::move(free_.back());
    free_.pop_back();
    ctx::stack_context sc;
    sc.size = kBytes;
    sc.sp = stack.release() + kBytes;  // stacks grow down
    return sc;
  }
  void deallocate(ctx::stack_context& sc) {
    free_.emplace_back(static_cast<char*>(sc.sp) - sc.size);
  }

 private:
  std::vector<std::unique_ptr<char[]>> free_;
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
  uint64_t schedule_seed = 1;
  bool in_grid = false;
  Counters counters;
};

Scheduler& scheduler() {
  static Scheduler s = [] {
    Scheduler first;
    if (const char* seed = std::getenv("BITROBUST_EMULATION_SCHEDULE_SEED")) first.schedule_seed = std::stoull(seed);
    return first;
  }();
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

void wait_at(Wait kind, unsigned int mask) {
  Thread& t = running_thread("a barrier");
  t.wait = kind;
  t.warp_mask = mask;
  t.sink = std::move(t.sink).resume();
}

std::string where(const ThreadIndex& index) {
  return "block (" + std::to_string(index.block_idx.x) + "," + std::to_string(index.block_idx.y) + "," +
         std::to_string(index.block_idx.z) + ") thread " + std::to_string(index.linear);
}

// Releases the warp barriers whose lanes have all arrived; throws for lanes that never will.
bool release_warp_barriers(Scheduler& s, int num_threads) {
  bool released = false;
  for (int warp_base = 0; warp_base < num_threads; warp_base += kWarpSize) {
    const int lanes = std::min(kWarpSize, num_threads - warp_base);
    bool any_waiting = false;
    for (int lane = 0; lane < lanes; ++lane) {
      const Thread& t = s.threads[static_cast<size_t>(warp_base + lane)];
      if (t.wait != Wait::Warp) continue;
      any_waiting = true;
      for (int other = 0; other < lanes; ++other) {
        if (!(t.warp_mask >> other & 1u)) continue;
        const Wait w = s.threads[static_cast<size_t>(warp_base + other)].wait;
        if (w == Wait::Exited) {
          throw std::runtime_error("CUDA emulation: " + where(t.index) + " waits at a warp barrier (mask " +
                                   std::to_string(t.warp_mask) + ") for lane " + std::to_string(other) +
                                   ", which has exited (undefined on hardware)");
        }
        if (w == Wait::Block) {
          throw std::runtime_error("CUDA emulation: deadlock: " + where(t.index) +
                                   " waits at a warp barrier for lane " + std::to_string(other) +
                                   ", which waits at __syncthreads");
        }
      }
    }
    if (!any_waiting) continue;
    for (int lane = 0; lane < lanes; ++lane) {
      Thread& t = s.threads[static_cast<size_t>(warp_base + lane)];
      if (t.wait == Wait::Warp) t.wait = Wait::Running;
    }
    released = true;
  }
  return released;
}

void run_block(Scheduler& s, dim3 grid, dim3 block, dim3 block_idx, std::mt19937_64& rng) {
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
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  for (;;) {
    std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      if (s.threads[static_cast<size_t>(i)].wait != Wait::Running) continue;
      s.current = i;
      Thread& t = s.threads[static_cast<size_t>(i)];
      t.self = std::move(t.self).resume();
      s.current = -1;
    }
    if (s.failure) std::rethrow_exception(s.failure);
    if (release_warp_barriers(s, n)) {
      ++s.counters.barriers_released;
      continue;
    }
    int exited = 0, at_block = 0;
    for (int i = 0; i < n; ++i) {
      exited += s.threads[static_cast<size_t>(i)].wait == Wait::Exited;
      at_block += s.threads[static_cast<size_t>(i)].wait == Wait::Block;
    }
    if (exited == n) return;
    if (exited + at_block == n) {
      for (int i = 0; i < n; ++i) {
        if (s.threads[static_cast<size_t>(i)].wait == Wait::Block) s.threads[static_cast<size_t>(i)].wait = Wait::Running;
      }
      ++s.counters.barriers_released;
      continue;
    }
    throw std::logic_error("CUDA emulation: no thread can run in block " + std::to_string(block_idx.x));
  }
}

}  // namespace

const ThreadIndex& current_thread() { return running_thread("threadIdx").index; }

void warp_barrier(unsigned int mask) { wait_at(Wait::Warp, mask); }

void block_barrier() { wait_at(Wait::Block, 0); }

uint64_t& exchange_slot(int linear_thread) {
  if (linear_thread < 0 || linear_thread >= kMaxThreadsPerBlock) {
    throw std::logic_error("CUDA emulation: exchange slot outside the block");
  }
  return scheduler().exchange[linear_thread];
}

void set_schedule_seed(uint64_t seed) { scheduler().schedule_seed = seed; }

Counters counters() { return scheduler().counters; }

void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body) {
  Scheduler& s = scheduler();
  if (s.in_grid) throw std::logic_error("CUDA emulation: a launch from inside a kernel is not emulated");
  if (dynamic_shared_bytes != 0) throw std::logic_error("CUDA emulation: dynamic shared memory is not emulated");
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
  s.failure = nullptr;
  ++s.counters.launches;
  std::mt19937_64 rng(s.schedule_seed);
  std::exception_ptr error;
  try {
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          run_block(s, grid, block, dim3(x, y, z), rng);
          ++s.counters.blocks;
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
