#include "bitrobust/io/zip_checksums.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>

#include "bitrobust/common/error.h"
#include "bitrobust/io/model_file.h"
#include "model_fixtures.h"
#include "test_util.h"

using namespace bitrobust;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
uint32_t crc_of(const void* data, size_t size) {
  return static_cast<uint32_t>(crc32_z(0L, static_cast<const Bytef*>(data), size));
}

// Little-endian appenders for the hand-made zip below.
void put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

struct TestRecord {
  std::string name, data;
  bool deflate = false;
  int64_t declared_size_delta = 0;  ///< the directory's uncompressed size is data.size() plus this
  size_t cut = 0;                   ///< bytes dropped from the end of the stored (compressed) data
};

std::string raw_deflate(const std::string& data) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&stream, data.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// A zip built byte by byte, with every size and offset in zip64 fields: Torch writes those only for
// records and files past 4 GiB, too large for a test.
std::string zip64_archive(const std::vector<TestRecord>& records) {
  std::string file, directory;
  for (const TestRecord& r : records) {
    const uint64_t local_offset = file.size();
    const uint32_t crc = crc_of(r.data.data(), r.data.size());
    std::string stored = r.deflate ? raw_deflate(r.data) : r.data;
    stored.resize(stored.size() - r.cut);
    const uint64_t declared = r.data.size() + r.declared_size_delta;
    const int method = r.deflate ? 8 : 0;
    put(file, 0x04034b50, 4);
    put(file, 45, 2), put(file, 0, 2), put(file, method, 2), put(file, 0, 4);  // version, flags, method, time
    put(file, crc, 4), put(file, 0xFFFFFFFF, 4), put(file, 0xFFFFFFFF, 4);
    put(file, r.name.size(), 2), put(file, 20, 2);
    file += r.name;
    put(file, 1, 2), put(file, 16, 2), put(file, declared, 8), put(file, stored.size(), 8);
    file += stored;
    put(directory, 0x02014b50, 4);
    put(directory, 45, 2), put(directory, 45, 2), put(directory, 0, 2), put(directory, method, 2), put(directory, 0, 4);
    put(directory, crc, 4), put(directory, 0xFFFFFFFF, 4), put(directory, 0xFFFFFFFF, 4);
    put(directory, r.name.size(), 2), put(directory, 28, 2), put(directory, 0, 2);
    put(directory, 0, 2), put(directory, 0, 2), put(directory, 0, 4), put(directory, 0xFFFFFFFF, 4);
    directory += r.name;
    put(directory, 1, 2), put(directory, 24, 2);
    put(directory, declared, 8), put(directory, stored.size(), 8), put(directory, local_offset, 8);
  }
  const uint64_t directory_offset = file.size();
  file += directory;
  const uint64_t end64_offset = file.size();
  put(file, 0x06064b50, 4), put(file, 44, 8), put(file, 45, 2), put(file, 45, 2), put(file, 0, 4), put(file, 0, 4);
  put(file, records.size(), 8), put(file, records.size(), 8), put(file, directory.size(), 8);
  put(file, directory_offset, 8);
  put(file, 0x07064b50, 4), put(file, 0, 4), put(file, end64_offset, 8), put(file, 1, 4);
  put(file, 0x06054b50, 4), put(file, 0, 2), put(file, 0, 2), put(file, 0xFFFF, 2), put(file, 0xFFFF, 2);
  put(file, 0xFFFFFFFF, 4), put(file, 0xFFFFFFFF, 4), put(file, 0, 2);
  return file;
}

}  // namespace

