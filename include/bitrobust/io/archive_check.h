#pragma once
// NOTE [Archive code records]: a Torch archive written by torch::serialize::OutputArchive (a model
// file, a checkpoint) describes its modules as TorchScript source, one record per class under
// code/, which LibTorch parses with its TorchScript compiler while loading. The modules of such an
// archive hold attributes only (tensors, strings, numbers, submodules), so their source is a few
// fixed forms: the class line, __parameters__ and __buffers__ lists, and one typed declaration per
// attribute (python_print.cpp's printClass). LibTorch 1.13's compiler crashes on some malformed
// sources (a declaration without a type that it takes for a class constant dereferences a null
// type: found by fuzz/fuzz_model_file.cpp), and the checksums of NOTE [Record checksums] cannot
// tell a damaged record from one written that way. So before LibTorch reads an archive, every line
// of its code records must have one of those forms.
//
// NOTE [Archive pickles]: the archive's values (data.pkl, constants.pkl, the code records' debug
// pickles) are pickles, which LibTorch's Unpickler trusts in ways a damaged or crafted record
// exploits: a memo index is a size (LONG_BINPUT 1986619491 made LibTorch 1.13 allocate 32 GB: also
// found by fuzz/fuzz_model_file.cpp), and lengths and stack depths are taken as given. Pickler
// writes memo indices in order, every length within its record and never an operation on fewer
// values than it needs, so every pickle record must be such a stream of the opcodes Pickler writes,
// calling only the globals an archive of tensors needs (a review found quantized tensors, subclass
// rebuilds and custom classes reachable otherwise), nested at most 64 deep (LibTorch recurses), and
// with every storage the size of its record (LibTorch takes the pickle's size and copies that many
// bytes to a GPU). Record names are compared without case, as LibTorch finds them.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bitrobust/io/zip_checksums.h"

namespace bitrobust::io {

/// Checks an archive's code and pickle records before LibTorch parses them: Error "<what> <path> is
/// damaged or not written by bitrobust: ..." naming the record (and line or byte offset) for the first
/// code line an archive of attribute-only modules never holds (NOTE [Archive code records]) or the
/// first pickle that is no stream Pickler writes (NOTE [Archive pickles]).
void check_archive_records(const FileBytes& file, const std::vector<ZipRecord>& records);

/// Whether `line` is a line of an attribute-only module's code record (exposed for tests).
bool is_attribute_module_line(const std::string& line);

/// The bytes of the record holding storage `key` of a pickle, or nullopt if there is none.
using StorageSizes = std::function<std::optional<uint64_t>(const std::string& key)>;

/// "" if `pickle` is a stream of the kind NOTE [Archive pickles] describes, every storage it names
/// filling exactly its record (`storage_bytes`; none allowed without it), else what is wrong with
/// it, at which byte (exposed for tests).
std::string pickle_problem(const std::string& pickle, const StorageSizes& storage_bytes = nullptr);

}  // namespace bitrobust::io
