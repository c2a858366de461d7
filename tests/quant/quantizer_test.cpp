// Torch-level tests of bitrobust/quant/quantizer.h: ranges per source, codes, dequantization, bad
// input, agreement with the reference's Torch formulation, and (with CUDA) CPU/CUDA bit identity.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bitrobust/bits/bit_errors.h"
#include "bitrobust/common/error.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/config.h"
#include "bitrobust/quant/quantizer.h"
#include "test_util.h"

namespace bitrobust::quant {
namespace {

using test_util::contains;
using test_util::error_of;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed, float scale = 0.1f) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kFloat) * scale;
}

/// All schemes over bits, integer types, symmetry, sources, rounding and clipping.
std::vector<QuantScheme> all_schemes(std::vector<int> bit_widths) {
  std::vector<QuantScheme> out;
  for (const int bits : bit_widths) {
    for (const bool is_signed : {false, true}) {
      for (const bool asymmetric : {false, true}) {
        for (const RangeSource source : {RangeSource::Global, RangeSource::Tensor, RangeSource::Channel}) {
          for (const bool round : {false, true}) {
            for (const float clip : {0.0f, 0.05f}) {
              QuantScheme s;
              s.bits = bits;
              s.is_signed = is_signed;
              s.asymmetric = asymmetric;
              s.source = source;
              s.round = round;
              s.clip = clip;
              s.global_q = 0.3f;
              out.push_back(s);
            }
          }
        }
      }
    }
  }
  return out;
}

/// Tensors of many shapes and schemes (an empty one among them), as a model's weights would be, on
/// `device`: the codes to dequantize in one call, with bit errors (any container value).
/// With one_scheme, every tensor has the same scheme (one kernel, so batches fill up).
std::vector<QuantizedTensor> model_like_codes(const at::Device& device, bool one_scheme = false) {
  const std::vector<QuantScheme> schemes = all_schemes({4, 8, 12});
  std::vector<QuantizedTensor> out;
  for (int64_t i = 0; i < 70; ++i) {
    const int64_t rows = 1 + i % 5, cols = (i % 7 == 3) ? 0 : 1 + 37 * (i % 11) + (i == 5 ? 300000 : 0);
    const QuantScheme& s = one_scheme ? schemes[17] : schemes[static_cast<size_t>(i * 37) % schemes.size()];
    QuantizedTensor q = quantize(randn({rows, cols}, 100 + static_cast<uint64_t>(i)).to(device), s, "w");
    const int64_t top = int64_t{1} << (s.bits <= 8 ? 8 : 16);
    at::Generator gen = at::detail::createCPUGenerator(200 + static_cast<uint64_t>(i));
    q.codes = at::randint(0, top, q.codes.sizes(), gen, at::kInt).to(q.codes.scalar_type()).to(device);
    out.push_back(q);
  }
  return out;
}

/// Float tensors of a model's shapes (one empty; with `big`, one above the kernels' parallel threshold).
std::vector<at::Tensor> model_like_weights(bool big = false) {
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < 40; ++i) {
    const int64_t rows = 1 + i % 5, cols = (i % 7 == 3) ? 0 : 1 + 37 * (i % 11) + (i == 5 && big ? 300000 : 0);
    out.push_back(randn({rows, cols}, 300 + static_cast<uint64_t>(i), 0.05f * static_cast<float>(1 + i % 4)));
  }
  // Channels longer than one block of the min/max pass (4096 elements), and no channels at all.
  out.push_back(randn({3, 5000}, 350, 0.2f));
  out.push_back(randn({2, 8193}, 351, 0.3f));
  out.push_back(at::empty({0, 4}));
  return out;
}

/// Equal bit for bit (at::equal takes -0 for +0).
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes().equals(b.sizes()) && at::equal(a.contiguous().view(at::kInt), b.contiguous().view(at::kInt));
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ts, const at::Device& device) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts) out.push_back(t.to(device).clone());
  return out;
}

TEST(Quantizer, RangesPerSource) {
  const at::Tensor w = at::tensor({0.2f, -0.5f, 0.1f, 0.3f, 0.05f, -0.01f}).reshape({2, 3});
  auto rows = [](const at::Tensor& r) { return std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel()); };
  const float q_tensor = static_cast<float>(0.5 + 0.001);
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-sym-global0.7-trunc"), "w")), (std::vector<float>{-0.7f, 0.7f}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-sym-global0.7-trunc-clip0.25"), "w")),
            (std::vector<float>{-0.25f, 0.25f}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-sym-tensor-trunc"), "w")), (std::vector<float>{-q_tensor, q_tensor}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-sym-tensor-trunc-clip0.25"), "w")),
            (std::vector<float>{-0.25f, 0.25f}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-sym-tensor-trunc-clip0.9"), "w")),
            (std::vector<float>{-q_tensor, q_tensor}));
  const float q0 = static_cast<float>(0.5 + 0.001), q1 = static_cast<float>(static_cast<double>(0.3f) + 0.001);
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("s8-sym-channel-round"), "w")), (std::vector<float>{-q0, q0, -q1, q1}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-asym-tensor-round"), "w")), (std::vector<float>{-0.5f, 0.3f}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-asym-tensor-round-clip0.25"), "w")),
            (std::vector<float>{-0.25f, 0.25f}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-asym-channel-round"), "w")),
            (std::vector<float>{-0.5f, 0.2f, -0.01f, 0.3f}));
  // Every weight above w_max: min and max both clamp to w_max (lo <= hi always).
  EXPECT_EQ(rows(compute_ranges(at::full({4}, 2.0f), QuantScheme::parse("u8-asym-tensor-round-clip0.1"), "w")),
            (std::vector<float>{0.1f, 0.1f}));
  EXPECT_EQ(rows(compute_ranges(w, QuantScheme::parse("u8-asym-global0.4-round"), "w")), (std::vector<float>{-0.4f, 0.4f}));
  // A 0-dim tensor has one channel.
  EXPECT_EQ(compute_ranges(at::scalar_tensor(0.5f), QuantScheme::parse("u8-sym-channel-round"), "s").size(0), 1);
  // A vector (a bias) has one range, the tensor's, under `channel` too.
  const at::Tensor bias = at::tensor({0.3f, -0.2f, 0.1f});
  for (const char* sign : {"u", "s"}) {
    for (const char* range : {"sym", "asym"}) {
      const std::string channel = std::string(sign) + "8-" + range + "-channel-round";
      const std::string tensor = std::string(sign) + "8-" + range + "-tensor-round";
      EXPECT_EQ(rows(compute_ranges(bias, QuantScheme::parse(channel), "b")),
                rows(compute_ranges(bias, QuantScheme::parse(tensor), "b")))
          << channel;
    }
  }
}

