#pragma once
// Test helper: copies of Torch archives (model files, checkpoints) with one data record damaged.
#include <caffe2/serialize/inline_container.h>

#include "bitrobust/io/zip_checksums.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <tuple>
#include <vector>

namespace bitrobust::test_util {

/// Records PyTorchStreamWriter adds by itself (LibTorch 1.13: version; 2.x also byteorder and
/// serialization_id): a copy must not write them again.
inline bool written_by_the_writer(const std::string& name) {
  for (const char* record : {"version", "byteorder", "serialization_id"})
    if (name.find(record) != std::string::npos) return true;
  return false;
}

/// How copy_archive makes up for the bytes it cuts, so that the data records' total stays the same.
enum class MakeUp { Nothing, PadAnother, ExtraRecord };

/// Copies the Torch archive `from` to `to`, record by record; with `cut`, its largest data record
/// (the bytes of the largest tensor storage) is cut to 16 bytes while the zip itself stays intact:
/// what a damaged file looks like to LibTorch, which would hand out tensors reading past their data
/// (NOTE [Damaged model files]). `make_up` then adds the bytes cut to the smallest other data record
/// or as a data record of its own. With `garble`, every data record of 64 bytes or more (weights and
/// momentum buffers, not counters) keeps its length but holds 0xFF bytes (NaN as float32). Returns the size the cut record had (0 without `cut`).
inline size_t copy_archive(const std::string& from, const std::string& to, bool cut, bool garble = false,
                           MakeUp make_up = MakeUp::Nothing) {
  caffe2::serialize::PyTorchStreamReader reader(from);
  std::string largest, smallest;
  size_t largest_size = 0, smallest_size = SIZE_MAX;
  for (const std::string& name : reader.getAllRecords()) {
    if (name.find("data/") == std::string::npos) continue;
    const size_t size = std::get<1>(reader.getRecord(name));
    if (size > largest_size) std::tie(largest, largest_size) = std::make_tuple(name, size);
  }
  for (const std::string& name : reader.getAllRecords()) {
    if (name.find("data/") == std::string::npos || name == largest) continue;
    const size_t size = std::get<1>(reader.getRecord(name));
    if (size < smallest_size) std::tie(smallest, smallest_size) = std::make_tuple(name, size);
  }
  const std::vector<char> cut_bytes(cut && make_up != MakeUp::Nothing ? largest_size - 16 : 0, '\0');
  caffe2::serialize::PyTorchStreamWriter writer(to);
  for (const std::string& name : reader.getAllRecords()) {
    if (written_by_the_writer(name)) continue;
    auto [data, size] = reader.getRecord(name);
    if (garble && name.find("data/") != std::string::npos && size >= 64) {  // tensors, not counters
      std::vector<char> bytes(size, static_cast<char>(0xFF));
      writer.writeRecord(name, bytes.data(), size);
      continue;
    }
    if (make_up == MakeUp::PadAnother && name == smallest && !cut_bytes.empty()) {
      std::vector<char> bytes(static_cast<const char*>(data.get()), static_cast<const char*>(data.get()) + size);
      bytes.insert(bytes.end(), cut_bytes.begin(), cut_bytes.end());
      writer.writeRecord(name, bytes.data(), bytes.size());
      continue;
    }
    writer.writeRecord(name, data.get(), cut && name == largest ? 16 : size);
  }
  if (make_up == MakeUp::ExtraRecord && !cut_bytes.empty()) {
    writer.writeRecord(largest + "0", cut_bytes.data(), cut_bytes.size());  // ("data/N0", a key no storage has)
  }
  writer.writeEndOfFile();
  return cut ? largest_size : 0;
}

/// Copies `from` to `to` byte for byte, but for one bit flipped in the middle of its largest record:
/// a file damaged at rest, its zip structure intact (NOTE [Record checksums]). Returns that record's
/// name as stored.
inline std::string copy_with_flipped_bit(const std::string& from, const std::string& to) {
  io::ZipRecord largest;
  for (const io::ZipRecord& record : io::read_zip_directory(from, "archive")) {
    if (record.size > largest.size) largest = record;
  }
  std::ifstream in(from, std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  bytes.at(largest.data_offset + largest.size / 2) ^= 0x10;
  std::ofstream(to, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return largest.name;
}

/// Copies the Torch archive `from` to `to` record by record, with `edit` applied to the text of every
/// record whose name contains `part`: a file written that way, its checksums in order. Returns the
/// number of records edited.
template <typename Edit>
size_t copy_with_record_edited(const std::string& from, const std::string& to, const std::string& part, Edit&& edit) {
  caffe2::serialize::PyTorchStreamReader reader(from);
  caffe2::serialize::PyTorchStreamWriter writer(to);
  size_t edited = 0;
  for (const std::string& name : reader.getAllRecords()) {
    if (written_by_the_writer(name)) continue;
    auto [data, size] = reader.getRecord(name);
    std::string text(static_cast<const char*>(data.get()), size);
    if (name.find(part) != std::string::npos) {
      text = edit(text);
      ++edited;
    }
    writer.writeRecord(name, text.data(), text.size());
  }
  writer.writeEndOfFile();
  return edited;
}

/// Copies the Torch archive `from` to `to` with its record `name` (as getAllRecords lists it, e.g.
/// "data.pkl") also written, or only written, as `new_name` holding `text`.
inline void copy_with_record_renamed(const std::string& from, const std::string& to, const std::string& name,
                                     const std::string& new_name, const std::string& text, bool keep_original) {
  caffe2::serialize::PyTorchStreamReader reader(from);
  caffe2::serialize::PyTorchStreamWriter writer(to);
  for (const std::string& record : reader.getAllRecords()) {
    if (written_by_the_writer(record)) continue;
    if (record == name) {
      writer.writeRecord(new_name, text.data(), text.size());
      if (!keep_original) continue;
    }
    auto [data, size] = reader.getRecord(record);
    writer.writeRecord(record, data.get(), size);
  }
  writer.writeEndOfFile();
}

}  // namespace bitrobust::test_util
