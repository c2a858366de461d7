// The CUDA emulation itself (NOTE [CUDA emulation]): indices, barriers, shuffles and atomics behave as
// on hardware, and what hardware leaves undefined or hangs on is reported.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitrobust::cuda_emulation {
namespace {

#define LAUNCH(kernel, grid, block) BITROBUST_EMULATED_LAUNCH(kernel, grid, block, 0)

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

struct Seen {
  unsigned int block[3], thread[3], block_dim[3], grid_dim[3];
};

__global__ void record_indices(Seen* seen) {
  const unsigned int block_linear = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned int thread_linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  Seen& s = seen[block_linear * blockDim.x * blockDim.y * blockDim.z + thread_linear];
  s = {{blockIdx.x, blockIdx.y, blockIdx.z}, {threadIdx.x, threadIdx.y, threadIdx.z},
       {blockDim.x, blockDim.y, blockDim.z}, {gridDim.x, gridDim.y, gridDim.z}};
}

TEST(CudaEmulation, EveryThreadOfTheGridRunsOnceWithItsIndices) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  std::vector<Seen> seen(12 * 24, Seen{{99, 99, 99}, {99, 99, 99}, {0, 0, 0}, {0, 0, 0}});
  LAUNCH(record_indices, grid, block)(seen.data());
  size_t k = 0;
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 3; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx, ++k) {
              const Seen& s = seen[k];
              ASSERT_EQ(s.block[0], bx);
              ASSERT_EQ(s.block[1], by);
              ASSERT_EQ(s.block[2], bz);
              ASSERT_EQ(s.thread[0], tx);
              ASSERT_EQ(s.thread[1], ty);
              ASSERT_EQ(s.thread[2], tz);
              ASSERT_EQ(s.block_dim[0] * s.block_dim[1] * s.block_dim[2], 24u);
              ASSERT_EQ(s.grid_dim[0] * s.grid_dim[1] * s.grid_dim[2], 12u);
            }
}

__global__ void warp_shuffles(int* sums, int* broadcasts, int* butterflies) {
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  int value = static_cast<int>(threadIdx.x);
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  if (lane == 0) sums[warp] = value;
  broadcasts[threadIdx.x] = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x), 5);
  int all = static_cast<int>(threadIdx.x);
  for (int mask = 1; mask < 32; mask *= 2) all += __shfl_xor_sync(0xffffffffu, all, mask);
  butterflies[threadIdx.x] = all;
}

TEST(CudaEmulation, ShufflesExchangeWithinTheWarp) {
  std::vector<int> sums(2, -1), broadcasts(64, -1), butterflies(64, -1);
  LAUNCH(warp_shuffles, 1, 64)(sums.data(), broadcasts.data(), butterflies.data());
  EXPECT_EQ(sums[0], 31 * 32 / 2);        // 0 + ... + 31
  EXPECT_EQ(sums[1], 63 * 64 / 2 - 496);  // 32 + ... + 63
  for (int t = 0; t < 64; ++t) {
    EXPECT_EQ(broadcasts[t], t < 32 ? 5 : 37) << t;
    EXPECT_EQ(butterflies[t], t < 32 ? 496 : 1520) << t;
  }
}

__global__ void neighbour_through_global(int* buffer, int* read, bool with_barrier) {
  const int lane = static_cast<int>(threadIdx.x);
  buffer[lane] = lane + 1;
  if (with_barrier) __syncwarp();
  read[lane] = buffer[(lane + 1) % 32];
}

TEST(CudaEmulation, AMissingBarrierGivesWrongResultsUnderShuffledSchedules) {
  int wrong_schedules = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    set_schedule_seed(seed);
    for (bool with_barrier : {true, false}) {
      std::vector<int> buffer(32, 0), read(32, -1);
      LAUNCH(neighbour_through_global, 1, 32)(buffer.data(), read.data(), with_barrier);
      bool right = true;
      for (int lane = 0; lane < 32; ++lane) right = right && read[lane] == (lane + 1) % 32 + 1;
      if (with_barrier) EXPECT_TRUE(right) << "seed " << seed;
      if (!with_barrier && !right) ++wrong_schedules;
    }
  }
  set_schedule_seed(1);
  EXPECT_EQ(wrong_schedules, 4);  // (32 lanes in a random order: some lane always reads before its neighbour writes)
}

__global__ void log_warps(int* log, int* next) {
  for (int step = 0; step < 3; ++step) {
    log[atomicAdd(next, 1)] = static_cast<int>(threadIdx.x / 32);
    __syncwarp();
  }
}

// Runs of the same warp in the order threads ran.
int warp_switches(uint64_t seed) {
  set_schedule_seed(seed);
  std::vector<int> log(3 * 128, -1);
  int next = 0;
  LAUNCH(log_warps, 1, 128)(log.data(), &next);
  set_schedule_seed(1);
  int switches = 0;
  for (size_t i = 1; i < log.size(); ++i) switches += log[i] != log[i - 1];
  return switches;
}

TEST(CudaEmulation, GreedyWarpsRunAheadUnderEvenSeeds) {
  // Even seeds: each warp runs through its barriers before another starts (4 warps: 3 switches);
  // odd seeds: threads of all warps interleave.
  EXPECT_EQ(warp_switches(2), 3);
  EXPECT_EQ(warp_switches(4), 3);
  EXPECT_GT(warp_switches(1), 100);
  EXPECT_GT(warp_switches(3), 100);
}