// Under per-channel ranges bit errors reach biases: with a range per element (lo = hi = w) every code
// would dequantize to w, so no bit flip could change them.
TEST(Quantizer, BitErrorsChangeVectorsUnderChannelRanges) {
  const at::Tensor bias = at::tensor({0.3f, -0.2f, 0.1f, 0.05f});
  const QuantizedTensor q = quantize(bias, QuantScheme::parse("u8-asym-channel-round"), "b");
  ASSERT_EQ(q.channels, 1);
  QuantizedTensor flipped = q;
  flipped.codes = q.codes.bitwise_xor(1 << 7);  // every element's most significant bit
  const at::Tensor clean = dequantize(q), perturbed = dequantize(flipped);
  for (int64_t i = 0; i < bias.numel(); ++i) {
    EXPECT_GT(std::abs(perturbed[i].item<float>() - clean[i].item<float>()), 0.2f) << i;  // about half the range
  }
}

TEST(Quantizer, CodesDequantizeAndFakeQuantizeAgree) {
  const at::Tensor w = randn({6, 3, 5, 5}, 11);
  for (const QuantScheme& s : all_schemes({2, 3, 8, 9, 16})) {
    const QuantizedTensor q = quantize(w, s, "conv.weight");
    ASSERT_EQ(q.codes.sizes(), w.sizes());
    ASSERT_EQ(q.codes.scalar_type(), s.bits <= 8 ? at::kByte : at::kShort) << s.to_string();
    ASSERT_EQ(q.channels, s.source == RangeSource::Channel ? 6 : 1);
    ASSERT_EQ(q.scheme, s);
    const at::Tensor deq = dequantize(q);
    const at::Tensor fused = fake_quantize(w, s, "conv.weight");
    ASSERT_TRUE(at::equal(deq, fused)) << s.to_string();
    at::Tensor in_place = w.clone();
    fake_quantize_(in_place, s, "conv.weight");
    ASSERT_TRUE(at::equal(in_place, fused)) << s.to_string();
    // Codes hold only m bits.
    const at::Tensor bits = q.codes.to(at::kInt).bitwise_and(0xFFFF);
    ASSERT_EQ(bits.max().item<int>() >> s.bits, 0) << s.to_string();
  }
}

TEST(Quantizer, PerChannelEqualsPerTensorOnEachSlice) {
  at::Tensor w = randn({4, 50}, 3);
  w[2].mul_(20.0f);  // very different scales per output channel
  for (const bool asymmetric : {false, true}) {
    QuantScheme channel = QuantScheme::parse(asymmetric ? "u4-asym-channel-round" : "s4-sym-channel-trunc");
    QuantScheme tensor = channel;
    tensor.source = RangeSource::Tensor;
    const at::Tensor all = fake_quantize(w, channel, "w");
    const QuantizedTensor q = quantize(w, channel, "w");
    for (int64_t c = 0; c < 4; ++c) {
      const at::Tensor slice = w[c].contiguous();
      ASSERT_TRUE(at::equal(all[c], fake_quantize(slice, tensor, "slice")));
      ASSERT_TRUE(at::equal(q.codes[c], quantize(slice, tensor, "slice").codes));
    }
  }
}

TEST(Quantizer, NonContiguousInputsAndOutputs) {
  const at::Tensor base = randn({8, 5}, 5);
  const at::Tensor w = base.t();  // [5, 8], not contiguous
  ASSERT_FALSE(w.is_contiguous());
  const QuantScheme s = QuantScheme::parse("u8-sym-channel-round");
  const at::Tensor expected = fake_quantize(w.contiguous(), s, "w");
  EXPECT_TRUE(at::equal(fake_quantize(w, s, "w"), expected));
  EXPECT_TRUE(at::equal(quantize(w, s, "w").codes, quantize(w.contiguous(), s, "w").codes));
  at::Tensor view = base.clone().t();
  fake_quantize_(view, s, "w");
  EXPECT_TRUE(at::equal(view, expected));
}