// The directory read here describes exactly the records LibTorch reads: same names (less the
// archive's folder), sizes and bytes, and the checksum of those bytes.
TEST(ZipChecksums, DirectoryAgreesWithTorchsReaderOnAModelFile) {
  test_util::TempDir dir;
  const std::string path = dir.file("m.pt");
  io::save_model_file(path, test_util::quantized_model_file(8));
  const std::vector<io::ZipRecord> records = io::read_zip_directory(path, "model file");
  caffe2::serialize::PyTorchStreamReader reader(path);
  const std::vector<std::string> names = reader.getAllRecords();
  ASSERT_EQ(records.size(), names.size());
  ASSERT_GT(records.size(), 10u);
  const std::string bytes = read_bytes(path);
  int deflated = 0;
  for (const io::ZipRecord& record : records) {
    const std::string name = record.name.substr(record.name.find('/') + 1);
    ASSERT_TRUE(reader.hasRecord(name)) << record.name;
    auto [data, size] = reader.getRecord(name);
    ASSERT_EQ(record.uncompressed_size, size) << name;
    EXPECT_EQ(record.crc32, crc_of(data.get(), size)) << name;
    if (record.method == 0) {  // tensors and pickles
      EXPECT_EQ(record.size, size) << name;
      EXPECT_EQ(std::memcmp(bytes.data() + record.data_offset, data.get(), size), 0) << name;
    } else {  // some of the TorchScript code
      EXPECT_EQ(record.method, 8) << name;
      ++deflated;
    }
  }
  EXPECT_GT(deflated, 0);  // (so that the test below damages those too)
  EXPECT_NO_THROW(io::verify_zip_checksums(path, "model file"));
}

TEST(ZipChecksums, Zip64FieldsAreReadAndChecked) {
  test_util::TempDir dir;
  const std::string path = dir.file("z64.zip");
  const std::vector<TestRecord> contents = {
      {"a/data/0", std::string(1000, 'x')}, {"a/data.pkl", "pickle"}, {"a/empty", ""}, {"a/\xBB\\\n", "?"}};
  write_bytes(path, zip64_archive(contents));
  const std::vector<io::ZipRecord> records = io::read_zip_directory(path, "archive");
  ASSERT_EQ(records.size(), contents.size());
  const std::string bytes = read_bytes(path);
  for (size_t i = 0; i < contents.size(); ++i) {
    EXPECT_EQ(records[i].name, i < 3 ? contents[i].name : "a/\\xBB\\x5C\\x0A");  // printable in messages
    EXPECT_EQ(records[i].size, contents[i].data.size());
    EXPECT_EQ(records[i].uncompressed_size, contents[i].data.size());
    EXPECT_EQ(bytes.substr(records[i].data_offset, records[i].size), contents[i].data);
  }
  EXPECT_NO_THROW(io::verify_zip_checksums(path, "archive"));
  std::string damaged = bytes;
  damaged[records[1].data_offset + 2] ^= 0x01;
  write_bytes(path, damaged);
  EXPECT_ERROR_CONTAINS(io::verify_zip_checksums(path, "archive"),
                        "archive " + path + " is damaged: its record a/data.pkl does not match the checksum");
}

// Deflated records (TorchScript code in Torch's archives) are inflated and checked: their bytes, and
// the sizes the directory gives, whatever is wrong with them.
TEST(ZipChecksums, DeflatedRecordsAreInflatedAndChecked) {
  test_util::TempDir dir;
  const std::string path = dir.file("deflated.zip");
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "def forward(self, x):\n    return x + " + std::to_string(i % 97) + "\n";
  const auto check = [&](TestRecord record) {
    write_bytes(path, zip64_archive({{"a/plain", "stored"}, std::move(record)}));
    return test_util::error_of([&] { io::verify_zip_checksums(path, "archive"); });
  };
  EXPECT_EQ(check({"a/code.py", text, true}), "");
  ASSERT_LT(raw_deflate(text).size(), text.size() / 4);  // (compressed, and inflated in several 64 KiB pieces)
  const std::string damaged = "archive " + path + " is damaged: its record a/code.py does not match";
  EXPECT_TRUE(test_util::contains(check({"a/code.py", text, true, 0, 5}), damaged));  // data cut short
  EXPECT_TRUE(test_util::contains(check({"a/code.py", text, true, -1}), damaged));  // inflates to more
  EXPECT_TRUE(test_util::contains(check({"a/code.py", text, true, +1}), damaged));  // inflates to less
  EXPECT_TRUE(test_util::contains(check({"a/code.py", text, true, -int64_t(text.size())}), damaged));
  EXPECT_EQ(check({"a/code.py", "", true}), "");  // empty, deflated
  // Stored bytes that are no deflate stream at all.
  write_bytes(path, zip64_archive({{"a/code.py", text, true}}));
  std::string bytes = read_bytes(path);
  const io::ZipRecord record = io::read_zip_directory(path, "archive").at(0);
  for (uint64_t i = 0; i < 16; ++i) bytes[record.data_offset + i] = static_cast<char>(0xFF);
  write_bytes(path, bytes);
  EXPECT_ERROR_CONTAINS(io::verify_zip_checksums(path, "archive"), damaged);
}

