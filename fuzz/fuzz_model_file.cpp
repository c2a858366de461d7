// libFuzzer harness: model files (NOTE [Model file]) and the zip directory reader behind their
// checksums (NOTE [Record checksums]). Properties: a refusal is a bitrobust::Error; every record the
// directory lists lies inside the file; an accepted model file's weights are finite, and so are those
// its codes dequantize to (what `test` and `eval` run).
// Each input runs twice: as it is, and with the CRC-32 of every stored record rewritten to match
// its mutated bytes, so that mutations inside records (pickles, the metadata JSON, tensor data)
// get past the checksums to the readers behind them.
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bitrobust/io/model_file.h"
#include "bitrobust/io/zip_checksums.h"
#include "bitrobust/quant/model_quantization.h"
#include "fuzz_util.h"

using namespace bitrobust;

namespace {

uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24); }
uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

/// Rewrites the CRC-32 of every stored (method 0) record of a plain (not zip64) archive, in its local
/// header and in the central directory; false if the bytes are not such an archive.
bool fix_stored_checksums(std::vector<uint8_t>& z) {
  const size_t n = z.size();
  if (n < 22) return false;
  size_t eocd = n - 22;
  while (le32(&z[eocd]) != 0x06054b50) {
    if (eocd == 0 || n - eocd > 22 + 65535) return false;
    --eocd;
  }
  const uint32_t entries = le16(&z[eocd + 10]);
  size_t at = le32(&z[eocd + 16]);
  for (uint32_t i = 0; i < entries; ++i) {
    if (at > n || n - at < 46 || le32(&z[at]) != 0x02014b50) return false;
    const uint16_t method = le16(&z[at + 10]);
    const uint32_t csize = le32(&z[at + 20]);
    const size_t local = le32(&z[at + 42]);
    const size_t next = at + 46 + le16(&z[at + 28]) + le16(&z[at + 30]) + le16(&z[at + 32]);
    if (method == 0 && local <= n && n - local >= 30 && le32(&z[local]) == 0x04034b50) {
      const size_t start = local + 30 + le16(&z[local + 26]) + le16(&z[local + 28]);
      if (start <= n && csize <= n - start) {
        const uint32_t crc = static_cast<uint32_t>(::crc32(0L, z.data() + start, csize));
        put_le32(&z[at + 16], crc);
        put_le32(&z[local + 14], crc);
      }
    }
    at = next;
  }
  return true;
}

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
  check_model_file(data, size);
  std::vector<uint8_t> fixed(data, data + size);
  if (fix_stored_checksums(fixed) && std::memcmp(fixed.data(), data, size) != 0) check_model_file(fixed.data(), size);
  return 0;
}
