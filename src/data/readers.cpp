// File readers: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary batches, raw or gzip-compressed.
// Whole files are read in large chunks; gzip members are inflated with zlib (InputFile).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#include "bitrobust/common/error.h"
#include "bitrobust/data/dataset.h"

namespace bitrobust::data {
namespace {

namespace fs = std::filesystem;

std::string hex32(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08X", value);
  return text;
}

// The most bytes one data file may hold uncompressed: 4 GiB, 90 times MNIST's training images.
// Declared or found sizes above it are errors, not allocations of whatever a header says.
constexpr uint64_t kMaxDataBytes = uint64_t{1} << 32;

/// A gzip-or-raw input file; every failure is an Error that starts with the file name.
///
/// Gzip members are inflated here with zlib's stream API, not read through gzread: zlib 1.2.13's
/// gzread reports no error for a file cut inside its 8-byte trailer when the compressed data is
/// larger than its input buffer (the MNIST test images cut by 1 to 9 bytes read without one), so a
/// member that does not reach its end (where inflate checks the CRC-32 and length) is found here.
/// As gzip -d and gzread do, members follow one another, and bytes after the last member that do
/// not start another are ignored. A file that does not start with the gzip magic is read as is.
class InputFile {
 public:
  explicit InputFile(const std::string& path) : path_(path) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    BR_CHECK(fs::exists(status), path, ": file not found");
    BR_CHECK(!fs::is_directory(status), path, ": is a directory, expected a file");
    file_size_ = fs::file_size(path, ec);
    BR_CHECK(!ec, path, ": cannot read the file size: ", ec.message());
    errno = 0;
    file_ = std::fopen(path.c_str(), "rb");
    BR_CHECK(file_ != nullptr, path, ": cannot open: ", errno != 0 ? std::strerror(errno) : "out of memory");
    try {  // (the destructor does not run for a constructor that throws: the file is closed here)
      in_.resize(size_t{1} << 20);  // large reads: fewer system calls for 50 MB files
      fill(2);
      gzip_ = available() >= 2 && next_in()[0] == 0x1f && next_in()[1] == 0x8b;
      if (gzip_) {
        const int started = inflateInit2(&stream_, 15 + 16);  // gzip wrapper: CRC-32 and length checked
        BR_CHECK(started == Z_OK, path_, ": zlib cannot inflate (", started, ")");
        inflating_ = true;
      }
    } catch (...) {
      std::fclose(file_);
      throw;
    }
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() {
    if (inflating_) inflateEnd(&stream_);
    if (file_ != nullptr) std::fclose(file_);
  }

  const std::string& path() const { return path_; }

  /// Reads up to n bytes; returns fewer only at the end of the data.
  size_t read(void* destination, size_t n) {
    auto* out = static_cast<unsigned char*>(destination);
    size_t done = 0;
    while (done < n && !at_end_) {
      if (!gzip_) {
        if (available() == 0 && !fill(1)) break;
        const size_t count = std::min(n - done, available());
        std::memcpy(out + done, next_in(), count);
        advance(count);
        done += count;
        continue;
      }
      if (!in_member_) {  // between members: another one, or the end
        fill(2);
        if (available() < 2 || next_in()[0] != 0x1f || next_in()[1] != 0x8b) {
          at_end_ = true;  // (the end of the file, or bytes after the last member: ignored)
          break;
        }
        BR_CHECK(inflateReset(&stream_) == Z_OK, path_, ": zlib cannot inflate");
        in_member_ = true;
      }
      if (available() == 0 && !fill(1)) {
        truncated_ = true;  // the member's data, or its trailer, is cut
        at_end_ = true;
        break;
      }
      stream_.next_in = next_in();
      stream_.avail_in = static_cast<uInt>(std::min<size_t>(available(), size_t{1} << 30));
      stream_.next_out = out + done;
      stream_.avail_out = static_cast<uInt>(std::min<size_t>(n - done, size_t{1} << 30));
      const uInt had_in = stream_.avail_in, had_out = stream_.avail_out;
      const int status = inflate(&stream_, Z_NO_FLUSH);
      advance(had_in - stream_.avail_in);
      done += had_out - stream_.avail_out;
      if (status == Z_STREAM_END) {
        in_member_ = false;
      } else if (status != Z_OK && status != Z_BUF_ERROR) {  // (Z_BUF_ERROR: needs more input)
        throw Error(detail::concat(path_, ": cannot read (corrupt gzip data?): ",
                                   stream_.msg != nullptr ? stream_.msg : zError(status)));
      }
    }
    return done;
  }