TEST(Quantizer, RoundTripErrorWithinHalfAStep) {
  for (int bits = 2; bits <= 16; ++bits) {
    at::Tensor w = randn({10, 100}, 100 + bits);
    w[3].mul_(30.0f);
    for (const char* text : {"u%d-asym-tensor-round", "s%d-sym-tensor-round", "u%d-sym-channel-round",
                             "s%d-asym-channel-round"}) {
      char buffer[64];
      std::snprintf(buffer, sizeof buffer, text, bits);
      const QuantScheme s = QuantScheme::parse(buffer);
      const at::Tensor r = compute_ranges(w, s, "w");
      const at::Tensor error = (fake_quantize(w, s, "w") - w).abs().reshape({r.size(0), -1}).amax(1);
      const double levels = (1 << (bits - 1)) - 1;
      for (int64_t c = 0; c < r.size(0); ++c) {
        const double lo = r[c][0].item<float>(), hi = r[c][1].item<float>();
        const double step = s.asymmetric ? (1.001 / levels) * (hi - lo) / 2 : hi / levels;
        EXPECT_LE(error[c].item<float>(), step / 2 + 1e-6 * std::max(-lo, hi)) << buffer << " channel " << c;
      }
    }
  }
}

TEST(Quantizer, ConstantAndEmptyTensors) {
  for (const QuantScheme& s : all_schemes({2, 8, 16})) {
    const at::Tensor zeros = at::zeros({10});
    EXPECT_TRUE(at::equal(fake_quantize(zeros, s, "bias"), zeros)) << s.to_string();
    if (s.asymmetric && s.source != RangeSource::Global && s.clip == 0.0f) {
      const at::Tensor c = at::full({3, 4}, -0.37f);
      const at::Tensor out = fake_quantize(c, s, "bias");
      EXPECT_TRUE(at::equal(out, c)) << s.to_string();
      EXPECT_TRUE(at::equal(dequantize(quantize(c, s, "bias")), c)) << s.to_string();
    }
    const at::Tensor empty = at::empty({0, 3});
    EXPECT_EQ(fake_quantize(empty, s, "empty").numel(), 0);
    EXPECT_EQ(dequantize(quantize(empty, s, "empty")).numel(), 0);
  }
}

TEST(Quantizer, BitErrorsDequantizeIntoTheRange) {
  // Flip random bits (inside and above the m low bits) as an error pattern would.
  const at::Tensor w = randn({64, 64}, 21);
  PhiloxStream rng(99, 1);
  for (const QuantScheme& s : all_schemes({2, 5, 8, 11, 16})) {
    QuantizedTensor q = quantize(w, s, "w");
    const at::Tensor clean = dequantize(q);
    const int container_bits = s.bits <= 8 ? 8 : 16;
    if (s.bits <= 8) {
      uint8_t* codes = q.codes.data_ptr<uint8_t>();
      for (int64_t i = 0; i < q.codes.numel(); ++i) codes[i] ^= static_cast<uint8_t>(1u << rng.below(container_bits));
    } else {
      auto* codes = reinterpret_cast<uint16_t*>(q.codes.data_ptr<int16_t>());
      for (int64_t i = 0; i < q.codes.numel(); ++i) codes[i] ^= static_cast<uint16_t>(1u << rng.below(container_bits));
    }
    const at::Tensor perturbed = dequantize(q);
    const at::Tensor ranges = q.ranges;
    for (int64_t c = 0; c < q.channels; ++c) {
      const at::Tensor values = q.channels == 1 ? perturbed : perturbed[c];
      ASSERT_GE(values.min().item<float>(), ranges[c][0].item<float>()) << s.to_string();
      ASSERT_LE(values.max().item<float>(), ranges[c][1].item<float>()) << s.to_string();
    }
    // Bits above m are ignored: masking them changes nothing.
    QuantizedTensor masked = q;
    masked.codes = q.codes.bitwise_and((1 << s.bits) - 1);
    ASSERT_TRUE(at::equal(dequantize(masked), perturbed)) << s.to_string();
    at::Tensor out = at::empty_like(perturbed);
    dequantize_into(q, out);
    ASSERT_TRUE(at::equal(out, perturbed));
    ASSERT_FALSE(at::equal(perturbed, clean)) << s.to_string();
  }
}

TEST(Quantizer, DequantizeManyEqualsOneTensorAtATime) {
  const std::vector<QuantizedTensor> qs = model_like_codes(at::kCPU);
  std::vector<at::Tensor> outs;
  for (const QuantizedTensor& q : qs) outs.push_back(at::full(q.codes.sizes(), -7.0f));
  dequantize_many_into(qs, outs);
  for (size_t i = 0; i < qs.size(); ++i) {
    ASSERT_TRUE(at::equal(outs[i], dequantize(qs[i]))) << i << " " << qs[i].scheme.to_string();
  }
  // Checked before anything is written: a wrong output anywhere leaves every output as it was.
  std::vector<at::Tensor> bad;
  for (const QuantizedTensor& q : qs) bad.push_back(at::full(q.codes.sizes(), -7.0f));
  bad.back() = at::empty({1});
  EXPECT_TRUE(contains(error_of([&] { dequantize_many_into(qs, bad); }), "dequantize: the output must be"));
  for (size_t i = 0; i + 1 < bad.size(); ++i) ASSERT_TRUE(at::equal(bad[i], at::full(qs[i].codes.sizes(), -7.0f)));
  std::vector<at::Tensor> too_few(outs.begin(), outs.end() - 1);
  EXPECT_TRUE(contains(error_of([&] { dequantize_many_into(qs, too_few); }), "70 code tensors but 69 outputs"));
}

