// Standalone, Torch-free check that every CUDA kernel agrees with its CPU twin (bit for bit, except
// the fused GroupNorm + ReLU's float reductions), plus CUDA timings of the bit error injection. Not part of the CMake build (which needs Torch with CUDA for the
// torch-facing CUDA tests); build and run it on a GPU machine with tests/bits/run_cuda_check.sh.
// Exit status 0 iff every comparison matched. `--small` shrinks every problem (keeping the odd sizes
// and all code widths, models and rates) and skips the timings, for runs under compute-sanitizer,
// which slows shared-memory-heavy kernels by orders of magnitude; `--bits-only` leaves out all but
// the bit layer's kernels. ctest also runs it with --small on
// the CPU, compiled as C++ over the CUDA emulation (NOTE [CUDA emulation]; test CudaIdentityCheckEmulated).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/bits/bitops_kernels.h"
#include "bitrobust/common/detmath.h"
#include "bitrobust/data/augment_kernels.h"
#include "bitrobust/models/group_norm_relu_kernels.h"
#include "bitrobust/quant/quantize_kernels.h"
#include "bitrobust/quant/quantize_math.h"
#include "kernels/cuda/cuda_launch.h"

using namespace bitrobust;
using namespace bitrobust::bits;
using namespace bitrobust::kernels;

namespace {

int failures = 0, checks = 0;
bool small_sizes = false;

// Problem sizes: odd, as given, or a fiftieth of them (still odd, at least 1001) with --small.
int64_t sized(int64_t n) { return small_sizes ? std::max<int64_t>(1001, n / 50) | 1 : n; }

#define CUDA_OK(call)                                                                        \
  do {                                                                                       \
    cudaError_t err_ = (call);                                                               \
    if (err_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(err_), __FILE__, __LINE__); \
      std::exit(2);                                                                          \
    }                                                                                        \
  } while (0)

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("MISMATCH: %s\n", what.c_str());
  }
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

// Codes with only the low `bits` bits set, in elements of eb bytes.
std::vector<uint8_t> random_codes(int64_t numel, int eb, int bits, uint64_t seed) {
  std::vector<uint8_t> bytes = random_bytes(numel * eb, seed);
  for (int64_t i = 0; i < numel; ++i) {
    uint32_t v = 0;
    std::memcpy(&v, &bytes[i * eb], eb);
    v &= bits >= 32 ? 0xFFFFFFFFu : ((1u << bits) - 1);
    std::memcpy(&bytes[i * eb], &v, eb);
  }
  return bytes;
}

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { CUDA_OK(cudaMalloc(&ptr, n > 0 ? n : 1)); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  char* c() const { return static_cast<char*>(ptr); }
};

__global__ void det_log_kernel(const double* x, double* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = det_log(x[i]);
}

void check_det_log() {
  std::mt19937_64 rng(3);
  std::vector<double> x;
  for (int k = 0; k < 200000; ++k) {
    uint64_t bits = rng();
    bits &= 0x7FFFFFFFFFFFFFFFull;  // positive
    double v;
    std::memcpy(&v, &bits, sizeof v);
    if (std::isfinite(v)) x.push_back(v);
    x.push_back(uniform_open01(static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng())));
  }
  const int n = static_cast<int>(x.size());
  DeviceBuffer dx(n * sizeof(double)), dy(n * sizeof(double));
  CUDA_OK(cudaMemcpy(dx.ptr, x.data(), n * sizeof(double), cudaMemcpyHostToDevice));
  BR_LAUNCH(det_log_kernel, (n + 255) / 256, 256, 0, nullptr)(static_cast<double*>(dx.ptr), static_cast<double*>(dy.ptr), n);
  std::vector<double> y(n);
  CUDA_OK(cudaMemcpy(y.data(), dy.ptr, n * sizeof(double), cudaMemcpyDeviceToHost));
  int mismatches = 0;
  for (int i = 0; i < n; ++i) {
    const double h = det_log(x[i]);
    if (std::memcmp(&h, &y[i], sizeof h) != 0) ++mismatches;
  }
  expect(mismatches == 0, "det_log host vs device: " + std::to_string(mismatches) + " of " + std::to_string(n));
}

// One injection on CPU and CUDA; offset_elems shifts the pointers to exercise unaligned copies.
void check_inject(int64_t numel, int eb, int bits, const BitErrorParams& params, uint64_t seed, int64_t param,
                  int offset_elems, bool in_place, const std::string& label) {
  const auto clean = random_codes(numel + offset_elems, eb, bits, seed ^ 0x55);
  std::vector<uint8_t> cpu_out(clean.size(), 0);
  InjectTask task;
  task.numel = numel;
  task.param_index = param;
  task.elem_bytes = eb;
  task.params = params;
  std::vector<uint8_t> cpu_in = clean;
  task.clean = cpu_in.data() + offset_elems * eb;
  task.out = in_place ? cpu_in.data() + offset_elems * eb : cpu_out.data() + offset_elems * eb;
  const int64_t cpu_count = inject_bit_errors_cpu(&task, 1, seed);
  const std::vector<uint8_t>& cpu_result = in_place ? cpu_in : cpu_out;

  DeviceBuffer d_clean(clean.size()), d_out(clean.size()), d_count(sizeof(unsigned long long));
  CUDA_OK(cudaMemcpy(d_clean.ptr, clean.data(), clean.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d_out.ptr, 0, clean.size()));
  CUDA_OK(cudaMemset(d_count.ptr, 0, sizeof(unsigned long long)));
  task.clean = d_clean.c() + offset_elems * eb;
  task.out = in_place ? d_clean.c() + offset_elems * eb : d_out.c() + offset_elems * eb;
  inject_bit_errors_cuda(&task, 1, seed, static_cast<unsigned long long*>(d_count.ptr), nullptr);
  std::vector<uint8_t> gpu_result(clean.size());
  CUDA_OK(cudaMemcpy(gpu_result.data(), in_place ? d_clean.ptr : d_out.ptr, clean.size(), cudaMemcpyDeviceToHost));
  unsigned long long gpu_count = 0;
  CUDA_OK(cudaMemcpy(&gpu_count, d_count.ptr, sizeof gpu_count, cudaMemcpyDeviceToHost));
  const bool same = std::memcmp(cpu_result.data() + offset_elems * eb, gpu_result.data() + offset_elems * eb,
                                numel * eb) == 0;
  expect(same && cpu_count == static_cast<int64_t>(gpu_count),
         label + " (cpu changed " + std::to_string(cpu_count) + ", gpu " + std::to_string(gpu_count) + ")");
}