// A directory that lists fewer records than it holds, or two entries for the same bytes (which would
// make the checking work grow with the square of the file size): errors, before any CRC is computed.
TEST(ZipChecksums, DirectoriesThatHideOrRepeatRecordsAreErrors) {
  test_util::TempDir dir;
  const std::string path = dir.file("z.zip");
  const std::string good = zip64_archive({{"a/data/0", std::string(300, 'x')}, {"a/data/1", std::string(200, 'y')}});
  const auto nth = [&](const std::string& signature, int n) {
    size_t at = std::string::npos;
    for (int i = 0; i <= n; ++i) at = good.find(signature, at == std::string::npos ? 0 : at + 1);
    return at;
  };
  write_bytes(path, good);
  ASSERT_EQ(io::read_zip_directory(path, "archive").size(), 2u);
  {  // The zip64 end record says 1 entry (entries on this disk, and in all).
    std::string bytes = good;
    const size_t end64 = nth("PK\x06\x06", 0);
    for (const size_t field : {end64 + 24, end64 + 32}) bytes[field] = 1;
    write_bytes(path, bytes);
    EXPECT_ERROR_CONTAINS(io::read_zip_directory(path, "archive"), "its 1 entries fill");
  }
  {  // The second entry's zip64 local header offset (after sizes) points at the first record.
    std::string bytes = good;
    const size_t entry = nth("PK\x01\x02", 1);
    const size_t offset_field = entry + 46 + std::string("a/data/1").size() + 4 + 16;
    for (size_t i = 0; i < 8; ++i) bytes[offset_field + i] = 0;
    write_bytes(path, bytes);
    EXPECT_ERROR_CONTAINS(io::read_zip_directory(path, "archive"), "overlaps the one before it");
  }
  {  // Two records of one name (LibTorch would read the later one, a zip tool the earlier).
    write_bytes(path, zip64_archive({{"a/data/0", std::string(300, 'x')}, {"a/data/0", std::string(200, 'y')}}));
    EXPECT_ERROR_CONTAINS(io::read_zip_directory(path, "archive"), "lists record a/data/0 twice");
  }
  {  // An extra field whose length runs past its entry.
    std::string bytes = good;
    const size_t entry = nth("PK\x01\x02", 0);
    bytes[entry + 46 + std::string("a/data/0").size() + 2] = 100;
    write_bytes(path, bytes);
    EXPECT_ERROR_CONTAINS(io::read_zip_directory(path, "archive"), "an extra field of a/data/0 reaches past its entry");
  }
}

