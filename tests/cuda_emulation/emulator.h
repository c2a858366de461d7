#pragma once
// NOTE [CUDA emulation]
// A GPU is lent to a few sessions for a few minutes, so a CUDA kernel written in a session without
// one would otherwise first run on hardware with little time left to debug it. The tests therefore
// compile a kernel's .cu source as plain C++ (the stand-in <cuda_runtime.h> in include/ supplies the
// CUDA keywords, built-in variables, intrinsics and the few runtime calls we use, over host memory)
// and run its grid on the CPU, against the CPU twin.
//
// How a grid runs: block after block; in a block every thread is a fiber (Boost.Context) on one OS
// thread, and a thread runs until it reaches a barrier (__syncwarp, __syncthreads, a shuffle) or
// ends; a barrier is released when the last thread it waits for arrives. Which thread runs next is
// drawn at random (seeded: set_schedule_seed), so lanes interleave in any order between barriers, as
// on Volta and later; under even seeds the draw keeps to the warp that ran last while it can run
// ("greedy warps"), so that a warp runs as far ahead of the others as barriers let it, as a warp the
// hardware favours may. A kernel that reads another thread's write without a barrier in between
// then gives wrong results under some seeds (races between warps show under even seeds, races
// within a warp under odd ones). Shared memory (`__shared__`, a static) is shared by every thread of the block and keeps the
// last block's contents; dynamic shared memory (BR_DYNAMIC_SHARED) is refilled with 0xA5 bytes for
// each block, and more than 48 KB of it is an error, as on hardware without an opt-in. Atomics are
// plain read-modify-writes: threads switch only at barriers.
//
// Errors thrown by the launch: a deadlock (threads waiting at barriers no one else reaches); lanes
// that meet at a warp barrier with different masks, or at different kinds of warp barrier
// (__syncwarp and a shuffle); a mask without the calling lane; a shuffle reading a lane outside its
// mask or beyond the block; and, stricter than the Programming Guide (which lets a mask name exited
// lanes), a warp barrier whose mask names a lane that has exited, as a lane leaving a loop early
// does. The emulated cudaMalloc fills new memory with 0xA5 bytes, so reads of what was never written
// rarely pass as zeros.
//
// What this does not check: code compiled only for the device (`#if defined(__CUDA_ARCH__)`: Philox's
// multiply-high, det_log's bit casts, quantization's __float2int_rn/_rd; the host versions run here,
// the device ones are tested on hardware); the memory model beyond barrier order
// (shuffles order memory here, not on hardware); updates that should have been atomic (a plain
// read-modify-write never loses one here); races between blocks (blocks run one after another, and
// spin-waits on another block hang); streams and asynchrony (launches finish before they return,
// and host code could read "device" memory); static shared memory's first contents (zero here);
// speed and launch limits other than the block size.
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace bitrobust::cuda_emulation {

constexpr int kWarpSize = 32;
constexpr int kMaxThreadsPerBlock = 1024;

struct ThreadIndex {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  int linear = 0;  ///< thread index within the block, x fastest
};

/// The running thread's indices (only valid inside a kernel run by run_grid).
const ThreadIndex& current_thread();

enum class WarpBarrier { Syncwarp, Shuffle };
/// Barrier of the lanes of the calling thread's warp named by mask (bit i: lane i).
void warp_barrier(unsigned int mask, WarpBarrier kind = WarpBarrier::Syncwarp);
/// Barrier of all threads of the block (threads that have exited count as arrived).
void block_barrier();
/// The 8-byte slot of a thread of the running block for exchanges within its warp (shuffles).
uint64_t& exchange_slot(int linear_thread);
/// Throws std::logic_error naming the thread if a shuffle under `mask` may not read warp lane `source`.
void check_shuffle_source(unsigned int mask, int source);

/// The running block's dynamic shared memory (the launch's shared_bytes, 16-byte aligned, filled
/// with 0xA5 bytes before each block).
void* dynamic_shared_memory();

/// Order of the threads between barriers, and greedy warps for even seeds; see NOTE [CUDA emulation].
/// Applies to later launches.
/// The environment variable BITROBUST_EMULATION_SCHEDULE_SEED sets the first (default 1).
void set_schedule_seed(uint64_t seed);

/// Runs body once per thread of the grid; throws std::runtime_error on the errors of NOTE [CUDA
/// emulation] and rethrows an exception thrown by a thread, once no thread of its block can run.
void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, const std::function<void()>& body);

template <typename Kernel>
struct Launch {
  dim3 grid, block;
  size_t dynamic_shared_bytes;
  Kernel kernel;
  template <typename... Args>
  void operator()(Args... args) const {
    run_grid(grid, block, dynamic_shared_bytes, [&] { kernel(args...); });
  }
};

template <typename Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, Kernel kernel) {
  return {grid, block, dynamic_shared_bytes, kernel};
}

/// A shuffle: every lane named by mask publishes value; each gets the value of warp lane `source`,
/// or its own when source < 0.
template <typename T>
T shuffle(unsigned int mask, T value, int source) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value,
                "shuffles exchange values of at most 8 bytes");
  const int me = current_thread().linear;
  const int warp_base = me - me % kWarpSize;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  exchange_slot(me) = bits;
  warp_barrier(mask, WarpBarrier::Shuffle);
  T result = value;
  if (source >= 0) {
    check_shuffle_source(mask, source);
    const uint64_t published = exchange_slot(warp_base + source);
    std::memcpy(&result, &published, sizeof(T));
  }
  warp_barrier(mask, WarpBarrier::Shuffle);
  return result;
}

/// The calling thread's lane, and the first lane of its group of `width` lanes; throws std::logic_error
/// for a width that is not a power of two in [1, 32].
int lane_in_warp();
int group_base(int width);

}  // namespace bitrobust::cuda_emulation
