// The zip layout read here (central directory, zip64 extensions, local headers) is that of PKWARE's
// APPNOTE.TXT, sections 4.3.7-4.3.16; only what locating and checking the records needs.
#include "bitrobust/io/zip_checksums.h"

#include <zlib.h>

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include "bitrobust/common/error.h"

namespace bitrobust::io {
namespace {

constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint32_t kZip64EndOfDirectory = 0x06064b50;
constexpr uint32_t kDirectoryEntry = 0x02014b50;
constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr size_t kEndOfDirectorySize = 22;
constexpr size_t kMaxCommentSize = 0xFFFF;

/// Checked random access to a file's bytes; every failure names the file.
class ZipFile {
 public:
  explicit ZipFile(const FileBytes& file) : file_(file) {}
  const std::string& name() const { return file_.name; }
  uint64_t size() const { return file_.bytes.size(); }

  /// `count` bytes from `offset`, which must lie in the file.
  const unsigned char* at(uint64_t offset, uint64_t count) const {
    BR_CHECK(offset <= size() && count <= size() - offset, name(),
             " is damaged: its zip directory points past the end of the file");
    return reinterpret_cast<const unsigned char*>(file_.bytes.data()) + offset;
  }
  std::vector<unsigned char> read(uint64_t offset, uint64_t count) const {
    const unsigned char* bytes = at(offset, count);
    return std::vector<unsigned char>(bytes, bytes + count);
  }

 private:
  const FileBytes& file_;
};

/// Little-endian fields of a byte block; reading past its end is the file's fault, not ours.
class Fields {
 public:
  Fields(const std::vector<unsigned char>& bytes, const std::string& file) : bytes_(bytes), file_(file) {}
  template <typename T>
  T at(size_t offset) const {
    BR_CHECK(offset <= bytes_.size() && sizeof(T) <= bytes_.size() - offset, file_,
             " is damaged: a zip directory entry is cut short");
    T value = 0;
    for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(static_cast<T>(bytes_[offset + i]) << (8 * i));
    return value;
  }

 private:
  const std::vector<unsigned char>& bytes_;
  const std::string& file_;
};

/// A record name as messages show it: a damaged directory may hold any bytes in it.
std::string printable(const std::string& name) {
  std::string text;
  for (const char c : name) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7F && byte != '\\') {
      text += c;
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02X", byte);
      text += escaped;
    }
  }
  return text;
}

struct Directory {
  uint64_t entries = 0, size = 0, offset = 0;
};

Directory find_directory(const ZipFile& zip) {
  BR_CHECK(zip.size() >= kEndOfDirectorySize, zip.name(), " is not a readable archive (too short to be a zip file)");
  const uint64_t tail_size = std::min<uint64_t>(zip.size(), kEndOfDirectorySize + kMaxCommentSize);
  const uint64_t tail_start = zip.size() - tail_size;
  const std::vector<unsigned char> tail = zip.read(tail_start, tail_size);
  const Fields fields(tail, zip.name());
  // The record ends the file, followed only by a comment of the length it declares.
  for (size_t pos = tail_size - kEndOfDirectorySize + 1; pos-- > 0;) {
    if (fields.at<uint32_t>(pos) != kEndOfDirectory) continue;
    if (pos + kEndOfDirectorySize + fields.at<uint16_t>(pos + 20) != tail_size) continue;
    Directory dir{fields.at<uint16_t>(pos + 10), fields.at<uint32_t>(pos + 12), fields.at<uint32_t>(pos + 16)};
    const uint64_t end_record = tail_start + pos;
    if (end_record >= 20) {
      const std::vector<unsigned char> locator_bytes = zip.read(end_record - 20, 20);
      const Fields locator(locator_bytes, zip.name());
      if (locator.at<uint32_t>(0) == kZip64Locator) {
        const std::vector<unsigned char> record_bytes = zip.read(locator.at<uint64_t>(8), 56);
        const Fields record(record_bytes, zip.name());
        BR_CHECK(record.at<uint32_t>(0) == kZip64EndOfDirectory, zip.name(),
                 " is damaged: its zip64 directory record is missing");
        dir = {record.at<uint64_t>(32), record.at<uint64_t>(40), record.at<uint64_t>(48)};
      }
    }
    return dir;
  }
  throw Error(zip.name() + " is not a readable archive (no zip directory at its end: truncated, or not a Torch archive)");
}

}  // namespace

