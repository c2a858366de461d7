// libFuzzer harness: pattern files (docs/bit_errors.md, "Pattern files"). Properties: a refusal is a
// bitrobust::Error; an accepted pattern's flips lie inside their parameters' elements and bits, are
// sorted without duplicates, and saving and loading it again gives the same pattern.
#include <cstdint>
#include <string>

#include "bitrobust/bits/pattern.h"
#include "fuzz_util.h"

using namespace bitrobust;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input_file(data, size, "pattern.txt");
  bits::BitPattern pattern;
  if (!fuzz::accepted([&] { pattern = bits::load_pattern(path); })) return 0;
  const bits::BitFlip* previous = nullptr;
  for (const bits::BitFlip& f : pattern.flips) {
    if (f.param < 0 || f.param >= static_cast<int64_t>(pattern.params.size()))
      fuzz::property_failed("a flip names a parameter the file does not have");
    const bits::ParamSpec& p = pattern.params[static_cast<size_t>(f.param)];
    if (f.element < 0 || f.element >= p.numel() || f.bit < 0 || f.bit >= p.bits)
      fuzz::property_failed("a flip lies outside its parameter's elements or bits");
    if (previous) {
      const auto key = [](const bits::BitFlip& x) { return std::make_tuple(x.param, x.element, x.bit); };
      if (!(key(*previous) < key(f))) fuzz::property_failed("flips unsorted or duplicated");
    }
    previous = &f;
  }
  const std::string again_path = fuzz::write_input_file(nullptr, 0, "pattern_again.txt");
  bits::BitPattern again;
  if (!fuzz::accepted([&] {
        bits::save_pattern(again_path, pattern);
        again = bits::load_pattern(again_path, pattern.params);
      }))
    fuzz::property_failed("an accepted pattern, saved, does not load again");
  if (!(again.flips == pattern.flips) || again.seed != pattern.seed || again.model.name() != pattern.model.name() ||
      again.params.size() != pattern.params.size())
    fuzz::property_failed("an accepted pattern changed when saved and loaded again");
  return 0;
}