  /// Reads everything that is left; more than max_bytes is an error (a gzip file of a few MB can
  /// hold gigabytes of zeros).
  std::vector<unsigned char> read_all(uint64_t max_bytes) {
    std::vector<unsigned char> data;
    // One byte more than the data is expected to hold, so that a full buffer means "there is more".
    size_t capacity = std::min<size_t>(
        std::max<size_t>(static_cast<size_t>(gzip_ ? file_size_ + file_size_ / 4 : file_size_) + 1,
                         size_t{1} << 16),
        max_bytes + 1);
    size_t size = 0;
    for (;;) {
      data.resize(capacity);
      size += read(data.data() + size, capacity - size);
      if (size < capacity) break;
      BR_CHECK(size <= max_bytes, path_, ": holds more than ", max_bytes,
               " bytes of data, more than this reader takes (a damaged or wrong file?)");
      capacity = std::min<size_t>(capacity * 2, max_bytes + 1);
    }
    data.resize(size);
    return data;
  }

  /// Why a read came up short, for "truncated" messages: a cut gzip stream or simply the end.
  std::string shortfall_note() const { return truncated_ ? " (the gzip stream ends early: the file was cut)" : ""; }

  /// After the last read: a gzip stream that ended early is an error even when the data came out
  /// whole, since a file cut inside its 8-byte trailer gives all its data but no CRC-32 or length
  /// to check them against.
  void check_complete() const {
    BR_CHECK(!truncated_, path_, ": truncated: the gzip stream ends early (the file was cut), so its "
             "data could not be checked against the CRC-32 and length that end it");
  }

  /// The most uncompressed bytes the rest of the file can hold (deflate expands at most ~1032:1).
  uint64_t max_remaining_bytes() const {
    return gzip_ ? file_size_ * 1032 + 1024 : file_size_;
  }

 private:
  size_t available() const { return in_end_ - in_begin_; }
  const unsigned char* next_in() const { return in_.data() + in_begin_; }
  unsigned char* next_in() { return in_.data() + in_begin_; }

  /// Reads more of the file until at least `wanted` bytes are buffered or the file ends; returns
  /// whether any bytes are buffered.
  bool fill(size_t wanted) {
    if (available() >= wanted) return true;
    std::memmove(in_.data(), next_in(), available());
    in_end_ = available();
    in_begin_ = 0;
    while (!file_ended_ && in_end_ < in_.size()) {
      const size_t got = std::fread(in_.data() + in_end_, 1, in_.size() - in_end_, file_);
      in_end_ += got;
      if (got == 0) {
        BR_CHECK(!std::ferror(file_), path_, ": cannot read: ", std::strerror(errno));
        file_ended_ = true;
      }
      if (in_end_ >= wanted) break;
    }
    return available() > 0;
  }
  void advance(size_t count) { in_begin_ += count; }