TEST(Quantizer, FakeQuantizeManyEqualsOneTensorAtATime) {
  const std::vector<at::Tensor> weights = model_like_weights();
  std::vector<std::string> names;
  for (size_t i = 0; i < weights.size(); ++i) names.push_back("p" + std::to_string(i));
  for (const QuantScheme& s : all_schemes({4, 8})) {
    std::vector<at::Tensor> ws = clones(weights, at::kCPU), masters;
    at::Tensor ranges;
    fake_quantize_many_(ws, &masters, s, names, ranges);
    int64_t row = 0;
    for (size_t i = 0; i < ws.size(); ++i) {
      ASSERT_TRUE(same_bits(ws[i], fake_quantize(weights[i], s, "w"))) << s.to_string() << " " << i;
      ASSERT_TRUE(same_bits(masters[i], weights[i])) << i;
      const at::Tensor expected = compute_ranges(weights[i], s, "w");
      ASSERT_TRUE(at::equal(ranges.slice(0, row, row + expected.size(0)), expected)) << s.to_string() << " " << i;
      row += expected.size(0);
    }
    ASSERT_EQ(row, ranges.size(0));
  }
  // Without masters, large enough to run in parallel, and again into the same ranges buffer.
  const QuantScheme s = QuantScheme::preset("rquant", 8, 0.1f);
  const std::vector<at::Tensor> big = model_like_weights(true);
  std::vector<at::Tensor> ws = clones(big, at::kCPU);
  at::Tensor ranges;
  fake_quantize_many_(ws, nullptr, s, names, ranges);
  const void* buffer = ranges.data_ptr();
  fake_quantize_many_(ws, nullptr, s, names, ranges);
  EXPECT_EQ(ranges.data_ptr(), buffer);
  for (size_t i = 0; i < ws.size(); ++i) ASSERT_TRUE(at::equal(ws[i], fake_quantize(fake_quantize(big[i], s, "w"), s, "w")));
  // RandBET's codes: the ranges the fake quantization computed from the masters, then the codes
  // of the masters in one call, equal quantize(master) per tensor.
  std::vector<at::Tensor> masters;
  ws = clones(big, at::kCPU);
  fake_quantize_many_(ws, &masters, s, names, ranges);
  std::vector<at::Tensor> codes;
  quantize_many_into(masters, ranges, s, codes);
  for (size_t i = 0; i < masters.size(); ++i) {
    ASSERT_TRUE(at::equal(codes[i], quantize(big[i], s, "w").codes)) << i;
  }
  EXPECT_TRUE(contains(error_of([&] { quantize_many_into(masters, ranges.slice(0, 1), s, codes); }),
                       "quantize: the ranges of 43 tensors must be a contiguous float32"));
  // A NaN names its tensor.
  ws = clones(weights, at::kCPU);
  ws[6].view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(contains(error_of([&] { fake_quantize_many_(ws, nullptr, s, names, ranges); }),
                       "cannot quantize tensor 'p6': it holds NaN or infinite values"));
  std::vector<at::Tensor> strided = clones(weights, at::kCPU);
  strided[2] = at::randn({4, 6}).t();
  EXPECT_TRUE(contains(error_of([&] { fake_quantize_many_(strided, nullptr, s, names, ranges); }),
                       "tensor 'p2' is not contiguous"));
}

TEST(Quantizer, CopyClampedManyCopiesAndClipsLikeClamp) {
  const std::vector<at::Tensor> weights = model_like_weights(true);
  std::vector<at::Tensor> dsts;
  for (const at::Tensor& w : weights) dsts.push_back(at::full(w.sizes(), -7.0f));
  copy_clamped_many_(weights, dsts, 0.0f);
  for (size_t i = 0; i < weights.size(); ++i) ASSERT_TRUE(at::equal(dsts[i], weights[i]));
  std::vector<at::Tensor> in_place = clones(weights, at::kCPU);
  in_place[1].view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  in_place[1].view(-1)[1] = -0.0f;
  copy_clamped_many_(in_place, in_place, 0.08f);
  for (size_t i = 0; i < weights.size(); ++i) {
    at::Tensor expected = weights[i].clone();
    if (i == 1) {
      expected.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
      expected.view(-1)[1] = -0.0f;
    }
    expected.clamp_(-0.08f, 0.08f);
    ASSERT_TRUE(at::equal(in_place[i].isnan(), expected.isnan())) << i;
    ASSERT_TRUE(at::equal(in_place[i].nan_to_num(5.0f), expected.nan_to_num(5.0f))) << i;
  }
  EXPECT_TRUE(std::signbit(in_place[1].view(-1)[1].item<float>()));
  // RandBET's update: clamp, then the mean with another gradient, as clamp_, add_ and mul_(0.5).
  std::vector<at::Tensor> grads = clones(weights, at::kCPU), others;
  for (const at::Tensor& w : weights) others.push_back(w.flip(-1).contiguous() * 3.0f);
  copy_clamped_many_(grads, grads, 0.05f, &others);
  for (size_t i = 0; i < weights.size(); ++i) {
    ASSERT_TRUE(same_bits(grads[i], weights[i].clamp(-0.05f, 0.05f).add_(others[i]).mul_(0.5))) << i;
  }
  // With positive_zero, -0 reads as +0: what accumulating into a zeroed gradient gave, in both modes.
  std::vector<at::Tensor> signed_zeros = {at::tensor({-0.0f, 0.0f, -0.0f, 1.0f}), at::tensor({-0.0f, -3.0f})};
  std::vector<at::Tensor> minus_zeros = {at::full({4}, -0.0f), at::full({2}, -0.0f)};
  for (const bool average : {false, true}) {
    std::vector<at::Tensor> g = clones(signed_zeros, at::kCPU);
    copy_clamped_many_(g, g, 0.5f, average ? &minus_zeros : nullptr, /*positive_zero=*/true);
    for (size_t i = 0; i < g.size(); ++i) {
      at::Tensor expected = at::zeros_like(signed_zeros[i]).add_(signed_zeros[i]).clamp_(-0.5f, 0.5f);
      if (average) expected.add_(minus_zeros[i]).mul_(0.5);
      ASSERT_TRUE(same_bits(g[i], expected)) << average << " " << i;
    }
    EXPECT_FALSE(std::signbit(g[0][0].item<float>()));
  }
  std::vector<at::Tensor> kept = clones(signed_zeros, at::kCPU);
  copy_clamped_many_(kept, kept, 0.5f);
  EXPECT_TRUE(std::signbit(kept[0][0].item<float>()));
  const std::vector<at::Tensor> fewer(dsts.begin(), dsts.end() - 1);
  EXPECT_TRUE(contains(error_of([&] { copy_clamped_many_(weights, fewer, 0.0f); }), "43 sources but 42 destinations"));
}