// NOTE [Record checksums]: one flipped bit anywhere in any record of a model file (weights, codes,
// ranges, the pickles holding the metadata, the deflated TorchScript code) makes loading it an error naming the file and record.
TEST(ZipChecksums, OneFlippedBitInAnyRecordOfAModelFileIsAnError) {
  test_util::TempDir dir;
  const std::string good = dir.file("good.pt");
  io::save_model_file(good, test_util::quantized_model_file(8));
  const std::string bytes = read_bytes(good);
  const std::string path = dir.file("flipped.pt");
  int checked = 0;
  for (const io::ZipRecord& record : io::read_zip_directory(good, "model file")) {
    if (record.size == 0) continue;
    // (A deflated record's last byte may end in padding bits that no decoder reads.)
    const uint64_t last = record.method == 0 ? record.size - 1 : record.size - 2;
    for (const uint64_t at : {uint64_t{0}, record.size / 2, last}) {
      std::string damaged = bytes;
      damaged[record.data_offset + at] ^= static_cast<char>(1 << (at % 8));
      write_bytes(path, damaged);
      const std::string message = test_util::error_of([&] { io::load_model_file(path); });
      EXPECT_TRUE(test_util::contains(message, "model file " + path + " is damaged: its record " + record.name +
                                                   " does not match the checksum"))
          << record.name << " byte " << at << ": '" << message << "'";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

// Whatever happens to a model file's bytes, loading it either fails with a bitrobust::Error naming
// the file or gives back exactly the saved model (the bytes hit were ones no reader uses: file
// names and times in the local headers, padding); never a different model, never another exception.
TEST(ZipChecksums, ADamagedModelFileNeverLoadsAsAnotherModel) {
  test_util::TempDir dir;
  const std::string good = dir.file("good.pt");
  io::save_model_file(good, test_util::quantized_model_file(8));
  const io::ModelFile original = io::load_model_file(good);
  const std::string bytes = read_bytes(good);
  const std::string path = dir.file("damaged.pt");
  std::mt19937_64 rng(20261204);
  int errors = 0, unchanged = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string damaged = bytes;
    const int kind = trial % 3;
    if (kind == 0) {  // one bit flipped
      const size_t at = rng() % damaged.size();
      damaged[at] ^= static_cast<char>(1 << (rng() % 8));
    } else if (kind == 1) {  // cut short
      damaged.resize(rng() % damaged.size());
    } else {  // a run of bytes overwritten, biased to the directory at the end
      const size_t length = 1 + rng() % 16;
      const size_t tail = std::min<size_t>(damaged.size(), 4096);
      const size_t at = (rng() % 2 ? damaged.size() - tail + rng() % tail : rng() % damaged.size());
      for (size_t i = at; i < std::min(damaged.size(), at + length); ++i) damaged[i] = static_cast<char>(rng());
    }
    write_bytes(path, damaged);
    try {
      const io::ModelFile loaded = io::load_model_file(path);
      ++unchanged;
      EXPECT_EQ(loaded.meta, original.meta) << "trial " << trial;
      for (const auto& [name, value] : original.net->named_parameters().pairs()) {
        EXPECT_TRUE(torch::equal(loaded.net->named_parameters()[name], value)) << "trial " << trial << ": " << name;
      }
      ASSERT_EQ(loaded.quant_codes.size(), original.quant_codes.size());
      for (size_t i = 0; i < original.quant_codes.size(); ++i) {
        EXPECT_TRUE(torch::equal(loaded.quant_codes[i], original.quant_codes[i])) << "trial " << trial;
        EXPECT_TRUE(torch::equal(loaded.quant_ranges[i], original.quant_ranges[i])) << "trial " << trial;
      }
    } catch (const Error& e) {
      ++errors;
      EXPECT_TRUE(test_util::contains(e.what(), path)) << "trial " << trial << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "trial " << trial << ": not a bitrobust::Error: " << e.what();
    }
  }
  EXPECT_GT(errors, 200);
  EXPECT_GT(unchanged, 0);
}

TEST(ZipChecksums, FilesThatAreNoZipGiveClearErrors) {
  test_util::TempDir dir;
  write_bytes(dir.file("short"), "PK");
  EXPECT_ERROR_CONTAINS(io::read_zip_directory(dir.file("short"), "model file"),
                        "model file " + dir.file("short") + " is not a readable archive (too short to be a zip file)");
  write_bytes(dir.file("text"), std::string(100, 'x'));
  EXPECT_ERROR_CONTAINS(io::read_zip_directory(dir.file("text"), "model file"), "no zip directory at its end");
  // An end record whose directory lies past the end of the file.
  std::string end;
  put(end, 0x06054b50, 4), put(end, 0, 2), put(end, 0, 2), put(end, 1, 2), put(end, 1, 2);
  put(end, 46, 4), put(end, 1000, 4), put(end, 0, 2);
  write_bytes(dir.file("past"), end);
  EXPECT_ERROR_CONTAINS(io::read_zip_directory(dir.file("past"), "model file"), "points past the end of the file");
  EXPECT_ERROR_CONTAINS(io::read_file_bytes(dir.file("missing"), "model file"),
                        "model file " + dir.file("missing") + " does not exist");
  EXPECT_ERROR_CONTAINS(io::read_file_bytes(dir.path().string(), "model file"),
                        "model file " + dir.path().string() + " is not a regular file");
  const io::FileBytes read = io::read_file_bytes(dir.file("past"), "model file");
  EXPECT_EQ(read.name, "model file " + dir.file("past"));
  EXPECT_EQ(read.bytes, end);
}
