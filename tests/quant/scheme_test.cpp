#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bitrobust/common/error.h"
#include "bitrobust/quant/quantize_math.h"
#include "bitrobust/quant/scheme.h"
#include "test_util.h"

namespace bitrobust::quant {
namespace {

using test_util::contains;
using test_util::error_of;

TEST(QuantScheme, CanonicalStrings) {
  EXPECT_EQ(QuantScheme{}.to_string(), "u8-sym-global1.0-trunc");
  EXPECT_EQ(QuantScheme::preset("normal", 8).to_string(), "u8-sym-global1.0-trunc");
  EXPECT_EQ(QuantScheme::preset("normal", 4, 0.1f).to_string(), "u4-sym-global0.1-trunc-clip0.1");
  EXPECT_EQ(QuantScheme::preset("rquant", 8).to_string(), "u8-asym-tensor-round");
  EXPECT_EQ(QuantScheme::preset("rquant", 8, 0.1f).to_string(), "u8-asym-tensor-round-clip0.1");
  QuantScheme s;
  s.is_signed = true;
  s.bits = 4;
  EXPECT_EQ(s.to_string(), "s4-sym-global1.0-trunc");
  s.source = RangeSource::Channel;
  s.round = true;
  s.is_signed = false;
  s.bits = 8;
  EXPECT_EQ(s.to_string(), "u8-sym-channel-round");
  s.source = RangeSource::Global;
  s.global_q = 2.5e-5f;
  s.clip = 1e5f;
  EXPECT_EQ(s.to_string(), "u8-sym-global2.5e-05-round-clip1e+05");
}

TEST(QuantScheme, ParsesTheGrammarAndPresets) {
  const QuantScheme a = QuantScheme::parse("u8-asym-tensor-round-clip0.1");
  EXPECT_EQ(a.bits, 8);
  EXPECT_FALSE(a.is_signed);
  EXPECT_TRUE(a.asymmetric);
  EXPECT_EQ(a.source, RangeSource::Tensor);
  EXPECT_TRUE(a.round);
  EXPECT_EQ(a.clip, 0.1f);
  EXPECT_EQ(a, QuantScheme::preset("rquant", 8, 0.1f));
  EXPECT_EQ(QuantScheme::parse("rquant8-clip0.1"), a);
  EXPECT_EQ(QuantScheme::parse("normal8"), QuantScheme::preset("normal", 8));
  EXPECT_EQ(QuantScheme::parse("normal4-clip0.05"), QuantScheme::preset("normal", 4, 0.05f));

  const QuantScheme b = QuantScheme::parse("s4-sym-global1.0-trunc");
  EXPECT_EQ(b.bits, 4);
  EXPECT_TRUE(b.is_signed);
  EXPECT_FALSE(b.asymmetric);
  EXPECT_EQ(b.source, RangeSource::Global);
  EXPECT_EQ(b.global_q, 1.0f);
  EXPECT_FALSE(b.round);
  EXPECT_EQ(b.clip, 0.0f);

  EXPECT_EQ(QuantScheme::parse("u8-sym-channel-round").source, RangeSource::Channel);
  EXPECT_EQ(QuantScheme::parse("u16-sym-global5e-2-round-clip2.5e-3").global_q, 0.05f);
  EXPECT_EQ(QuantScheme::parse("u16-sym-global5e-2-round-clip2.5e-3").clip, 0.0025f);
  EXPECT_EQ(QuantScheme::parse("u8-sym-global1-trunc").global_q, 1.0f);
}

TEST(QuantScheme, EveryCombinationRoundTrips) {
  int count = 0;
  for (int bits = 2; bits <= 16; ++bits) {
    for (const bool is_signed : {false, true}) {
      for (const bool asymmetric : {false, true}) {
        for (const RangeSource source : {RangeSource::Global, RangeSource::Tensor, RangeSource::Channel}) {
          for (const bool round : {false, true}) {
            for (const float clip : {0.0f, 0.1f, 0.05f, 1e-5f, 3.0f}) {
              for (const float q : {1.0f, 0.1f, 0.3f, 1e-5f, 123456.7f}) {
                QuantScheme s;
                s.bits = bits;
                s.is_signed = is_signed;
                s.asymmetric = asymmetric;
                s.source = source;
                s.round = round;
                s.clip = clip;
                s.global_q = q;
                const std::string text = s.to_string();
                const QuantScheme back = QuantScheme::parse(text);
                ASSERT_EQ(back, s) << text;
                ASSERT_EQ(back.to_string(), text);
                ++count;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(count, 15 * 2 * 2 * 3 * 2 * 5 * 5);
}

TEST(QuantScheme, BadStringsNameThePartAndTheGrammar) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "the string is empty"},
      {"x8-sym-tensor-round", "part 1 'x8' must be s<bits> (signed) or u<bits> (unsigned)"},
      {"U8-sym-tensor-round", "part 1 'U8'"},
      {"u-sym-tensor-round", "the bit width '' is not a number"},
      {"u1-sym-tensor-round", "bits must be in 2..16, got 1"},
      {"u17-sym-tensor-round", "bits must be in 2..16, got 17"},
      {"u8", "part 2, the symmetry (sym or asym), is missing"},
      {"u8-sym", "part 3, the range source (global<q>, tensor or channel), is missing"},
      {"u8-sym-tensor", "part 4, the rounding (round or trunc), is missing"},
      {"u8-sim-tensor-round", "part 2 'sim' must be sym or asym"},
      {"u8-sym-layer-round", "part 3 'layer' must be global<q>, tensor or channel"},
      {"u8-sym-global-round", "the global bound '' is not a finite float"},
      {"u8-sym-globalx-round", "the global bound 'x' is not a finite float"},
      {"u8-sym-global0-round", "the global bound must be between 1e-30 and 1e30, got 0"},
      {"u8-asym-global3e38-round", "the global bound must be between 1e-30 and 1e30, got 3e38"},
      {"u8-sym-global-1-round", "the global bound must be between 1e-30 and 1e30, got -1"},
      {"u8-sym-global-trunc", "the global bound '' is not a finite float"},
      {"u8-sym-tensor-nearest", "part 4 'nearest' must be round or trunc"},
      {"u8-sym-tensor-round-clip0", "the clip bound must be between 1e-30 and 1e30, got 0"},
      {"u8-sym-tensor-round-clip2e30", "the clip bound must be between 1e-30 and 1e30, got 2e30"},
      // Below 1e-30 a 16-bit step would be a subnormal float, flushed to 0 on the CPU but not on CUDA.
      {"s16-sym-tensor-round-clip1e-37", "the clip bound must be between 1e-30 and 1e30, got 1e-37"},
      {"u8-sym-global1e-31-round", "the global bound must be between 1e-30 and 1e30, got 1e-31"},
      {"u8-sym-tensor-round-clip", "the clip bound '' is not a finite float"},
      {"u8-sym-tensor-round-clipinf", "the clip bound 'inf' is not a finite float"},
      {"u8-sym-tensor-round-clipnan", "the clip bound 'nan' is not a finite float"},
      {"u8-sym-tensor-round-clip1e39", "the clip bound '1e39' is not a finite float"},
      {"u8-sym-tensor-round-clip-0.1", "the clip bound must be between 1e-30 and 1e30, got -0.1"},
      {"u8-asym-tensor-round-clip-1", "the clip bound must be between 1e-30 and 1e30, got -1"},
      {"u8-sym-tensor-round-wmax0.1", "part 5 'wmax0.1' must be clip<w_max>"},
      {"u8-sym-tensor-round-clip0.1-x", "unexpected part 6 'x' after the end"},
      {"u8--sym-tensor-round", "part 2 is empty"},
      {"normal", "the preset's bit width '' is not a number"},
      {"rquant20", "bits must be in 2..16, got 20"},
      {"rquant8-round", "part 2 'round' must be clip<w_max>"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string message = error_of([&] { QuantScheme::parse(text); });
    EXPECT_TRUE(contains(message, "invalid quantization scheme '" + text + "': " + expected)) << message;
    EXPECT_TRUE(contains(message, "expected <s|u><bits>-<sym|asym>-<global<q>|tensor|channel>-<round|trunc>[-clip<w_max>]"))
        << message;
  }
}

TEST(QuantScheme, ValidateAndPresetsRejectBadValues) {
  QuantScheme s;
  s.bits = 1;
  EXPECT_EQ(error_of([&] { s.validate(); }), "quantization bits must be in 2..16, got 1");
  s.bits = 17;
  EXPECT_EQ(error_of([&] { s.validate(); }), "quantization bits must be in 2..16, got 17");
  s.bits = 8;
  s.clip = -0.1f;
  EXPECT_TRUE(contains(error_of([&] { s.validate(); }), "the clip bound must be between 1e-30 and 1e30")) << error_of([&] { s.validate(); });
  s.clip = 1e-31f;  // a 16-bit step of it would be subnormal
  EXPECT_TRUE(contains(error_of([&] { s.validate(); }), "the clip bound must be between 1e-30 and 1e30"));
  s.clip = 0.0f;
  s.global_q = 0.0f;
  EXPECT_TRUE(contains(error_of([&] { s.validate(); }), "the global quantization bound must be between 1e-30 and 1e30"));
  s.source = RangeSource::Tensor;  // global_q is not used
  EXPECT_NO_THROW(s.validate());

  EXPECT_EQ(error_of([] { QuantScheme::preset("fancy", 8); }),
            "unknown quantization preset 'fancy'; known presets: normal, rquant");
  EXPECT_EQ(error_of([] { QuantScheme::preset("rquant", 20); }),
            "preset 'rquant': quantization bits must be in 2..16, got 20");
  EXPECT_TRUE(contains(error_of([] { QuantScheme::preset("normal", 8, -1.0f); }),
                       "preset 'normal': the clip bound must be between 1e-30 and 1e30 (or 0 for none), got -1"));
  EXPECT_TRUE(contains(error_of([] { QuantScheme::preset("normal", 8, 3e38f); }), "between 1e-30 and 1e30 (or 0 for none), got 3e+38"));
}

TEST(QuantScheme, FormatPlacesEpsilonLikeTheReference) {
  EXPECT_EQ(QuantScheme::parse("u8-sym-global1.0-trunc").format().step_eps, kernels::kQuantEps);
  EXPECT_EQ(QuantScheme::parse("u8-sym-tensor-trunc").format().step_eps, 0.0f);
  EXPECT_EQ(QuantScheme::parse("s8-sym-channel-round-clip0.1").format().step_eps, 0.0f);
  EXPECT_EQ(QuantScheme::parse("u8-asym-tensor-round").format().step_eps, kernels::kQuantEps);
  const kernels::QuantFormat f = QuantScheme::parse("s12-asym-channel-round").format();
  EXPECT_EQ(f.bits, 12);
  EXPECT_TRUE(f.is_signed);
  EXPECT_TRUE(f.asymmetric);
  EXPECT_TRUE(f.round);
}

}  // namespace
}  // namespace bitrobust::quant