std::string record_lookup_name(std::string name) {
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

FileBytes read_file_bytes(const std::string& path, const std::string& what) {
  FileBytes file{what + " " + path, {}};
  // (a path that cannot even be inspected throws filesystem_error, which the CLI names as such)
  BR_CHECK(std::filesystem::exists(path), file.name, " does not exist");
  BR_CHECK(std::filesystem::is_regular_file(path), file.name, " is not a regular file");
  struct Close {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  const std::unique_ptr<std::FILE, Close> in(std::fopen(path.c_str(), "rb"));
  BR_CHECK(in != nullptr, file.name, ": cannot open it (", std::strerror(errno), ")");
  // The size of the file as opened (not of the path, which another process may point elsewhere).
  struct stat info {};
  BR_CHECK(fstat(fileno(in.get()), &info) == 0 && S_ISREG(info.st_mode), file.name, " is not a regular file");
  file.bytes.resize(static_cast<size_t>(info.st_size));
  const size_t got = std::fread(file.bytes.data(), 1, file.bytes.size(), in.get());
  BR_CHECK(got == file.bytes.size() && std::fgetc(in.get()) == EOF && !std::ferror(in.get()), file.name,
           ": cannot read its ", file.bytes.size(), " bytes (the file changed while being read, or a read error)");
  return file;
}

std::vector<ZipRecord> read_zip_directory(const FileBytes& file) {
  const ZipFile zip(file);
  const Directory dir = find_directory(zip);
  const std::vector<unsigned char> bytes = zip.read(dir.offset, dir.size);
  const Fields fields(bytes, zip.name());
  std::vector<ZipRecord> records;
  size_t pos = 0;
  for (uint64_t i = 0; i < dir.entries; ++i) {
    BR_CHECK(fields.at<uint32_t>(pos) == kDirectoryEntry, zip.name(), " is damaged: zip directory entry ", i,
             " of ", dir.entries, " is not where the directory says");
    ZipRecord record;
    record.method = fields.at<uint16_t>(pos + 10);
    record.crc32 = fields.at<uint32_t>(pos + 16);
    record.size = fields.at<uint32_t>(pos + 20);
    record.uncompressed_size = fields.at<uint32_t>(pos + 24);
    const size_t name_size = fields.at<uint16_t>(pos + 28), extra_size = fields.at<uint16_t>(pos + 30);
    const size_t comment_size = fields.at<uint16_t>(pos + 32);
    uint64_t local_offset = fields.at<uint32_t>(pos + 42);
    BR_CHECK(pos + 46 + name_size + extra_size + comment_size <= bytes.size(), zip.name(),
             " is damaged: zip directory entry ", i, " is cut short");
    record.name = printable(std::string(reinterpret_cast<const char*>(bytes.data()) + pos + 46, name_size));
    // Sizes and offsets past 4 GiB live in the zip64 extra field, in this order, for those saturated.
    const size_t extra_end = pos + 46 + name_size + extra_size;
    for (size_t e = pos + 46 + name_size; e + 4 <= extra_end;) {
      const uint16_t id = fields.at<uint16_t>(e), length = fields.at<uint16_t>(e + 2);
      BR_CHECK(e + 4 + length <= extra_end, zip.name(), " is damaged: an extra field of ", record.name,
               " reaches past its entry");
      if (id == 0x0001) {
        size_t field = e + 4;
        for (uint64_t* value : {&record.uncompressed_size, &record.size, &local_offset}) {
          if (*value != 0xFFFFFFFFu) continue;
          BR_CHECK(field + 8 <= e + 4 + length, zip.name(), " is damaged: a zip64 field of ", record.name, " is cut short");
          *value = fields.at<uint64_t>(field);
          field += 8;
        }
      }
      e += 4 + static_cast<size_t>(length);
    }
    const std::vector<unsigned char> header_bytes = zip.read(local_offset, 30);
    const Fields header(header_bytes, zip.name());
    BR_CHECK(header.at<uint32_t>(0) == kLocalHeader, zip.name(), " is damaged: record ", record.name,
             " is not where its directory entry says");
    record.data_offset = local_offset + 30 + header.at<uint16_t>(26) + header.at<uint16_t>(28);
    BR_CHECK(record.data_offset <= zip.size() && record.size <= zip.size() - record.data_offset, zip.name(),
             " is damaged: record ", record.name, " reaches past the end of the file");
    records.push_back(std::move(record));
    pos += 46 + name_size + extra_size + comment_size;
  }
  // Every entry read, and no entry sharing another's bytes: each byte is checked at most once, so a
  // damaged directory cannot multiply the work (nor make records overlap, which no writer does).
  BR_CHECK(!records.empty(), zip.name(), " is damaged: its zip directory lists no records");
  BR_CHECK(pos == bytes.size(), zip.name(), " is damaged: its zip directory holds ", bytes.size(), " bytes but its ",
           dir.entries, " entries fill ", pos);
  // Two entries of one name: readers disagree on which one counts (LibTorch takes the later).
  std::vector<const ZipRecord*> by_name;
  for (const ZipRecord& record : records) by_name.push_back(&record);
  std::sort(by_name.begin(), by_name.end(), [](const ZipRecord* a, const ZipRecord* b) { return a->name < b->name; });
  for (size_t i = 1; i < by_name.size(); ++i) {
    BR_CHECK(by_name[i]->name != by_name[i - 1]->name, zip.name(), " is damaged: its zip directory lists record ",
             by_name[i]->name, " twice");
  }
  std::vector<const ZipRecord*> by_offset;
  for (const ZipRecord& record : records) by_offset.push_back(&record);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipRecord* a, const ZipRecord* b) { return a->data_offset < b->data_offset; });
  uint64_t end = 0;
  for (const ZipRecord* record : by_offset) {
    BR_CHECK(record->data_offset >= end + 30, zip.name(), " is damaged: record ", record->name,
             " overlaps the one before it");
    end = record->data_offset + record->size;
  }
  BR_CHECK(end <= dir.offset, zip.name(), " is damaged: a record overlaps the zip directory");
  return records;
}