TEST(Quantizer, QuantizeWithGivenRanges) {
  const at::Tensor w = randn({3, 10}, 8);
  const QuantScheme s = QuantScheme::parse("u8-asym-channel-round");
  const QuantizedTensor q = quantize(w, s, "w");
  // The ranges quantize computed give back its codes.
  EXPECT_TRUE(at::equal(quantize_with_ranges(w, q.ranges, s, "w").codes, q.codes));
  const QuantizedTensor again = quantize_with_ranges(w * 0.5, q.ranges, s, "w");
  EXPECT_TRUE(at::equal(again.ranges, q.ranges));
  EXPECT_FALSE(at::equal(again.codes, q.codes));
  // Row c is quantized with range row c (not another row's, nor lo and hi swapped): each row alone,
  // with its own range, gives the same codes; and halved weights inside the range keep their order.
  for (int64_t c = 0; c < 3; ++c) {
    const QuantizedTensor row =
        quantize_with_ranges(w.slice(0, c, c + 1) * 0.5, q.ranges.slice(0, c, c + 1).contiguous(), s, "w");
    EXPECT_TRUE(at::equal(row.codes[0], again.codes[c])) << "row " << c;
    const float lo = q.ranges[c][0].item<float>(), hi = q.ranges[c][1].item<float>();
    ASSERT_LT(lo, hi);
    const at::Tensor order = (w[c] * 0.5).argsort();
    const at::Tensor codes = again.codes[c].to(at::kLong).index_select(0, order);
    EXPECT_TRUE(at::all(codes.slice(0, 1).ge(codes.slice(0, 0, -1))).item<bool>()) << "row " << c;
  }
  EXPECT_TRUE(contains(error_of([&] { quantize_with_ranges(w, at::zeros({2, 2}), s, "layer.w"); }),
                       "quantize: ranges for tensor 'layer.w' must be float32 [3, 2]"));
}

TEST(Quantizer, NonFiniteWeightsAreRejectedNamingTheTensor) {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    at::Tensor w = randn({4, 70000}, 1);  // enough elements for the parallel kernels
    w[3][69999] = bad;
    for (const char* text : {"u8-sym-global1.0-trunc", "u8-asym-tensor-round", "s4-sym-channel-round-clip0.1"}) {
      const QuantScheme s = QuantScheme::parse(text);
      const std::string expected = "cannot quantize tensor 'features.3.weight': it holds NaN or infinite values";
      EXPECT_EQ(error_of([&] { quantize(w, s, "features.3.weight"); }), expected) << text;
      EXPECT_EQ(error_of([&] { fake_quantize(w, s, "features.3.weight"); }), expected) << text;
      at::Tensor copy = w.clone();
      EXPECT_EQ(error_of([&] { fake_quantize_(copy, s, "features.3.weight"); }), expected) << text;
      EXPECT_EQ(error_of([&] { compute_ranges(w, s, "features.3.weight"); }), expected) << text;
    }
    const QuantScheme s = QuantScheme::parse("u8-sym-tensor-round");
    const at::Tensor ranges = compute_ranges(at::ones({4, 70000}), s, "w");
    EXPECT_TRUE(contains(error_of([&] { quantize_with_ranges(w, ranges, s, "fc.bias"); }), "'fc.bias'"));
  }
}

TEST(Quantizer, BadTensorsAndOutputs) {
  const QuantScheme s = QuantScheme::parse("u8-sym-tensor-round");
  EXPECT_EQ(error_of([&] { quantize(at::zeros({3}, at::kDouble), s, "fc.weight"); }),
            "compute_ranges: tensor 'fc.weight' has dtype Double; only float32 tensors can be quantized");
  EXPECT_TRUE(contains(error_of([&] { quantize(at::Tensor(), s, "fc.weight"); }), "tensor 'fc.weight' is undefined"));
  QuantScheme bad = s;
  bad.bits = 17;
  EXPECT_EQ(error_of([&] { quantize(at::zeros({3}), bad, "w"); }), "quantization bits must be in 2..16, got 17");
  const QuantizedTensor q = quantize(at::zeros({3}), s, "w");
  at::Tensor wrong = at::empty({4});
  EXPECT_TRUE(contains(error_of([&] { dequantize_into(q, wrong); }), "dequantize: the output must be a contiguous float32 tensor of 3 elements"));
  at::Tensor wrong_type = at::empty({3}, at::kDouble);
  EXPECT_TRUE(contains(error_of([&] { dequantize_into(q, wrong_type); }), "dequantize: the output"));
  QuantizedTensor mismatched = q;
  mismatched.format.bits = 12;
  EXPECT_TRUE(contains(error_of([&] { dequantize(mismatched); }), "dequantize: 12-bit codes must be Short, got Byte"));
  at::Tensor out = at::empty({5});
  EXPECT_TRUE(contains(error_of([&] { fake_quantize_into(at::zeros({3}), out, s, "w"); }), "fake_quantize: the output for tensor 'w'"));
}