__global__ void block_reduce(const int* in, int* out) {
  __shared__ int partial[256];
  partial[threadIdx.x] = in[blockIdx.x * 256 + threadIdx.x];
  for (int stride = 128; stride > 0; stride /= 2) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

TEST(CudaEmulation, BlockBarriersOrderSharedMemory) {
  std::vector<int> in(256 * 5);
  std::iota(in.begin(), in.end(), 0);
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    set_schedule_seed(seed);
    std::vector<int> out(5, -1);
    LAUNCH(block_reduce, 5, 256)(in.data(), out.data());
    for (int b = 0; b < 5; ++b) EXPECT_EQ(out[b], std::accumulate(in.begin() + 256 * b, in.begin() + 256 * (b + 1), 0));
  }
  set_schedule_seed(1);
}

__global__ void atomics(unsigned long long* total, unsigned int* bits, unsigned int* flips) {
  atomicAdd(total, 1ull + threadIdx.x);
  atomicOr(bits, 1u << (threadIdx.x % 32));
  atomicXor(flips, 1u);
}

TEST(CudaEmulation, AtomicsSeeEveryThread) {
  unsigned long long total = 0;
  unsigned int bits = 0, flips = 0;
  LAUNCH(atomics, 3, 100)(&total, &bits, &flips);
  EXPECT_EQ(total, 3ull * (100 * 101 / 2));
  EXPECT_EQ(bits, 0xffffffffu);
  EXPECT_EQ(flips, 0u);  // (300 flips)
}

__global__ void half_warp_exits() {
  if (threadIdx.x < 16) return;
  __syncwarp();
}

__global__ void warp_and_block_barrier() {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    __syncwarp();
  }
}

__global__ void throws_in_one_thread(int* after) {
  __syncwarp();
  if (threadIdx.x == 7) throw std::runtime_error("thread 7 failed");
  __syncwarp();
  after[threadIdx.x] = 1;
}

__global__ void shuffle_group_rules(int* minus_one, int* xor_16_in_16) {
  minus_one[threadIdx.x] = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x), -1);
  xor_16_in_16[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 16, 16);
}

TEST(CudaEmulation, ShuffleSourcesFollowTheProgrammingGuide) {
  std::vector<int> minus_one(32), xor_16_in_16(32);
  LAUNCH(shuffle_group_rules, 1, 32)(minus_one.data(), xor_16_in_16.data());
  for (int lane = 0; lane < 32; ++lane) {
    EXPECT_EQ(minus_one[lane], 31) << lane;                           // source lane modulo width
    EXPECT_EQ(xor_16_in_16[lane], lane < 16 ? lane : lane - 16) << lane;  // earlier group read, later not
  }
}

__global__ void shuffle_outside_mask(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1, 20);
}
__global__ void reduce_in_partial_warp(int* out) {
  int v = 1;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}
__global__ void masks_differ() {  // (lanes 0 and 1 name each other, with other masks)
  __syncwarp(threadIdx.x == 0 ? 0x3u : (threadIdx.x == 1 ? 0x7u : 0xfffffffcu));
}
__global__ void mask_without_self() {
  if (threadIdx.x == 20) __syncwarp(0x0000ffffu);
}
__global__ void syncwarp_meets_shuffle(int* out) {
  if (threadIdx.x == 0) {
    __syncwarp();
  } else {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  }
}
__global__ void bad_width(int* out) { out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0, 0); }

TEST(CudaEmulation, WhatHardwareLeavesUndefinedIsAnError) {
  std::vector<int> out(64);
  int* o = out.data();
  EXPECT_NE(error_of([&] { LAUNCH(shuffle_outside_mask, 1, 32)(o); }).find("reads lane 20, outside the mask"),
            std::string::npos);
  EXPECT_NE(error_of([&] { LAUNCH(reduce_in_partial_warp, 1, 48)(o); }).find("which does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([] { LAUNCH(masks_differ, 1, 32)(); }).find(" meets lane "),
            std::string::npos);
  EXPECT_NE(error_of([] { LAUNCH(mask_without_self, 1, 32)(); }).find("does not name the lane itself"),
            std::string::npos);
  EXPECT_NE(error_of([&] { LAUNCH(syncwarp_meets_shuffle, 1, 32)(o); }).find("at a shuffle"), std::string::npos);
  EXPECT_NE(error_of([&] { LAUNCH(bad_width, 1, 32)(o); }).find("width 0 is not a power of 2"), std::string::npos);

  EXPECT_NE(error_of([] { LAUNCH(half_warp_exits, 1, 32)(); }).find(", which has exited"), std::string::npos);
  EXPECT_NE(error_of([] { LAUNCH(warp_and_block_barrier, 1, 64)(); }).find("deadlock"), std::string::npos);
  EXPECT_NE(error_of([] { LAUNCH(half_warp_exits, 1, 0)(); }).find("invalid launch configuration (0 threads"),
            std::string::npos);
  EXPECT_NE(error_of([] { LAUNCH(half_warp_exits, 1, 1025)(); }).find("invalid launch configuration (1025 threads"),
            std::string::npos);
  EXPECT_NE(error_of([] { __syncwarp(); }).find("called outside a kernel"), std::string::npos);
  // A thread's exception ends the launch; the threads left at barriers are abandoned, and the next
  // launch runs normally.
  std::vector<int> after(64, 0);
  EXPECT_EQ(error_of([&] { LAUNCH(throws_in_one_thread, 1, 64)(after.data()); }), "thread 7 failed");
  std::vector<int> sums(2), broadcasts(64), butterflies(64);
  LAUNCH(warp_shuffles, 1, 64)(sums.data(), broadcasts.data(), butterflies.data());
  EXPECT_EQ(sums[1], 1520);
}

}  // namespace
}  // namespace bitrobust::cuda_emulation