namespace {

// Torch deflates only TorchScript code and its debug records (kilobytes); a larger size can only be
// damage, or a stream made to expand a thousandfold.
constexpr uint64_t kMaxInflatedSize = uint64_t{256} << 20;

/// Inflates a deflated record, handing each piece of its bytes to `sink`; false if they are no
/// deflate stream of exactly the record's bytes inflating to exactly its uncompressed size.
template <typename Sink>
bool inflate_record(const ZipFile& zip, const ZipRecord& record, Sink&& sink) {
  BR_CHECK(record.uncompressed_size <= kMaxInflatedSize, zip.name(), " is damaged: its deflated record ",
           record.name, " claims ", record.uncompressed_size, " bytes");
  z_stream stream{};
  const int started = inflateInit2(&stream, -MAX_WBITS);  // raw deflate, no header
  BR_CHECK(started == Z_OK, zip.name(), ": zlib cannot inflate record ", record.name, " (", started, ")");
  struct End {
    z_stream* stream;
    ~End() { inflateEnd(stream); }
  } end{&stream};
  std::vector<unsigned char> out(1 << 16);
  const unsigned char* data = zip.at(record.data_offset, record.size);
  uint64_t read = 0, inflated = 0;
  int status = Z_OK;
  while (status == Z_OK) {
    if (stream.avail_in == 0 && read < record.size) {  // in pieces: avail_in is 32 bits wide
      const uint64_t count = std::min<uint64_t>(uint64_t{1} << 30, record.size - read);
      stream.next_in = const_cast<unsigned char*>(data + read);  // zlib's API is not const; it only reads
      stream.avail_in = static_cast<uInt>(count);
      read += count;
    }
    stream.next_out = out.data();
    stream.avail_out = static_cast<uInt>(out.size());
    status = inflate(&stream, Z_NO_FLUSH);
    const size_t produced = out.size() - stream.avail_out;
    inflated += produced;
    // More than the directory promises: damaged (and a damaged stream could expand a thousandfold).
    if (inflated > record.uncompressed_size) break;
    sink(out.data(), produced);
    if (status == Z_BUF_ERROR) {  // no progress: only more input can help
      if (stream.avail_in != 0 || read == record.size) break;  // none left: the data ends early
      status = Z_OK;
    }
  }
  BR_CHECK(status != Z_MEM_ERROR, zip.name(), ": out of memory inflating record ", record.name);
  return status == Z_STREAM_END && inflated == record.uncompressed_size && read == record.size && stream.avail_in == 0;
}

/// The CRC-32 of a deflated record's inflated bytes; nullopt if inflate_record fails.
std::optional<uint32_t> inflated_crc32(const ZipFile& zip, const ZipRecord& record) {
  uLong crc = crc32_z(0L, Z_NULL, 0);
  if (!inflate_record(zip, record, [&crc](const unsigned char* bytes, size_t n) { crc = crc32_z(crc, bytes, n); }))
    return std::nullopt;
  return static_cast<uint32_t>(crc);
}

}  // namespace