// A 2-byte code at an odd address straddles two 32-bit words, which the kernel changes bits through:
// refused on the host, before a launch.
void check_misaligned_codes_are_refused() {
  DeviceBuffer d(64);
  InjectTask task;
  task.numel = 8;
  task.elem_bytes = 2;
  task.params = make_bit_error_params(0, 16, 0.5, 0.5);
  task.clean = d.c();
  task.out = d.c() + 1;
  const auto refused = [](auto&& call) {
    try {
      call();
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  expect(refused([&] { inject_bit_errors_cuda(&task, 1, 5, nullptr, nullptr); }), "inject refuses misaligned out codes");
  task.out = d.c();
  task.clean = d.c() + 3;
  expect(refused([&] { inject_bit_errors_cuda(&task, 1, 5, nullptr, nullptr); }), "inject refuses misaligned clean codes");
  task.clean = nullptr;
  expect(refused([&] { inject_bit_errors_cuda(&task, 1, 5, nullptr, nullptr); }), "inject refuses null clean codes");
  expect(refused([&] { apply_selected_bits_cuda(d.c() + 1, 2, nullptr, 1, nullptr, nullptr); }),
         "apply_selected_bits refuses misaligned codes");
}

void check_injection_identity() {
  struct Model {
    const char* name;
    double p01, p10;
    int lo_from_top;  // -1: all bits; 0: msb only; k>0: k lsbs
  };
  const Model models[] = {{"random", 1, 1, -1}, {"msb", 1, 1, 0}, {"lsb2", 1, 1, 2},
                          {"stuck0", 0, 1, -1}, {"stuck1", 1, 0, -1}, {"asym", 1, 0.1, -1}};
  const double rates[] = {1e-6, 1e-4, 1e-2, 0.1, 0.5, 1.0};
  const int widths[][2] = {{1, 8}, {1, 4}, {1, 1}, {2, 12}, {2, 16}, {4, 20}, {4, 32}};
  int k = 0;
  for (const auto& w : widths) {
    for (const auto& m : models) {
      for (double p : rates) {
        const int eb = w[0], bits = w[1];
        int lo = 0, count = bits;
        if (m.lo_from_top == 0) { lo = bits - 1; count = 1; }
        if (m.lo_from_top > 0) count = std::min(bits, m.lo_from_top);
        const auto params = make_bit_error_params(lo, count, m.p01 * p, m.p10 * p);
        const int64_t numel = sized(p < 1e-3 ? 1000003 : (p >= 0.5 ? 20011 : 200003));
        const std::string label = std::string(m.name) + " p=" + std::to_string(p) + " eb=" + std::to_string(eb) +
                                  " bits=" + std::to_string(bits);
        check_inject(numel, eb, bits, params, 1000 + k, k % 7, (k % 3) == 1 ? 1 : 0, k % 5 == 4, label);
        ++k;
      }
    }
  }
}

void check_multi_task() {
  // 61 tensors (two launch batches), mixed widths, some inactive (unselected).
  std::vector<std::vector<uint8_t>> cleans;
  std::vector<InjectTask> tasks;
  size_t total_bytes = 0;
  for (int i = 0; i < 61; ++i) {
    const int eb = i % 3 == 0 ? 2 : 1, bits = eb == 2 ? 9 + i % 8 : 1 + i % 8;
    const int64_t numel = 100 + sized(9973) * (i % 11);
    cleans.push_back(random_codes(numel, eb, bits, 500 + i));
    InjectTask t;
    t.numel = numel;
    t.param_index = i;
    t.elem_bytes = eb;
    t.params = i % 4 == 3 ? BitErrorParams{} : make_bit_error_params(0, bits, 0.01, 0.01);
    tasks.push_back(t);
    total_bytes += numel * eb;
  }
  std::vector<std::vector<uint8_t>> cpu_outs;
  for (size_t i = 0; i < tasks.size(); ++i) {
    cpu_outs.emplace_back(cleans[i].size());
    tasks[i].clean = cleans[i].data();
    tasks[i].out = cpu_outs[i].data();
  }
  const int64_t cpu_count = inject_bit_errors_cpu(tasks.data(), tasks.size(), 99);
  std::vector<DeviceBuffer*> d_clean, d_out;
  for (size_t i = 0; i < tasks.size(); ++i) {
    d_clean.push_back(new DeviceBuffer(cleans[i].size()));
    d_out.push_back(new DeviceBuffer(cleans[i].size()));
    CUDA_OK(cudaMemcpy(d_clean[i]->ptr, cleans[i].data(), cleans[i].size(), cudaMemcpyHostToDevice));
    tasks[i].clean = d_clean[i]->ptr;
    tasks[i].out = d_out[i]->ptr;
  }
  DeviceBuffer d_count(8);
  CUDA_OK(cudaMemset(d_count.ptr, 0, 8));
  inject_bit_errors_cuda(tasks.data(), tasks.size(), 99, static_cast<unsigned long long*>(d_count.ptr), nullptr);
  unsigned long long gpu_count = 0;
  CUDA_OK(cudaMemcpy(&gpu_count, d_count.ptr, 8, cudaMemcpyDeviceToHost));
  bool same = true;
  for (size_t i = 0; i < tasks.size(); ++i) {
    std::vector<uint8_t> back(cleans[i].size());
    CUDA_OK(cudaMemcpy(back.data(), d_out[i]->ptr, back.size(), cudaMemcpyDeviceToHost));
    same = same && back == cpu_outs[i];
    delete d_clean[i];
    delete d_out[i];
  }
  expect(same && cpu_count == static_cast<int64_t>(gpu_count),
         "multi-task injection over 61 tensors (" + std::to_string(total_bytes) + " bytes)");
}

void check_apply() {
  for (int eb : {1, 2, 4}) {
    const int bits = eb == 1 ? 7 : (eb == 2 ? 16 : 27);
    const int64_t numel = sized(50001);
    const auto clean = random_codes(numel, eb, bits, 77 + eb);
    const auto selected = draw_selected_bits(numel, make_bit_error_params(0, bits, 0.2, 0.05), 5, 1);
    std::vector<uint8_t> cpu = clean;
    const int64_t cpu_count = apply_selected_bits_cpu(cpu.data(), eb, selected.data(), selected.size());
    DeviceBuffer d_codes(clean.size()), d_sel(selected.size() * sizeof(SelectedBit)), d_count(8);
    CUDA_OK(cudaMemcpy(d_codes.ptr, clean.data(), clean.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d_sel.ptr, selected.data(), d_sel.bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(d_count.ptr, 0, 8));
    apply_selected_bits_cuda(d_codes.ptr, eb, static_cast<SelectedBit*>(d_sel.ptr), selected.size(),
                             static_cast<unsigned long long*>(d_count.ptr), nullptr);
    std::vector<uint8_t> gpu(clean.size());
    unsigned long long gpu_count = 0;
    CUDA_OK(cudaMemcpy(gpu.data(), d_codes.ptr, gpu.size(), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&gpu_count, d_count.ptr, 8, cudaMemcpyDeviceToHost));
    expect(gpu == cpu && cpu_count == static_cast<int64_t>(gpu_count), "apply_selected_bits eb=" + std::to_string(eb));
  }
}

void check_bitops() {
  for (int eb : {1, 2, 4}) {
    const int64_t n = sized(1000003);
    const auto a = random_bytes(n * eb, 10 + eb);
    auto b = random_bytes(n * eb, 20 + eb);
    std::memcpy(b.data(), a.data(), 1000 * eb);  // some equal elements
    DeviceBuffer da(a.size()), db(b.size()), dout(a.size()), dcount(n), dbits(n * 8 * eb), dtotal(8);
    CUDA_OK(cudaMemcpy(da.ptr, a.data(), a.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(db.ptr, b.data(), b.size(), cudaMemcpyHostToDevice));
    std::vector<uint8_t> cpu(a.size()), gpu(a.size()), cpu_counts(n), gpu_counts(n);
    for (int op = 0; op <= 4; ++op) {
      bitops_binary_cpu(static_cast<BitBinaryOp>(op), a.data(), b.data(), cpu.data(), n, eb);
      bitops_binary_cuda(static_cast<BitBinaryOp>(op), da.ptr, db.ptr, dout.ptr, n, eb, nullptr);
      CUDA_OK(cudaMemcpy(gpu.data(), dout.ptr, gpu.size(), cudaMemcpyDeviceToHost));
      expect(cpu == gpu, "bitops binary op " + std::to_string(op) + " eb=" + std::to_string(eb));
    }
    bitops_not_cpu(a.data(), cpu.data(), n, eb);
    bitops_not_cuda(da.ptr, dout.ptr, n, eb, nullptr);
    CUDA_OK(cudaMemcpy(gpu.data(), dout.ptr, gpu.size(), cudaMemcpyDeviceToHost));
    expect(cpu == gpu, "bitops not eb=" + std::to_string(eb));
    bitops_popcount_cpu(a.data(), cpu_counts.data(), n, eb);
    bitops_popcount_cuda(da.ptr, static_cast<uint8_t*>(dcount.ptr), n, eb, nullptr);
    CUDA_OK(cudaMemcpy(gpu_counts.data(), dcount.ptr, n, cudaMemcpyDeviceToHost));
    expect(cpu_counts == gpu_counts, "bitops popcount eb=" + std::to_string(eb));
    bitops_hamming_cpu(a.data(), b.data(), cpu_counts.data(), n, eb);
    bitops_hamming_cuda(da.ptr, db.ptr, static_cast<uint8_t*>(dcount.ptr), n, eb, nullptr);
    CUDA_OK(cudaMemcpy(gpu_counts.data(), dcount.ptr, n, cudaMemcpyDeviceToHost));
    expect(cpu_counts == gpu_counts, "bitops hamming eb=" + std::to_string(eb));
    CUDA_OK(cudaMemset(dtotal.ptr, 0, 8));
    bitops_hamming_total_cuda(da.ptr, db.ptr, n, eb, static_cast<unsigned long long*>(dtotal.ptr), nullptr);
    unsigned long long total = 0;
    CUDA_OK(cudaMemcpy(&total, dtotal.ptr, 8, cudaMemcpyDeviceToHost));
    expect(static_cast<int64_t>(total) == bitops_hamming_total_cpu(a.data(), b.data(), n, eb),
           "bitops hamming total eb=" + std::to_string(eb));
    const int bits = 8 * eb - 1;
    std::vector<uint8_t> cpu_bits(n * bits), gpu_bits(n * bits);
    bitops_extract_cpu(a.data(), cpu_bits.data(), n, eb, bits);
    bitops_extract_cuda(da.ptr, static_cast<uint8_t*>(dbits.ptr), n, eb, bits, nullptr);
    CUDA_OK(cudaMemcpy(gpu_bits.data(), dbits.ptr, gpu_bits.size(), cudaMemcpyDeviceToHost));
    expect(cpu_bits == gpu_bits, "bitops extract eb=" + std::to_string(eb));
  }
}

// ---- Quantization kernels (quantize_cpu.cpp / quantize_cuda.cu): the sweep's dequantization, and
// quantization-aware training's fake quantization, range reductions and gradient copies.

// Host data with a device copy.
template <typename T>
struct Mirrored {
  std::vector<T> host;
  DeviceBuffer device;
  explicit Mirrored(std::vector<T> values) : host(std::move(values)), device(host.size() * sizeof(T)) {
    CUDA_OK(cudaMemcpy(device.ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  T* d() const { return static_cast<T*>(device.ptr); }
  std::vector<T> back() const {
    std::vector<T> v(host.size());
    CUDA_OK(cudaMemcpy(v.data(), device.ptr, v.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Weights in [-scale, scale] with a few exact zeros of both signs.
std::vector<float> random_weights(int64_t n, float scale, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> w(n);
  for (int64_t i = 0; i < n; ++i) w[i] = i % 97 == 5 ? (i % 2 ? -0.0f : 0.0f) : u(rng);
  return w;
}

std::vector<QuantFormat> all_formats() {
  std::vector<QuantFormat> formats;
  for (int bits : {2, 4, 8, 12, 16}) {
    for (int flags = 0; flags < 8; ++flags) {
      QuantFormat f;
      f.bits = bits;
      f.is_signed = flags & 1;
      f.asymmetric = flags & 2;
      f.round = flags & 4;
      f.step_eps = f.asymmetric ? 0.001f : 0.0f;
      formats.push_back(f);
    }
  }
  return formats;
}

void check_quantize_dequantize() {
  const std::vector<QuantFormat> formats = all_formats();
  // One task per format, each with 1 or 5 channels and its own range per channel, in one call each
  // way (several launches: one per format family and 32 tasks).
  std::deque<Mirrored<float>> weights, dequantized;  // (deques: buffers are never moved)
  std::deque<Mirrored<QuantRange>> ranges;
  std::deque<Mirrored<uint8_t>> codes;
  std::vector<QuantizeTask> cpu_q, gpu_q;
  std::vector<DequantizeTask> cpu_dq, gpu_dq;
  for (size_t k = 0; k < formats.size(); ++k) {
    const QuantFormat& f = formats[k];
    const int64_t channels = k % 2 ? 5 : 1, n = channels * sized(20011 + 2 * k);
    weights.emplace_back(random_weights(n, 0.25f, 40 + k));
    std::vector<QuantRange> r(channels);
    for (int64_t c = 0; c < channels; ++c) {
      const float q = 0.05f + 0.04f * c;  // (clipped: weights beyond it saturate)
      r[c] = f.asymmetric ? QuantRange{-q * 0.6f, q} : QuantRange{-q, q};
    }
    ranges.emplace_back(r);
    const int eb = code_container_bytes(f.bits);
    codes.emplace_back(random_bytes(n * eb, 70 + k));  // (dequantized before being overwritten: any bits)
    dequantized.emplace_back(std::vector<float>(n, 0.0f));
    DequantizeTask dq{codes[k].host.data(), n, channels, ranges[k].host.data(), f, dequantized[k].host.data()};
    cpu_dq.push_back(dq);
    dq.codes = codes[k].d(), dq.ranges = ranges[k].d(), dq.out = dequantized[k].d();
    gpu_dq.push_back(dq);
  }
  dequantize_many_cpu(cpu_dq.data(), cpu_dq.size());
  dequantize_many_cuda(gpu_dq.data(), gpu_dq.size(), nullptr);
  for (size_t k = 0; k < formats.size(); ++k) {
    const QuantFormat& f = formats[k];
    const std::string label = "bits=" + std::to_string(f.bits) + " signed=" + std::to_string(f.is_signed) +
                              " asym=" + std::to_string(f.asymmetric) + " round=" + std::to_string(f.round);
    expect(same_bits(dequantized[k].host, dequantized[k].back()), "dequantize_many " + label);
    QuantizeTask q{weights[k].host.data(), static_cast<int64_t>(weights[k].host.size()), cpu_dq[k].channels,
                   ranges[k].host.data(), f, codes[k].host.data()};
    cpu_q.push_back(q);
    q.w = weights[k].d(), q.ranges = ranges[k].d(), q.codes = codes[k].d();
    gpu_q.push_back(q);
  }
  quantize_many_cpu(cpu_q.data(), cpu_q.size());
  quantize_many_cuda(gpu_q.data(), gpu_q.size(), nullptr);
  for (size_t k = 0; k < formats.size(); ++k) {
    expect(same_bits(codes[k].host, codes[k].back()), "quantize_many format " + std::to_string(k));
    // The fused path without codes (one tensor at a time), out of place.
    const int64_t n = cpu_q[k].n, channels = cpu_q[k].channels;
    std::vector<float> cpu_out(n);
    quantize_dequantize_cpu(weights[k].host.data(), n, channels, ranges[k].host.data(), formats[k], cpu_out.data());
    Mirrored<float> gpu_out(std::vector<float>(n, 3.0f));
    quantize_dequantize_cuda(weights[k].d(), n, channels, ranges[k].d(), formats[k], gpu_out.d(), nullptr);
    expect(same_bits(cpu_out, gpu_out.back()), "quantize_dequantize format " + std::to_string(k));
  }
}

// The sweep's fused step (inject_dequantize_cuda) against the CPU's two (inject_bit_errors_cpu into a
// copy, then dequantize_many_cpu): every format, 1, 5 or 301 channels, random, stuck-at and unselected
// tensors, codes at odd offsets, one tensor in place and one empty, in two launches.
void check_inject_dequantize() {
  const std::vector<QuantFormat> formats = all_formats();
  std::deque<Mirrored<uint8_t>> cleans, outs;
  std::deque<Mirrored<float>> weights;
  std::deque<Mirrored<QuantRange>> ranges;
  std::vector<InjectDequantizeTask> cpu, gpu;
  for (size_t k = 0; k <= formats.size(); ++k) {
    InjectDequantizeTask task;
    if (k == formats.size()) {  // empty: no pointers, no channels
      task.channels = 0;
      cpu.push_back(task);
      gpu.push_back(task);
      continue;
    }
    const QuantFormat& f = formats[k];
    const int eb = code_container_bytes(f.bits);
    // 1 channel, 5 channels spanning several chunks each, or 301 channels of 7 elements (several
    // channels to a chunk, as per-channel ranges of a 3x3 convolution's weights would be).
    const int64_t channels = k % 4 == 3 ? 301 : (k % 2 ? 5 : 1);
    const int64_t n = channels * (k % 4 == 3 ? 7 : sized(2011 + 2 * k));
    const int64_t offset = k % 3 == 1 ? 1 : 0;  // an element before the tensor: unaligned copies
    std::vector<uint8_t> codes = random_codes(n + offset, eb, f.bits, 900 + k);
    cleans.emplace_back(codes);
    outs.emplace_back(std::vector<uint8_t>(codes.size(), 0xA5));
    std::vector<QuantRange> r(channels);
    for (int64_t c = 0; c < channels; ++c) {
      const float q = 0.05f + 0.04f * c;
      r[c] = f.asymmetric ? QuantRange{-q * 0.6f, q} : QuantRange{-q, q};
    }
    ranges.emplace_back(r);
    weights.emplace_back(std::vector<float>(n, 7.0f));
    task.inject.numel = n;
    task.inject.param_index = static_cast<int64_t>(k);
    task.inject.elem_bytes = eb;
    switch (k % 4) {
      case 0: task.inject.params = make_bit_error_params(0, f.bits, 0.01, 0.01); break;
      case 1: task.inject.params = make_bit_error_params(0, f.bits, 0.02, 0.0); break;  // stuck at 1
      case 2: task.inject.params = make_bit_error_params(f.bits - 1, 1, 0.05, 0.05); break;  // MSB only
      default: break;  // unselected: copied and dequantized clean
    }
    task.channels = channels;
    task.format = f;
    const bool in_place = k == 8;
    task.inject.clean = cleans[k].host.data() + offset * eb;
    task.inject.out = in_place ? cleans[k].host.data() + offset * eb : outs[k].host.data() + offset * eb;
    task.ranges = ranges[k].host.data();
    task.weights = weights[k].host.data();
    cpu.push_back(task);
    task.inject.clean = cleans[k].d() + offset * eb;
    task.inject.out = in_place ? cleans[k].d() + offset * eb : outs[k].d() + offset * eb;
    task.ranges = ranges[k].d();
    task.weights = weights[k].d();
    gpu.push_back(task);
  }
  std::vector<InjectTask> injects;
  std::vector<DequantizeTask> dequantizes;
  for (const InjectDequantizeTask& t : cpu) {
    injects.push_back(t.inject);
    if (t.inject.numel > 0) {
      dequantizes.push_back({t.inject.out, t.inject.numel, t.channels, t.ranges, t.format, t.weights});
    }
  }
  const int64_t cpu_count = inject_bit_errors_cpu(injects.data(), injects.size(), 77);
  dequantize_many_cpu(dequantizes.data(), dequantizes.size());
  DeviceBuffer d_count(8);
  CUDA_OK(cudaMemset(d_count.ptr, 0, 8));
  inject_dequantize_cuda(gpu.data(), gpu.size(), 77, static_cast<unsigned long long*>(d_count.ptr), nullptr);
  unsigned long long gpu_count = 0;
  CUDA_OK(cudaMemcpy(&gpu_count, d_count.ptr, 8, cudaMemcpyDeviceToHost));
  expect(cpu_count == static_cast<int64_t>(gpu_count) && cpu_count > 0,
         "inject_dequantize bits changed: CPU " + std::to_string(cpu_count) + ", CUDA " + std::to_string(gpu_count));
  for (size_t k = 0; k < formats.size(); ++k) {
    const std::string label = "inject_dequantize format " + std::to_string(k) + " (bits=" +
                              std::to_string(formats[k].bits) + ")";
    expect(same_bits(cleans[k].host, cleans[k].back()) && same_bits(outs[k].host, outs[k].back()), label + " codes");
    expect(same_bits(weights[k].host, weights[k].back()), label + " weights");
  }
  // A misaligned float pointer is refused on the host, before a launch could fault on the device.
  InjectDequantizeTask odd = gpu.front();
  odd.weights = reinterpret_cast<float*>(reinterpret_cast<char*>(odd.weights) + 1);
  bool refused = false;
  try {
    inject_dequantize_cuda(&odd, 1, 77, nullptr, nullptr);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  expect(refused, "inject_dequantize refuses misaligned weights");
}

void check_fake_quantize() {
  // QAT's step: ranges from each tensor's min and max by its rule, master copies, fake quantization
  // (in place for some tensors), 40 tensors of mixed formats and rules, several to a launch.
  const std::vector<QuantFormat> formats = all_formats();
  const int count = 40;
  std::deque<Mirrored<float>> w, master, out;
  std::vector<FakeQuantizeTask> cpu, gpu;
  int64_t total_channels = 0;
  for (int k = 0; k < count; ++k) {
    const QuantFormat f = formats[(7 * (k / 6)) % formats.size()];  // (runs of 6: batches of several tasks)
    const int64_t channels = k % 3 == 0 ? 4 : 1, n = k == 9 ? 0 : channels * sized(3001 + 101 * k);
    RangeRule rule;
    rule.kind = f.asymmetric ? RangeRule::kAsymmetric : (k % 5 == 0 ? RangeRule::kGlobal : RangeRule::kSymmetric);
    rule.clip = k % 2 ? 0.1f : 0.0f;
    rule.global_q = rule.clip > 0 ? 0.1f : 1.0f;
    w.emplace_back(random_weights(n, 0.2f + 0.01f * k, 300 + k));
    master.emplace_back(std::vector<float>(n, 7.0f));
    out.emplace_back(std::vector<float>(n, 7.0f));
    const bool in_place = k % 4 == 1;
    FakeQuantizeTask t{w[k].host.data(), k % 3 == 2 ? nullptr : master[k].host.data(),
                       in_place ? w[k].host.data() : out[k].host.data(), n, channels, rule, f};
    cpu.push_back(t);
    t.w = w[k].d(), t.master = k % 3 == 2 ? nullptr : master[k].d(), t.out = in_place ? w[k].d() : out[k].d();
    gpu.push_back(t);
    total_channels += channels;
  }
  std::vector<QuantRange> cpu_ranges(total_channels);
  const int64_t bad = fake_quantize_many_cpu(cpu.data(), cpu.size(), cpu_ranges.data());
  expect(bad == -1, "fake_quantize_many_cpu found no non-finite weight");
  Mirrored<QuantRange> gpu_ranges(std::vector<QuantRange>(total_channels, QuantRange{9.0f, 9.0f}));
  fake_quantize_many_cuda(gpu.data(), gpu.size(), gpu_ranges.d(), nullptr);
  expect(same_bits(cpu_ranges, gpu_ranges.back()), "fake_quantize_many ranges");
  for (int k = 0; k < count; ++k) {
    const bool in_place = k % 4 == 1;
    expect(same_bits(in_place ? w[k].host : out[k].host, in_place ? w[k].back() : out[k].back()),
           "fake_quantize_many out, tensor " + std::to_string(k));
    if (cpu[k].master != nullptr) {
      expect(same_bits(master[k].host, master[k].back()), "fake_quantize_many master, tensor " + std::to_string(k));
    }
  }
  // The per-tensor range reduction gives the same ranges (each tensor on its own).
  int64_t first = 0;
  for (int k = 0; k < count; ++k) {
    const int64_t channels = cpu[k].channels;
    if (cpu[k].n > 0) {
      const Mirrored<float> fresh(random_weights(cpu[k].n, 0.2f + 0.01f * k, 300 + k));
      Mirrored<QuantRange> r{std::vector<QuantRange>(channels)};
      compute_ranges_cuda(fresh.d(), cpu[k].n, channels, cpu[k].rule, r.d(), nullptr);
      const std::vector<QuantRange> expected(cpu_ranges.begin() + first, cpu_ranges.begin() + first + channels);
      expect(same_bits(expected, r.back()), "compute_ranges tensor " + std::to_string(k));
    }
    first += channels;
  }
}

// A channel holding an infinity or a NaN gets the range {NaN, NaN} on the device (the host throws);
// the other channels keep theirs.
void check_nonfinite_ranges() {
  std::vector<float> w = random_weights(4 * 3001, 0.2f, 77);
  w[3001 + 17] = std::numeric_limits<float>::infinity();
  w[3 * 3001 + 5] = std::nanf("");
  const Mirrored<float> dw(w);
  Mirrored<QuantRange> ranges{std::vector<QuantRange>(4)};
  RangeRule rule;
  rule.kind = RangeRule::kAsymmetric;
  compute_ranges_cuda(dw.d(), static_cast<int64_t>(w.size()), 4, rule, ranges.d(), nullptr);
  const std::vector<QuantRange> got = ranges.back();
  for (int c = 0; c < 4; ++c) {
    const bool broken = c == 1 || c == 3;
    float lo, hi;
    minmax_cpu(w.data() + c * 3001, 3001, 1, &lo, &hi);
    const QuantRange expected = range_of_channel(lo, hi, rule);
    const bool ok = broken ? std::isnan(got[c].lo) && std::isnan(got[c].hi)
                           : same_bits(std::vector<QuantRange>{expected}, std::vector<QuantRange>{got[c]});
    expect(ok, "compute_ranges channel " + std::to_string(c) + (broken ? " (non-finite: NaN range)" : ""));
  }
}

void check_copy_clamped() {
  // Gradient copies: clamping (RandBET's ±0.05), +0 for -0, averaging, NaN kept; 90 tensors (two launches).
  const int count = 90;
  std::deque<Mirrored<float>> src, dst, avg;
  std::vector<CopyClampTask> cpu, gpu;
  for (int k = 0; k < count; ++k) {
    const int64_t n = k == 3 ? 0 : sized(1001 + 37 * k);
    std::vector<float> values = random_weights(n, 0.1f, 900 + k);
    if (n > 10) values[10] = std::nanf("");
    src.emplace_back(values);
    dst.emplace_back(std::vector<float>(n, 5.0f));
    avg.emplace_back(random_weights(n, 0.1f, 1900 + k));
    const bool in_place = k % 7 == 0;
    CopyClampTask t{src[k].host.data(), in_place ? src[k].host.data() : dst[k].host.data(), n,
                    k % 2 ? 0.05f : 0.0f, k % 3 == 0, k % 4 == 0 ? avg[k].host.data() : nullptr};
    cpu.push_back(t);
    t.src = src[k].d(), t.dst = in_place ? src[k].d() : dst[k].d(), t.average_with = k % 4 == 0 ? avg[k].d() : nullptr;
    gpu.push_back(t);
  }
  copy_clamped_many_cpu(cpu.data(), cpu.size());
  copy_clamped_many_cuda(gpu.data(), gpu.size(), nullptr);
  for (int k = 0; k < count; ++k) {
    const bool in_place = k % 7 == 0;
    expect(same_bits(in_place ? src[k].host : dst[k].host, in_place ? src[k].back() : dst[k].back()),
           "copy_clamped_many tensor " + std::to_string(k));
  }
}

// ---- Fused GroupNorm + ReLU (group_norm_relu_cpu.cpp / _cuda.cu): equal to rounding, not bit for bit
// (the CPU accumulates in double, CUDA in float; NOTE [Fused GroupNorm + ReLU]), as at::allclose with
// 1e-5 in the Torch test.
void check_group_norm_relu() {
  struct Case {
    int64_t batch, channels, spatial, groups;
    float offset;  // added to every input (1000: the mean far from the spread)
    bool input_bias, with_nan;
  };
  // (8 to 256 threads per group; partial last blocks, whose idle threads still join the reductions)
  const Case cases[] = {
      {6, 64, 1, 32, 0.0f, false, true},      // [N, C] of a linear layer: 2 elements per group, a NaN
      {3, 6, 20, 3, 0.0f, true, false},       // 40 elements: 16 threads, 9 groups in a block of 16
      {3, 64, 16, 32, 0.0f, true, false},     // 32 elements per group
      {3, 10, 100, 5, 0.0f, false, false},    // 200: 64 threads (two warps), 15 groups in blocks of 4
      {2, 96, 25, 8, 1000.0f, false, false},  // 300, far from zero
      {2, 64, 64, 32, 0.0f, true, true},      // 128, one group with a NaN
      {1, 64, 1024, 32, 0.0f, false, false},  // 2048: a whole block per group
      {1, 8, 5000, 1, 0.5f, true, false},     // 40,000: beyond the shared-memory cache
  };
  int k = 0;
  for (const Case& c : cases) {
    GroupNormShape shape;
    shape.batch = c.batch, shape.channels = c.channels, shape.spatial = c.spatial, shape.groups = c.groups;
    std::vector<float> x = random_weights(shape.numel(), 2.0f, 500 + k);
    for (float& v : x) v += c.offset;
    if (c.with_nan) x[shape.group_size() * 3 + 1] = std::nanf("");
    const Mirrored<float> dx(x), scale(random_weights(c.channels, 1.0f, 600 + k)),
        bias(random_weights(c.channels, 0.5f, 700 + k)), in_bias(random_weights(c.channels, 0.3f, 800 + k));
    std::vector<float> y(x.size(), -1.0f);
    group_norm_relu_cpu(x.data(), shape, scale.host.data(), bias.host.data(),
                        c.input_bias ? in_bias.host.data() : nullptr, 1e-5, y.data());
    Mirrored<float> dy(std::vector<float>(x.size(), -1.0f));
    group_norm_relu_cuda(dx.d(), shape, scale.d(), bias.d(), c.input_bias ? in_bias.d() : nullptr, 1e-5, dy.d(),
                         nullptr);
    const std::vector<float> back = dy.back();
    int64_t far = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const bool both_nan = std::isnan(y[i]) && std::isnan(back[i]);
      if (!both_nan && !(std::fabs(back[i] - y[i]) <= 1e-5f + 1e-5f * std::fabs(y[i]))) ++far;
    }
    expect(far == 0, "group_norm_relu case " + std::to_string(k) + ": " + std::to_string(far) + " of " +
                         std::to_string(y.size()) + " outputs beyond 1e-5");
    ++k;
  }
}

// ---- Batch assembly (augment_cpu.cpp / augment_cuda.cu): bit-identical, with and without augmentation.
void check_make_batch() {
  const int channels = 3, height = 32, width = 32;
  const int64_t num_images = 40;
  // Half the images in [40, 200), so that AutoContrast and Equalize have histograms to work on.
  std::vector<uint8_t> pixels = random_bytes(num_images * channels * height * width, 4242);
  for (size_t i = pixels.size() / 2; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(40 + pixels[i] % 160);
  const Mirrored<uint8_t> images(pixels);
  std::vector<int64_t> indices;
  for (int64_t b = 0; b < num_images; ++b) indices.push_back((b * 7 + 3) % num_images);
  const Mirrored<int64_t> d_indices(indices);
  const float mean[3] = {0.49f, 0.48f, 0.45f}, std_dev[3] = {0.25f, 0.24f, 0.26f};
  AugmentSpec plain, crop_flip_cutout, autoaugment;
  crop_flip_cutout.random_crop = true, crop_flip_cutout.horizontal_flip = true, crop_flip_cutout.cutout = 16;
  crop_flip_cutout.fill[0] = 125, crop_flip_cutout.fill[1] = 123, crop_flip_cutout.fill[2] = 114;
  autoaugment = crop_flip_cutout;
  autoaugment.autoaugment = true;
  const AugmentSpec* specs[] = {nullptr, &plain, &crop_flip_cutout, &autoaugment};
  const char* names[] = {"none", "no options", "crop+flip+cutout", "autoaugment"};
  const int64_t batch = static_cast<int64_t>(indices.size());
  for (int k = 0; k < 4; ++k) {
    for (uint64_t epoch : {0ull, 5ull}) {
      std::vector<float> cpu(batch * channels * height * width, -1.0f);
      make_batch_cpu(images.host.data(), num_images, channels, height, width, indices.data(), batch, mean, std_dev,
                     specs[k], 17, epoch, cpu.data());
      Mirrored<float> gpu(std::vector<float>(cpu.size(), -1.0f));
      make_batch_cuda(images.d(), num_images, channels, height, width, d_indices.d(), batch, mean, std_dev, specs[k], 17,
                      epoch, gpu.d(), nullptr);
      expect(same_bits(cpu, gpu.back()), std::string("make_batch ") + names[k] + " epoch " + std::to_string(epoch));
    }
  }
}

void time_injection() {
  const int64_t numel = 5498378;  // SimpleNet's parameter count, as 8-bit codes
  DeviceBuffer clean(numel), out(numel);
  CUDA_OK(cudaMemset(clean.ptr, 0x5A, numel));
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  auto time_ms = [&](auto&& body) {
    for (int i = 0; i < 3; ++i) body();
    CUDA_OK(cudaEventRecord(start));
    const int reps = 50;
    for (int i = 0; i < reps; ++i) body();
    CUDA_OK(cudaEventRecord(stop));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    return ms / reps;
  };
  const double copy_ms = time_ms([&] { CUDA_OK(cudaMemcpyAsync(out.ptr, clean.ptr, numel, cudaMemcpyDeviceToDevice)); });
  std::printf("TIMING cudaMemcpy D2D %lld bytes: %.4f ms (%.1f GB/s of codes)\n", (long long)numel, copy_ms,
              numel / copy_ms / 1e6);
  for (double p : {1e-4, 1e-3, 1e-2, 1e-1}) {
    InjectTask task;
    task.clean = clean.ptr;
    task.out = out.ptr;
    task.numel = numel;
    task.elem_bytes = 1;
    task.params = make_bit_error_params(0, 8, p, p);
    uint64_t seed = 0;
    const double ms = time_ms([&] { inject_bit_errors_cuda(&task, 1, ++seed, nullptr, nullptr); });
    std::printf("TIMING inject p=%g: %.4f ms (%.1f GB/s of codes, %.0f%% of copy)\n", p, ms, numel / ms / 1e6,
                100.0 * copy_ms / ms);
  }
  // The sweep's fused step: the same, with every code dequantized into float weights (one tensor,
  // per-tensor range, u8 asymmetric, the clipped models' format).
  DeviceBuffer weights(numel * sizeof(float));
  const QuantRange range{-0.1f, 0.1f};
  Mirrored<QuantRange> d_range(std::vector<QuantRange>{range});
  for (double p : {0.0, 1e-4, 1e-3, 1e-2, 1e-1}) {
    InjectDequantizeTask task;
    task.inject.clean = clean.ptr;
    task.inject.out = out.ptr;
    task.inject.numel = numel;
    task.inject.elem_bytes = 1;
    task.inject.params = make_bit_error_params(0, 8, p, p);
    task.weights = static_cast<float*>(weights.ptr);
    task.ranges = d_range.d();
    task.format.bits = 8;
    task.format.asymmetric = true;
    task.format.round = true;
    uint64_t seed = 0;
    const double ms = time_ms([&] { inject_dequantize_cuda(&task, 1, ++seed, nullptr, nullptr); });
    // (it moves 1 byte of code in and 4 of weight out per element where the copy moves 1 and 1)
    std::printf("TIMING inject+dequantize p=%g: %.4f ms (%.1f GB/s of codes, %.0f%% of a copy of the codes alone)\n",
                p, ms, numel / ms / 1e6, 100.0 * copy_ms / ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool bits_only = false;  // --bits-only: the bit layer's kernels alone (what the sanitizer stage covers)
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--small") == 0) {
      small_sizes = true;
    } else if (std::strcmp(argv[i], "--bits-only") == 0) {
      bits_only = true;
    } else {
      std::printf("usage: %s [--small] [--bits-only]\n", argv[0]);
      return 2;
    }
  }
  int device = 0;
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDevice(&device));
  CUDA_OK(cudaGetDeviceProperties(&prop, device));
  std::printf("device: %s\n", prop.name);
  check_det_log();
  check_injection_identity();
  check_misaligned_codes_are_refused();
  check_multi_task();
  check_apply();
  check_bitops();
  check_inject_dequantize();
  if (!bits_only) {
    check_quantize_dequantize();
    check_fake_quantize();
    check_nonfinite_ranges();
    check_copy_clamped();
    check_group_norm_relu();
    check_make_batch();
  }
  std::printf("%d checks, %d mismatches\n", checks, failures);
  if (!small_sizes) time_injection();
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