  std::string path_;
  uint64_t file_size_ = 0;
  std::FILE* file_ = nullptr;
  std::vector<unsigned char> in_;
  size_t in_begin_ = 0, in_end_ = 0;  // the buffered, not yet consumed bytes of in_
  bool file_ended_ = false;
  bool gzip_ = false, inflating_ = false, in_member_ = true, at_end_ = false, truncated_ = false;
  z_stream stream_{};
};

uint32_t big_endian_u32(const unsigned char* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) | uint32_t{bytes[3]};
}

/// Reads an IDX header of unsigned bytes with `expected_dims` dimensions and returns the sizes.
std::vector<uint64_t> read_idx_header(InputFile& file, int expected_dims, const char* what) {
  const uint32_t expected_magic = 0x0800u | static_cast<uint32_t>(expected_dims);
  unsigned char magic_bytes[4];
  const size_t got = file.read(magic_bytes, 4);
  BR_CHECK(got == 4, file.path(), ": truncated: ", got, " bytes, too short for an IDX header (expected an IDX ",
           what, " file, magic number ", hex32(expected_magic), ")");
  const uint32_t magic = big_endian_u32(magic_bytes);
  if (magic != expected_magic) {
    // IDX magic: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
    std::string meaning = " (not an IDX file)";
    if ((magic >> 16) == 0) {
      const uint32_t type = (magic >> 8) & 0xFFu;
      meaning = detail::concat(" (an IDX file of ", type == 0x08u ? std::string("unsigned bytes") :
                               detail::concat("element type 0x", hex32(type).substr(8)), ", ", magic & 0xFFu,
                               (magic & 0xFFu) == 1 ? " dimension)" : " dimensions)");
    }
    throw Error(detail::concat(
        file.path(), ": wrong magic number ", hex32(magic), meaning,
        ", expected ", hex32(expected_magic), " (IDX ", what, ": unsigned bytes, ", expected_dims,
        expected_dims == 1 ? " dimension)" : " dimensions)"));
  }
  std::vector<unsigned char> dim_bytes(4 * static_cast<size_t>(expected_dims));
  const size_t got_dims = file.read(dim_bytes.data(), dim_bytes.size());
  BR_CHECK(got_dims == dim_bytes.size(), file.path(), ": truncated: the IDX header ends after ", 4 + got_dims,
           " bytes, expected ", 4 + dim_bytes.size());
  std::vector<uint64_t> dims(expected_dims);
  uint64_t total = 1;
  for (int d = 0; d < expected_dims; ++d) {
    dims[d] = big_endian_u32(&dim_bytes[4 * d]);
    BR_CHECK(dims[d] > 0, file.path(), ": wrong dimensions: dimension ", d, " of the IDX header is 0");
    // Checked before multiplying: three dimensions below 2^32 can wrap 64 bits (2^20 * 2^20 * 2^24).
    BR_CHECK(dims[d] <= (uint64_t{1} << 40) / total, file.path(),
             ": wrong dimensions: the IDX header declares more than 2^40 bytes");
    total *= dims[d];
  }
  return dims;
}

/// Checks, before allocating, that the file can hold the n payload bytes its header declares.
void check_idx_payload_fits(const InputFile& file, uint64_t n, const std::string& declared) {
  BR_CHECK(n <= kMaxDataBytes, file.path(), ": the header declares ", declared, " (", n, " bytes), more than the ",
           kMaxDataBytes, " bytes this reader takes (a damaged or wrong file?)");
  BR_CHECK(n <= file.max_remaining_bytes(), file.path(), ": truncated: the header declares ", declared, " (", n,
           " bytes) but the file is far too small to hold them");
}

/// Reads exactly n payload bytes after the header and checks that nothing follows.
void read_idx_payload(InputFile& file, void* destination, uint64_t n, const std::string& declared) {
  const size_t got = file.read(destination, n);
  BR_CHECK(got == n, file.path(), ": truncated: the header declares ", declared, " (", n, " bytes) but only ", got,
           " bytes follow the header", file.shortfall_note());
  unsigned char extra;
  BR_CHECK(file.read(&extra, 1) == 0, file.path(), ": wrong dimensions: the header declares ", declared, " (", n,
           " bytes) but the file holds more data after them");
  file.check_complete();
}

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;  // 3072
constexpr int64_t kCifarRecord = 1 + kCifarPixels;              // 3073
constexpr int64_t kCifarClasses = 10;

}  // namespace

