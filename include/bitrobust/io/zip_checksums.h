#pragma once
// NOTE [Record checksums]: a Torch archive is a zip file whose central directory holds the CRC-32 of
// every record, but LibTorch's reader does not compare them: a model file with a flipped byte in a
// weight record loads without a word and evaluates a different network (measured with LibTorch
// 1.13: a byte flipped inside a 3.2 MB record, `bitrobust test` exit 0). For a tool that measures
// what flipped bits do, a file damaged at rest must be an error, so every archive bitrobust loads
// is checked here, record by record, against the checksums written with it.
#include <cstdint>
#include <string>
#include <vector>

namespace bitrobust::io {

struct ZipRecord {
  std::string name;             ///< as stored, archive folder included ("archive/data/0"); bytes
                                ///< outside printable ASCII, and backslashes, written as \xHH
  uint32_t crc32 = 0;           ///< the checksum the central directory holds
  uint64_t size = 0;            ///< bytes in the file
  uint64_t uncompressed_size = 0;
  uint64_t data_offset = 0;     ///< where the record's bytes start in the file
  uint16_t method = 0;          ///< 0: stored (Torch's tensors and pickles), 8: deflated (some of its code)
};

/// A record name as LibTorch (miniz) looks records up: without regard to ASCII case.
std::string record_lookup_name(std::string name);

/// A file's bytes, read once. The checks below and LibTorch's load (InputArchive::load_from(data,
/// size)) all read these bytes, so a file that another process rewrites between the checks and the
/// load cannot get past them; a load holds the file's size in memory once more while it runs.
struct FileBytes {
  std::string name;   ///< "<what> <path>", how messages name the file
  std::string bytes;
};

/// Throws bitrobust::Error "<what> <path> does not exist" (or is not a regular file, or cannot be
/// read in full).
FileBytes read_file_bytes(const std::string& path, const std::string& what);

/// The records of a zip file, from its central directory (zip64 included). Throws bitrobust::Error
/// "<what> <path> ..." when the directory cannot be read or points outside the file.
std::vector<ZipRecord> read_zip_directory(const FileBytes& file);

/// Compares every record's bytes (inflated, for deflated records) with its CRC-32 and its size;
/// throws bitrobust::Error "<what> <path> is damaged: its record NAME does not match the checksum
/// written with it" at the first that differs. Returns the records, all checked.
std::vector<ZipRecord> verify_zip_checksums(const FileBytes& file);

/// The bytes of one record (inflated, for deflated records), for small records only: Error if it
/// holds more than max_bytes, or does not inflate to its size.
std::string read_zip_record(const FileBytes& file, const ZipRecord& record, uint64_t max_bytes);

/// The same, reading the file at `path` first (for tests and tools that look at one file once).
inline std::vector<ZipRecord> read_zip_directory(const std::string& path, const std::string& what) {
  return read_zip_directory(read_file_bytes(path, what));
}
inline std::vector<ZipRecord> verify_zip_checksums(const std::string& path, const std::string& what) {
  return verify_zip_checksums(read_file_bytes(path, what));
}
inline std::string read_zip_record(const std::string& path, const ZipRecord& record, const std::string& what,
                                   uint64_t max_bytes) {
  return read_zip_record(read_file_bytes(path, what), record, max_bytes);
}

}  // namespace bitrobust::io