TEST(Quantizer, ClipWeights) {
  at::Tensor w = at::tensor({-0.5f, 0.05f, 0.2f});
  clip_weights_(w, QuantScheme::parse("u8-asym-tensor-round"));
  EXPECT_TRUE(at::equal(w, at::tensor({-0.5f, 0.05f, 0.2f})));
  clip_weights_(w, QuantScheme::parse("u8-asym-tensor-round-clip0.1"));
  EXPECT_TRUE(at::equal(w, at::tensor({-0.1f, 0.05f, 0.1f})));
}

// The reference's quantizers written with Torch operations, float32 as the reference runs them
// (common/quantization.py: AlternativeUnsignedFixedPointQuantization and the asymmetric unsigned
// rounded variant). Ours add 2^(m-1) after rounding instead of before (NOTE [Quantization
// formulas]); that moves a code by one only for values within float rounding of a boundary.
at::Tensor reference_unsigned(const at::Tensor& x, int bits, bool round, at::Tensor* codes_out) {
  const double delta = (1.0 + 0.001) / ((1 << (bits - 1)) - 1);
  at::Tensor t = x.clamp(-1.0, 1.0) / delta;
  t = t + (1 << (bits - 1));
  t = t.clamp_max((1 << bits) - 1);
  if (round) t = t.round();
  const at::Tensor codes = t.to(at::kByte);
  if (codes_out) *codes_out = codes;
  at::Tensor y = codes.to(at::kFloat).clamp(0, (1 << bits) - 1) - (1 << (bits - 1));
  return (y * delta).clamp(-1.0, 1.0);
}

TEST(Quantizer, AgreesWithTheReferenceTorchFormulation) {
  for (const int bits : {2, 4, 8}) {
    const at::Tensor w = randn({20000}, 50 + bits, 0.3f);
    // normal: global q = 1.
    {
      at::Tensor ref_codes;
      const at::Tensor ref = reference_unsigned(w, bits, false, &ref_codes);
      const QuantScheme s = QuantScheme::preset("normal", bits);
      const at::Tensor codes = quantize(w, s, "w").codes;
      const at::Tensor differ = codes.ne(ref_codes);
      EXPECT_LE(differ.sum().item<int64_t>(), 20) << "normal " << bits;
      EXPECT_LE((codes.to(at::kInt) - ref_codes.to(at::kInt)).abs().max().item<int>(), 1);
      const at::Tensor same = differ.logical_not();
      EXPECT_TRUE(at::equal(fake_quantize(w, s, "w").masked_select(same), ref.masked_select(same)));
    }
    // rquant: per tensor, asymmetric, unsigned, rounding.
    {
      const double lo = w.min().item<float>(), hi = w.max().item<float>();
      at::Tensor x = (w.clamp(lo, hi) - lo) / (hi - lo);
      x = x * 2 - 1;
      at::Tensor ref_codes;
      at::Tensor ref = reference_unsigned(x, bits, true, &ref_codes);
      ref = ((ref + 1) / 2) * (hi - lo) + lo;
      ref = ref.clamp(lo, hi);
      const QuantScheme s = QuantScheme::preset("rquant", bits);
      const at::Tensor codes = quantize(w, s, "w").codes;
      const at::Tensor differ = codes.ne(ref_codes);
      EXPECT_LE(differ.sum().item<int64_t>(), 20) << "rquant " << bits;
      EXPECT_LE((codes.to(at::kInt) - ref_codes.to(at::kInt)).abs().max().item<int>(), 1);
      const at::Tensor same = differ.logical_not();
      EXPECT_TRUE(at::equal(fake_quantize(w, s, "w").masked_select(same), ref.masked_select(same))) << bits;
    }
  }
}

