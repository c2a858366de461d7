// libFuzzer harness: model files (NOTE [Model file]) and the zip directory reader behind their
// checksums (NOTE [Record checksums]). Properties: a refusal is a bitrobust::Error; every record the
// directory lists lies inside the file; an accepted model file's weights are finite, and so are those
// its codes dequantize to (what `test` and `eval` run).
// Each input runs twice: as it is, and with the CRC-32 of every stored record rewritten to match
// its mutated bytes, so that mutations inside records (pickles, the metadata JSON, tensor data)
// get past the checksums to the readers behind them.
#include <cstdint>
#include <string>
#include <vector>

#include "bitrobust/io/model_file.h"
#include "bitrobust/io/zip_checksums.h"
#include "bitrobust/quant/model_quantization.h"
#include "fuzz_util.h"

using namespace bitrobust;

namespace {

void check_model_file(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input_file(data, size, "model.pt");
  std::vector<io::ZipRecord> records;
  if (fuzz::accepted([&] { records = io::read_zip_directory(path, "model file"); })) {
    for (const io::ZipRecord& r : records)
      if (r.data_offset > size || r.size > size - r.data_offset)
        fuzz::property_failed("a record of the zip directory lies outside the file: " + r.name);
  }
  io::ModelFile file;
  if (fuzz::accepted([&] { file = io::load_model_file(path); })) {
    for (const auto& p : file.net->parameters())
      if (!p.isfinite().all().item<bool>()) fuzz::property_failed("an accepted model file holds a non-finite weight");
    if (!file.meta.contains("quantization")) return;
    quant::QuantizedModel q;
    if (!fuzz::accepted([&] { q = quant::load_from_model_file(file); })) return;
    q.load_clean_weights();
    for (const auto& p : file.net->parameters())
      if (!p.isfinite().all().item<bool>()) fuzz::property_failed("accepted codes dequantize to a non-finite weight");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::as_is_and_with_checksums_fixed(data, size, check_model_file);
  return 0;
}