Dataset read_idx(const std::string& images_file, const std::string& labels_file, int64_t num_classes) {
  BR_CHECK(num_classes >= 1 && num_classes <= 256, "read_idx: num_classes must be in 1..256, got ", num_classes);
  Dataset result;
  result.num_classes = num_classes;
  result.source = images_file + "," + labels_file;
  result.files = {images_file, labels_file};

  InputFile images_in(images_file);
  const std::vector<uint64_t> image_dims = read_idx_header(images_in, 3, "images");
  const uint64_t count = image_dims[0], rows = image_dims[1], cols = image_dims[2];
  const std::string images_declared = detail::concat(count, " images of ", rows, "x", cols);
  check_idx_payload_fits(images_in, count * rows * cols, images_declared);
  result.images = at::empty({static_cast<int64_t>(count), 1, static_cast<int64_t>(rows), static_cast<int64_t>(cols)},
                            at::kByte);
  read_idx_payload(images_in, result.images.data_ptr<uint8_t>(), count * rows * cols, images_declared);

  InputFile labels_in(labels_file);
  const std::vector<uint64_t> label_dims = read_idx_header(labels_in, 1, "labels");
  const uint64_t label_count = label_dims[0];
  const std::string labels_declared = detail::concat(label_count, " labels");
  check_idx_payload_fits(labels_in, label_count, labels_declared);
  std::vector<uint8_t> raw_labels(label_count);
  read_idx_payload(labels_in, raw_labels.data(), label_count, labels_declared);
  BR_CHECK(label_count == count, "image/label count mismatch: ", images_file, " holds ", count, " images but ",
           labels_file, " holds ", label_count, " labels");

  result.labels = at::empty({static_cast<int64_t>(count)}, at::kLong);
  int64_t* labels = result.labels.data_ptr<int64_t>();
  for (uint64_t i = 0; i < count; ++i) {
    BR_CHECK(raw_labels[i] < num_classes, labels_file, ": label ", int{raw_labels[i]}, " of example ", i,
             " is out of range: expected 0..", num_classes - 1, " (", num_classes, " classes)");
    labels[i] = raw_labels[i];
  }
  return result;
}

Dataset read_cifar10(const std::vector<std::string>& files, uint64_t max_file_bytes) {
  BR_CHECK(!files.empty(), "read_cifar10: no files given");
  const int64_t num_files = static_cast<int64_t>(files.size());
  std::vector<std::vector<unsigned char>> contents(files.size());
  std::vector<std::string> notes(files.size());
  std::vector<std::exception_ptr> failures(files.size());
  // Decompression dominates (about 0.1 s per 30 MB batch): read the files in parallel.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t f = 0; f < num_files; ++f) {
    try {
      InputFile in(files[f]);
      contents[f] = in.read_all(max_file_bytes);
      notes[f] = in.shortfall_note();
      // Whole records with a cut stream (cut inside the trailer or at a record's end) are refused
      // here; a cut inside a record is named with the record count below.
      if (contents[f].size() % kCifarRecord == 0) in.check_complete();
    } catch (...) {
      failures[f] = std::current_exception();
    }
  }
  for (const std::exception_ptr& failure : failures) {
    if (failure) std::rethrow_exception(failure);
  }

  int64_t total = 0;
  for (size_t f = 0; f < files.size(); ++f) {
    const int64_t bytes = static_cast<int64_t>(contents[f].size());
    BR_CHECK(bytes > 0, files[f], ": the file is empty, expected CIFAR-10 records of ", kCifarRecord, " bytes");
    BR_CHECK(bytes % kCifarRecord == 0, files[f], ": truncated: ", bytes, " bytes is not a whole number of ",
             kCifarRecord, "-byte CIFAR-10 records (1 label byte + 3072 pixel bytes); ", bytes / kCifarRecord,
             " whole records and ", bytes % kCifarRecord, " bytes left over", notes[f]);
    total += bytes / kCifarRecord;
  }

  Dataset result;
  result.num_classes = kCifarClasses;
  result.name = "cifar10";
  for (size_t f = 0; f < files.size(); ++f) result.source += (f ? "," : "") + files[f];
  result.files = files;
  result.images = at::empty({total, 3, kCifarSide, kCifarSide}, at::kByte);
  result.labels = at::empty({total}, at::kLong);
  uint8_t* images = result.images.data_ptr<uint8_t>();
  int64_t* labels = result.labels.data_ptr<int64_t>();
  int64_t offset = 0;
  for (size_t f = 0; f < files.size(); ++f) {
    const unsigned char* data = contents[f].data();
    const int64_t records = static_cast<int64_t>(contents[f].size()) / kCifarRecord;
    for (int64_t r = 0; r < records; ++r) {
      const unsigned char* record = data + r * kCifarRecord;
      BR_CHECK(record[0] < kCifarClasses, files[f], ": label ", int{record[0]}, " of record ", r,
               " is out of range: expected 0..9 (CIFAR-10 has 10 classes); is this a CIFAR-10 binary batch?");
      labels[offset + r] = record[0];
      std::memcpy(images + (offset + r) * kCifarPixels, record + 1, kCifarPixels);
    }
    offset += records;
    std::vector<unsigned char>().swap(contents[f]);
  }
  return result;
}

}  // namespace bitrobust::data