TEST(ParamSelector, GlobsRegexesIncludeExclude) {
  EXPECT_TRUE(glob_match("*.bias", "features.0.bias"));
  EXPECT_FALSE(glob_match("*.bias", "features.0.bias_scale"));
  EXPECT_TRUE(glob_match("conv?.weight", "conv1.weight"));
  EXPECT_FALSE(glob_match("conv?.weight", "conv12.weight"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("a*b*c", "axxbyyc"));
  EXPECT_FALSE(glob_match("a*b*c", "axxbyy"));
  EXPECT_TRUE(glob_match("fc.weight", "fc.weight"));
  EXPECT_FALSE(glob_match("fc.weight", "fcXweight"));  // '.' is literal

  ParamSelector all;
  EXPECT_TRUE(all.selects("anything"));
  ParamSelector sel{{"features.*", "classifier.weight"}, {"*.bias", "re:norm\\d"}};
  EXPECT_TRUE(sel.selects("features.0.weight"));
  EXPECT_FALSE(sel.selects("features.0.bias"));
  EXPECT_FALSE(sel.selects("features.norm3.weight"));
  EXPECT_TRUE(sel.selects("classifier.weight"));
  EXPECT_FALSE(sel.selects("classifier.bias"));
  EXPECT_FALSE(sel.selects("head.weight"));
  ParamSelector regex{{"re:^layers\\.[0-3]\\."}, {}};
  EXPECT_TRUE(regex.selects("layers.2.conv.weight"));
  EXPECT_FALSE(regex.selects("layers.4.conv.weight"));
  ParamSelector broken{{"re:("}, {}};
  EXPECT_TRUE(contains(error_of([&] { broken.selects("x"); }), "parameter pattern 're:(': invalid regular expression '('"));
  EXPECT_TRUE(contains(error_of([&] { broken.validate(); }), "parameter pattern 're:(': invalid regular expression"));
  // NOTE [Name regexes]: linear time whatever the pattern; std::regex ran past any time limit here.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE((ParamSelector{{"re:(.*.*.*.*)*z"}, {}}.selects(std::string(40, 'a'))));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_TRUE(contains(error_of([&] { ParamSelector{{"re:(?=conv)"}, {}}.validate(); }),
                       "(RE2 syntax: no backreferences or lookaround)"));

  // A length cap, as for every option value (RE2 also caps its own memory).
  const std::string deep = "re:" + std::string(20000, '(') + "x" + std::string(20000, ')');
  EXPECT_TRUE(contains(error_of([&] { ParamSelector{{deep}, {}}.validate(); }), "at most 1000 are accepted"));
  EXPECT_TRUE(contains(error_of([&] { bits::ParamSelector(deep.substr(3)); }), "at most 1000 are accepted"));
  // A pattern that matches no parameter is a typo, not a choice.
  const std::vector<std::string> names = {"conv1.weight", "conv1.bias", "fc.weight"};
  EXPECT_NO_THROW((ParamSelector{{"conv*"}, {"*.bias"}}.check_every_pattern_matches(names)));
  EXPECT_EQ(error_of([&] { ParamSelector{{}, {"conv1.weigth"}}.check_every_pattern_matches(names); }),
            "--quant-exclude pattern 'conv1.weigth' matches no parameter of the model (parameters: conv1.weight, "
            "conv1.bias, fc.weight)");
  EXPECT_TRUE(contains(error_of([&] { ParamSelector{{"conv1.weight", "zzz"}, {}}.check_every_pattern_matches(names); }),
                       "--quant-include pattern 'zzz' matches no parameter"));
}

TEST(Quantizer, WeightsBeyondTheLargestBoundAreRejected) {
  // Beyond ~1.7e38 the width of a range overflows float and dequantization gives NaN; the bound
  // is 1e30, far above any trained weight.
  at::Tensor w = randn({3, 40}, 2);
  w[1][7] = 2e30f;
  for (const char* text : {"u8-asym-tensor-round", "s8-sym-channel-trunc"}) {
    const std::string message = error_of([&] { quantize(w, QuantScheme::parse(text), "fc.weight"); });
    EXPECT_TRUE(contains(message, "cannot quantize tensor 'fc.weight': it holds values beyond ±1e30 (")) << message;
    EXPECT_TRUE(contains(message, "to 2e+30)")) << message;
  }
}

#ifdef BITROBUST_WITH_CUDA
TEST(QuantizerCuda, BitIdenticalToCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Tensor w = at::cat({randn({64 * 1000}, 7), randn({64}, 8, 50.0f)}).reshape({64, -1});
  const at::Tensor w_cuda = w.cuda();
  for (const QuantScheme& s : all_schemes({2, 3, 4, 7, 8, 9, 12, 15, 16})) {
    const QuantizedTensor cpu = quantize(w, s, "w");
    QuantizedTensor gpu = quantize(w_cuda, s, "w");
    ASSERT_TRUE(gpu.codes.is_cuda());
    ASSERT_TRUE(at::equal(gpu.ranges.cpu(), cpu.ranges)) << s.to_string();
    ASSERT_TRUE(at::equal(gpu.codes.cpu(), cpu.codes)) << s.to_string();
    ASSERT_TRUE(at::equal(dequantize(gpu).cpu(), dequantize(cpu))) << s.to_string();
    ASSERT_TRUE(at::equal(fake_quantize(w_cuda, s, "w").cpu(), fake_quantize(w, s, "w"))) << s.to_string();
    // Every container value (bit errors): the same values on both devices.
    const int64_t values = s.bits <= 8 ? 256 : 65536;
    QuantizedTensor all_cpu = cpu;
    all_cpu.codes = at::arange(values, at::kInt).to(cpu.codes.scalar_type()).repeat({64, 1});
    QuantizedTensor all_gpu = gpu;
    all_gpu.codes = all_cpu.codes.cuda();
    ASSERT_TRUE(at::equal(dequantize(all_gpu).cpu(), dequantize(all_cpu))) << s.to_string();
  }
}

// Over 32 tensors and alternating formats, so the CUDA side splits into several launches.
TEST(QuantizerCuda, DequantizeManyEqualsCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const std::vector<QuantizedTensor> cpu = model_like_codes(at::kCPU);
  std::vector<QuantizedTensor> gpu = cpu;
  std::vector<at::Tensor> outs;
  for (QuantizedTensor& q : gpu) {
    q.codes = q.codes.cuda();
    q.ranges = q.ranges.cuda();
    outs.push_back(at::full(q.codes.sizes(), -7.0f, at::TensorOptions().device(at::kCUDA)));
  }
  dequantize_many_into(gpu, outs);
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_TRUE(same_bits(outs[i].cpu(), dequantize(cpu[i]))) << i << " " << cpu[i].scheme.to_string();
  }
  // One scheme for all 70: full batches of 32 tasks.
  const std::vector<QuantizedTensor> one = model_like_codes(at::kCPU, /*one_scheme=*/true);
  std::vector<QuantizedTensor> one_gpu = one;
  std::vector<at::Tensor> one_outs;
  for (QuantizedTensor& q : one_gpu) {
    q.codes = q.codes.cuda();
    q.ranges = q.ranges.cuda();
    one_outs.push_back(at::empty(q.codes.sizes(), at::TensorOptions().device(at::kCUDA)));
  }
  dequantize_many_into(one_gpu, one_outs);
  for (size_t i = 0; i < one.size(); ++i) ASSERT_TRUE(same_bits(one_outs[i].cpu(), dequantize(one[i]))) << i;
}

