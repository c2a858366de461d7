// The vector work every selected bit needs, timed alone on one core (AVX-512 copy): one Philox
// block (8 lanes at a time) and one spacing (uniform, det_log_normal, the division by n - j). A
// floor under the sampler's cost per selected bit (docs/bit_errors.md). Standalone:
//   g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -Iinclude bench/sampler_floor_timing.cpp -o /tmp/floor && /tmp/floor
#include <chrono>
#include <cstdio>
#include "bitrobust/common/detmath.h"
#include "bitrobust/common/philox.h"
using namespace bitrobust;
__attribute__((target("arch=x86-64-v4"), flatten, noinline)) uint64_t run_philox(int64_t blocks) {
  uint32_t c0[8], k0[8], k1[8], out[4][8];
  uint64_t acc = 0;
  for (int64_t b = 0; b < blocks; b += 8) {
    for (int i = 0; i < 8; ++i) { c0[i] = static_cast<uint32_t>(b + i); k0[i] = 0x1234u + i; k1[i] = 0x9876u; }
    philox4x32_lanes<8>(8, c0, k0, k1, out);
    for (int i = 0; i < 8; ++i) acc += out[0][i] ^ out[3][i];
  }
  return acc;
}
__attribute__((target("arch=x86-64-v4"), flatten, noinline)) double run_spacing(int64_t blocks) {
  uint32_t c0[8], k0[8], k1[8], out[4][8];
  double acc = 0, sp[8];
  for (int64_t b = 0; b < blocks; b += 8) {
    for (int i = 0; i < 8; ++i) { c0[i] = static_cast<uint32_t>(b + i); k0[i] = 0x1234u + i; k1[i] = 0x9876u; }
    philox4x32_lanes<8>(8, c0, k0, k1, out);
    for (int i = 0; i < 8; ++i) sp[i] = det_log_normal(uniform_open01(out[0][i], out[1][i])) / static_cast<double>(2048 - i);
    acc += sp[b & 7];
  }
  return acc;
}
int main() {
  const int64_t n = 1 << 26;
  for (int r = 0; r < 2; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    volatile uint64_t a = run_philox(n);
    auto t1 = std::chrono::steady_clock::now();
    volatile double d = run_spacing(n);
    auto t2 = std::chrono::steady_clock::now();
    std::printf("philox block (8 lanes, AVX-512): %.2f ns; + uniform, det_log, division: %.2f ns per spacing\n",
                std::chrono::duration<double, std::nano>(t1 - t0).count() / n,
                std::chrono::duration<double, std::nano>(t2 - t1).count() / n);
    (void)a; (void)d;
  }
}