std::vector<ZipRecord> verify_zip_checksums(const FileBytes& file) {
  const std::vector<ZipRecord> records = read_zip_directory(file);
  const ZipFile zip(file);
  for (const ZipRecord& record : records) {
    std::optional<uint32_t> crc;
    if (record.method == 0) {
      const uLong sum = crc32_z(crc32_z(0L, Z_NULL, 0), zip.at(record.data_offset, record.size), record.size);
      if (record.size == record.uncompressed_size) crc = static_cast<uint32_t>(sum);
    } else {
      BR_CHECK(record.method == 8, zip.name(), ": record ", record.name, " uses zip compression method ",
               record.method, ", which Torch archives do not (damaged file?)");
      crc = inflated_crc32(zip, record);
    }
    BR_CHECK(crc == record.crc32, zip.name(), " is damaged: its record ", record.name,
             " does not match the checksum written with it (the file changed after it was saved)");
  }
  return records;
}

std::string read_zip_record(const FileBytes& file, const ZipRecord& record, uint64_t max_bytes) {
  const ZipFile zip(file);
  BR_CHECK(record.uncompressed_size <= max_bytes, zip.name(), ": its record ", record.name, " holds ",
           record.uncompressed_size, " bytes, more than the ", max_bytes, " such a record may");
  if (record.method == 0) {
    BR_CHECK(record.size == record.uncompressed_size, zip.name(), " is damaged: its stored record ", record.name,
             " has two sizes");
    return std::string(reinterpret_cast<const char*>(zip.at(record.data_offset, record.size)), record.size);
  }
  BR_CHECK(record.method == 8, zip.name(), ": record ", record.name, " uses zip compression method ", record.method,
           ", which Torch archives do not (damaged file?)");
  std::string text;
  const bool complete = inflate_record(zip, record, [&text](const unsigned char* bytes, size_t n) {
    text.append(reinterpret_cast<const char*>(bytes), n);
  });
  BR_CHECK(complete, zip.name(), " is damaged: its record ", record.name, " does not inflate");
  return text;
}

}  // namespace bitrobust::io