TEST(QuantizerCuda, FakeQuantizeManyAndCopyClampedEqualCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const std::vector<at::Tensor> weights = model_like_weights(true);
  const std::vector<std::string> names(weights.size(), "w");
  for (const QuantScheme& s : all_schemes({4, 8, 12})) {
    std::vector<at::Tensor> cpu = clones(weights, at::kCPU), gpu = clones(weights, at::kCUDA);
    std::vector<at::Tensor> cpu_masters, gpu_masters;
    at::Tensor cpu_ranges, gpu_ranges;
    fake_quantize_many_(cpu, &cpu_masters, s, names, cpu_ranges);
    fake_quantize_many_(gpu, &gpu_masters, s, names, gpu_ranges);
    ASSERT_TRUE(gpu_ranges.is_cuda());
    ASSERT_TRUE(at::equal(gpu_ranges.cpu(), cpu_ranges)) << s.to_string();
    for (size_t i = 0; i < weights.size(); ++i) {
      ASSERT_TRUE(gpu_masters[i].is_cuda());
      ASSERT_TRUE(same_bits(gpu[i].cpu(), cpu[i])) << s.to_string() << " " << i;
      ASSERT_TRUE(same_bits(gpu_masters[i].cpu(), weights[i])) << i;
    }
    std::vector<at::Tensor> cpu_codes, gpu_codes;
    quantize_many_into(cpu_masters, cpu_ranges, s, cpu_codes);
    quantize_many_into(gpu_masters, gpu_ranges, s, gpu_codes);
    for (size_t i = 0; i < weights.size(); ++i) ASSERT_TRUE(at::equal(gpu_codes[i].cpu(), cpu_codes[i])) << i;
    copy_clamped_many_(gpu, gpu, 0.01f, &gpu_masters, /*positive_zero=*/true);
    copy_clamped_many_(cpu, cpu, 0.01f, &cpu_masters, /*positive_zero=*/true);
    for (size_t i = 0; i < weights.size(); ++i) ASSERT_TRUE(same_bits(gpu[i].cpu(), cpu[i])) << i;
  }
  // More tensors than one copy launch takes (80), with signed zeros and NaN.
  std::vector<at::Tensor> many_cpu;
  for (int i = 0; i < 100; ++i) {
    at::Tensor t = randn({1 + 13 * i}, 500 + static_cast<uint64_t>(i));
    t.view(-1)[0] = (i % 3 == 0) ? -0.0f : (i % 3 == 1 ? std::numeric_limits<float>::quiet_NaN() : 0.3f);
    many_cpu.push_back(t);
  }
  for (const bool positive_zero : {false, true}) {
    std::vector<at::Tensor> a = clones(many_cpu, at::kCPU), b = clones(many_cpu, at::kCUDA);
    copy_clamped_many_(a, a, 0.1f, nullptr, positive_zero);
    copy_clamped_many_(b, b, 0.1f, nullptr, positive_zero);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_TRUE(same_bits(b[i].cpu(), a[i])) << positive_zero << " " << i;
  }
  // On the device a NaN weight makes its channel's range NaN instead of throwing.
  std::vector<at::Tensor> gpu = clones(weights, at::kCUDA);
  gpu[0].view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  at::Tensor ranges;
  fake_quantize_many_(gpu, nullptr, QuantScheme::preset("rquant", 8), names, ranges);
  EXPECT_TRUE(std::isnan(ranges[0][0].item<float>()));
  EXPECT_TRUE(at::isfinite(ranges.slice(0, 1)).all().item<bool>());
}

// Ranges computed on the device (NOTE [Device ranges]): one tensor large enough to be split across
// many blocks, signed zeros, and channels of one element; then NaN, which the device path turns
// into a NaN range instead of throwing.
TEST(QuantizerCuda, DeviceRangesEqualHostRanges) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::Tensor big = randn({3 * 1000003}, 11, 0.2f).reshape({3, -1});
  big.index_put_({1}, at::zeros({1000003}).neg());  // a channel of -0.0
  const at::Tensor tiny = randn({7}, 12).reshape({7, 1});
  for (const at::Tensor& w : {big, tiny}) {
    for (const QuantScheme& s : all_schemes({8})) {
      ASSERT_TRUE(at::equal(compute_ranges(w.cuda(), s, "w").cpu(), compute_ranges(w, s, "w"))) << s.to_string();
    }
  }
  at::Tensor bad = tiny.clone();
  bad[3][0] = std::numeric_limits<float>::quiet_NaN();
  QuantScheme channel;
  channel.source = RangeSource::Channel;
  const at::Tensor r = compute_ranges(bad.cuda(), channel, "w").cpu();
  EXPECT_TRUE(std::isnan(r[3][0].item<float>()) && std::isnan(r[3][1].item<float>()));
  EXPECT_TRUE(at::isfinite(r.index({at::indexing::Slice(0, 3)})).all().item<bool>());
  EXPECT_ERROR_CONTAINS(compute_ranges(bad, channel, "w"), "NaN or infinite");
}
#endif

}  // namespace
}  // namespace bitrobust::quant
