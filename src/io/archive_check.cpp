// NOTE [Archive code records] and NOTE [Archive pickles] in bitrobust/io/archive_check.h.
#include "bitrobust/io/archive_check.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitrobust/common/error.h"

namespace bitrobust::io {
namespace {

// The largest code record bitrobust writes is a module listing one buffer per quantized tensor:
// tens of kilobytes for the largest networks.
constexpr uint64_t kMaxCodeRecordBytes = uint64_t{16} << 20;
// data.pkl lists every tensor (about a hundred bytes each) and the metadata: kilobytes to a megabyte.
constexpr uint64_t kMaxPickleRecordBytes = uint64_t{16} << 20;
// List[Dict[str, Tuple[int, ...]]] is three deep; deeper nesting is no attribute of ours.
constexpr int kMaxTypeDepth = 8;

/// Up to 80 characters of a record's text for a message, bytes outside printable ASCII as '?'.
std::string shown(const std::string& text) {
  std::string out;
  for (const char ch : text.substr(0, 80)) {
    const auto byte = static_cast<unsigned char>(ch);
    out += byte >= 0x20 && byte < 0x7F ? ch : '?';
  }
  return out;
}

bool ends_with(const std::string& name, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
}

/// Reads the line left to right; every method consumes on success only.
class Cursor {
 public:
  explicit Cursor(const std::string& text) : text_(text) {}
  bool done() const { return at_ == text_.size(); }
  bool literal(const char* s) {
    size_t i = at_;
    for (; *s; ++s, ++i)
      if (i >= text_.size() || text_[i] != *s) return false;
    at_ = i;
    return true;
  }
  bool identifier() {
    size_t i = at_;
    if (i >= text_.size() || !(std::isalpha(static_cast<unsigned char>(text_[i])) || text_[i] == '_')) return false;
    while (i < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[i])) || text_[i] == '_')) ++i;
    at_ = i;
    return true;
  }
  bool digits() {
    size_t i = at_;
    while (i < text_.size() && std::isdigit(static_cast<unsigned char>(text_[i]))) ++i;
    if (i == at_) return false;
    at_ = i;
    return true;
  }
  /// "..." holding printable ASCII other than quotes and backslashes (attribute names).
  bool quoted_name() {
    size_t i = at_;
    if (i >= text_.size() || text_[i] != '"') return false;
    for (++i; i < text_.size() && text_[i] != '"'; ++i) {
      const auto c = static_cast<unsigned char>(text_[i]);
      if (c < 0x20 || c >= 0x7F || c == '\\') return false;
    }
    if (i >= text_.size()) return false;
    at_ = i + 1;
    return true;
  }
  /// A type as annotation_str prints an attribute's: a builtin, a class of the archive
  /// (__torch__.a.b.C), or a container of types.
  bool type(int depth = 0) {
    const size_t start = at_;
    if (depth > kMaxTypeDepth) return false;
    for (const char* builtin : {"Tensor", "str", "int", "float", "bool", "NoneType", "complex", "Device"}) {
      if (literal(builtin) && !word_continues()) return true;
      at_ = start;
    }
    // The archive's own classes only: __torch__.Module, __torch__.___torch_mangle_7.Module (not
    // __torch__.torch.classes..., LibTorch's custom C++ classes).
    if (literal("__torch__.")) {
      if (literal("___torch_mangle_")) {
        if (!digits() || !literal(".")) return fail(start);
      }
      return identifier() && !literal(".") ? true : fail(start);
    }
    for (const char* container : {"List[", "Dict[", "Optional[", "Tuple["}) {
      if (!literal(container)) continue;
      if (!type(depth + 1)) return fail(start);
      while (literal(", "))
        if (!type(depth + 1)) return fail(start);
      return literal("]") ? true : fail(start);
    }
    return false;
  }

 private:
  bool word_continues() const {
    return at_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[at_])) || text_[at_] == '_');
  }
  bool fail(size_t start) {
    at_ = start;
    return false;
  }
  const std::string& text_;
  size_t at_ = 0;
};

/// `  NAME = ["a", "b", ]`: the lists printClass writes, each entry followed by ", ".
bool name_list(Cursor& c) {
  if (!c.literal(" = [")) return false;
  while (c.quoted_name())
    if (!c.literal(", ")) return false;
  return c.literal("]") && c.done();
}

}  // namespace

bool is_attribute_module_line(const std::string& line) {
  if (line.empty()) return true;
  {
    Cursor c(line);
    if (c.literal("class ")) return c.identifier() && c.literal("(Module):") && c.done();
  }
  Cursor c(line);
  if (!c.literal("  ")) return false;
  for (const char* list : {"__parameters__", "__buffers__", "__forward_pre_hooks__", "__forward_hooks__"}) {
    Cursor l = c;
    if (l.literal(list)) return name_list(l);
  }
  {
    Cursor a = c;
    if (a.literal("__annotations__")) {
      if (a.literal(" = []")) return a.done();
      return a.literal("[") && a.quoted_name() && a.literal("] = ") && a.type() && a.done();
    }
  }
  return c.identifier() && c.literal(" : ") && c.type() && c.done();
}

namespace {

// Deeper values than this are no attribute of ours (a module's tensor is about six levels down), and
// LibTorch destroys and hashes values recursively: a million nested tuples overflow its stack.
constexpr int kMaxPickleDepth = 64;

/// What the scan knows of a value on the Unpickler's stack.
struct PickleValue {
  enum class Kind { Other, String, Int, Global, Tuple, Object } kind = Kind::Other;
  std::string text;  ///< String: its value; Global: "module\nname"
  int64_t number = 0;
  int depth = 1;     ///< nesting: a scalar 1, a container 1 + its deepest element
  std::shared_ptr<const std::vector<PickleValue>> items;  ///< Tuple: its elements (shared: memo copies)
};

bool is_identifier_text(const std::string& s) {
  Cursor c(s);
  return c.identifier() && c.done();
}

/// Bytes per element of torch.<name>, for the storages an archive of tensors holds; 0 if none.
int64_t storage_element_size(const std::string& name) {
  static const std::pair<const char*, int64_t> kSizes[] = {
      {"FloatStorage", 4}, {"DoubleStorage", 8}, {"HalfStorage", 2}, {"BFloat16Storage", 2}, {"LongStorage", 8},
      {"IntStorage", 4},   {"ShortStorage", 2},  {"CharStorage", 1}, {"ByteStorage", 1},     {"BoolStorage", 1}};
  for (const auto& [storage, bytes] : kSizes)
    if (name == storage) return bytes;
  return 0;
}

/// The globals Torch's Pickler writes for an archive of tensors, strings, numbers and modules.
/// (Quantized, sparse and subclassed tensors, custom C++ classes and everything else call code
/// that trusts its arguments further.)
bool allowed_global(const std::string& module, const std::string& name) {
  if (module == "torch._utils") return name == "_rebuild_tensor_v2";
  if (module == "collections") return name == "OrderedDict";
  if (module == "torch") return name == "device" || storage_element_size(name) > 0;
  if (module == "builtins") return name == "complex";
  if (module == "torch.jit._pickle") {
    return name == "restore_type_tag" || name == "build_intlist" || name == "build_tensorlist" ||
           name == "build_doublelist" || name == "build_boollist";
  }
  // The archive's own module classes: __torch__.Module, __torch__.___torch_mangle_7.Module.
  const std::string mangle = "__torch__.___torch_mangle_";
  const bool own = module == "__torch__" ||
                   (module.compare(0, mangle.size(), mangle) == 0 && module.size() > mangle.size() &&
                    module.find_first_not_of("0123456789", mangle.size()) == std::string::npos);
  return own && is_identifier_text(name);
}

}  // namespace

std::string pickle_problem(const std::string& pickle, const StorageSizes& storage_bytes) {
  using Kind = PickleValue::Kind;
  const auto* bytes = reinterpret_cast<const unsigned char*>(pickle.data());
  const size_t size = pickle.size();
  size_t at = 0;
  std::vector<PickleValue> stack;
  std::vector<size_t> marks;  // stack sizes at each open MARK
  std::vector<PickleValue> memo;
  const auto problem = [&](size_t where, const std::string& what) {
    return what + " at byte " + std::to_string(where);
  };
  const auto le = [&](size_t from, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{bytes[from + static_cast<size_t>(i)]} << (8 * i);
    return v;
  };
  const auto floor = [&] { return marks.empty() ? size_t{0} : marks.back(); };
  while (at < size) {
    const size_t op_at = at;
    const unsigned char op = bytes[at++];
    // Values an operation takes from above the innermost MARK.
    const auto take = [&](size_t n, std::vector<PickleValue>& out) {
      if (stack.size() - floor() < n) return false;
      out.assign(std::make_move_iterator(stack.end() - static_cast<std::ptrdiff_t>(n)), std::make_move_iterator(stack.end()));
      stack.resize(stack.size() - n);
      return true;
    };
    const auto to_mark = [&](std::vector<PickleValue>& out) {
      if (marks.empty()) return false;
      out.assign(std::make_move_iterator(stack.begin() + static_cast<std::ptrdiff_t>(marks.back())),
                 std::make_move_iterator(stack.end()));
      stack.resize(marks.back());
      marks.pop_back();
      return true;
    };
    const auto deepest = [](const std::vector<PickleValue>& values) {
      int d = 0;
      for (const PickleValue& v : values) d = std::max(d, v.depth);
      return d;
    };
    const auto tuple_of = [&](std::vector<PickleValue> values) {
      PickleValue t;
      t.kind = Kind::Tuple;
      t.depth = 1 + deepest(values);
      t.items = std::make_shared<const std::vector<PickleValue>>(std::move(values));
      return t;
    };
    const auto need = [&](size_t n) { return size - at >= n; };
    std::vector<PickleValue> args;
    PickleValue value;  // what the operation pushes, if push
    bool push = true;
    switch (op) {
      case 0x80:  // PROTO
        if (!need(1)) return problem(op_at, "an argument cut short");
        at += 1;
        push = false;
        break;
      case '.':  // STOP
        if (!marks.empty() || stack.size() != 1) return problem(op_at, "STOP with values or MARKs left");
        return "";
      case '(':  // MARK
        marks.push_back(stack.size());
        push = false;
        break;
      case 'N': case 0x88: case 0x89: case ']': case '}':  // None, True, False, [], {}
        break;
      case ')':  // EMPTY_TUPLE
        value = tuple_of({});
        break;
      case 'K': case 'M': case 'J': {  // BININT1, BININT2, BININT
        const int n = op == 'K' ? 1 : op == 'M' ? 2 : 4;
        if (!need(static_cast<size_t>(n))) return problem(op_at, "an argument cut short");
        value.kind = Kind::Int;
        value.number = op == 'J' ? static_cast<int32_t>(le(at, 4)) : static_cast<int64_t>(le(at, n));
        at += static_cast<size_t>(n);
        break;
      }
      case 0x8a: {  // LONG1: Pickler writes 8 bytes
        if (!need(1)) return problem(op_at, "a LONG1 cut short");
        const size_t n = bytes[at];
        if (n != 8) return problem(op_at, "a LONG1 of " + std::to_string(n) + " bytes");
        if (!need(1 + n)) return problem(op_at, "an argument cut short");
        value.kind = Kind::Int;
        value.number = static_cast<int64_t>(le(at + 1, 8));
        at += 1 + n;
        break;
      }
      case 'G':  // BINFLOAT
        if (!need(8)) return problem(op_at, "an argument cut short");
        at += 8;
        break;
      case 'X': {  // BINUNICODE
        if (!need(4)) return problem(op_at, "a string length cut short");
        const uint64_t n = le(at, 4);
        if (n > size - at - 4) return problem(op_at, "a string of " + std::to_string(n) + " bytes in a record of " +
                                                         std::to_string(size));
        value.kind = Kind::String;
        value.text.assign(pickle, at + 4, static_cast<size_t>(n));
        at += 4 + static_cast<size_t>(n);
        break;
      }
      case 'c': {  // GLOBAL: module\nname\n
        const size_t first = pickle.find('\n', at);
        const size_t second = first == std::string::npos ? first : pickle.find('\n', first + 1);
        if (second == std::string::npos) return problem(op_at, "a GLOBAL without its two lines");
        const std::string module = pickle.substr(at, first - at), name = pickle.substr(first + 1, second - first - 1);
        if (!allowed_global(module, name))
          return problem(op_at, "global " + shown(module + "." + name) + ", which an archive of tensors does not call");
        value.kind = Kind::Global;
        value.text = module + "\n" + name;
        at = second + 1;
        break;
      }
      case 'q': case 'r': case 'h': case 'j': {  // BINPUT, LONG_BINPUT, BINGET, LONG_BINGET
        const size_t n = op == 'q' || op == 'h' ? 1 : 4;
        if (!need(n)) return problem(op_at, "a memo index cut short");
        const uint64_t index = le(at, static_cast<int>(n));
        at += n;
        if (op == 'q' || op == 'r') {  // memoizes the top value, which stays
          if (index != memo.size())
            return problem(op_at, "memo index " + std::to_string(index) + " after " + std::to_string(memo.size()) +
                                      " entries");
          if (stack.size() == floor()) return problem(op_at, "an operation on fewer values than it takes");
          memo.push_back(stack.back());
          push = false;
        } else {
          if (index >= memo.size())
            return problem(op_at, "memo index " + std::to_string(index) + " read before it is written");
          value = memo[static_cast<size_t>(index)];
        }
        break;
      }
      case 0x85: case 0x86: case 0x87:  // TUPLE1, TUPLE2, TUPLE3
        if (!take(static_cast<size_t>(op - 0x84), args)) return problem(op_at, "an operation on fewer values than it takes");
        value = tuple_of(std::move(args));
        break;
      case 't':  // TUPLE
        if (!to_mark(args)) return problem(op_at, "an operation to a MARK without one");
        value = tuple_of(std::move(args));
        break;
      case 'e': case 'u': {  // APPENDS, SETITEMS: into the list or dict below the MARK
        if (!to_mark(args)) return problem(op_at, "an operation to a MARK without one");
        if (stack.size() == floor()) return problem(op_at, "APPENDS or SETITEMS without a list or dict");
        if (op == 'u' && args.size() % 2 != 0) return problem(op_at, "SETITEMS with an odd number of values");
        stack.back().depth = std::max(stack.back().depth, 1 + deepest(args));
        value = std::move(stack.back());
        stack.pop_back();
        break;
      }
      case 0x81: {  // NEWOBJ: one of the archive's module classes, ()
        if (!take(2, args)) return problem(op_at, "an operation on fewer values than it takes");
        if (args[0].kind != Kind::Global || args[0].text.compare(0, 9, "__torch__") != 0 || args[1].kind != Kind::Tuple)
          return problem(op_at, "NEWOBJ of something other than a module class");
        value.kind = Kind::Object;
        break;
      }
      case 'b':  // BUILD: an object's attributes
        if (!take(2, args)) return problem(op_at, "an operation on fewer values than it takes");
        if (args[0].kind != Kind::Object) return problem(op_at, "BUILD of something other than an object");
        value = std::move(args[0]);
        value.depth = std::max(value.depth, 1 + args[1].depth);
        break;
      case 'R': {  // REDUCE: an allowed global, applied to a tuple
        if (!take(2, args)) return problem(op_at, "an operation on fewer values than it takes");
        if (args[0].kind != Kind::Global || args[1].kind != Kind::Tuple)
          return problem(op_at, "REDUCE of something other than a global and a tuple");
        if (args[0].text == "torch.jit._pickle\nrestore_type_tag") {
          // The type's text goes to LibTorch's TorchScript type parser.
          const auto& items = *args[1].items;
          const std::string text = items.size() == 2 && items[1].kind == Kind::String ? items[1].text : "?";
          Cursor type(text);  // (holds a reference: the text must outlive it)
          if (!type.type() || !type.done()) return problem(op_at, "a type tag that is no type of an attribute");
        }
        value.depth = 1 + args[1].depth;
        break;
      }
      case 'Q': {  // BINPERSID: ("storage", torch.<T>Storage, key, location, numel)
        if (!take(1, args)) return problem(op_at, "an operation on fewer values than it takes");
        const PickleValue& id = args[0];
        const std::vector<PickleValue>* f = id.kind == Kind::Tuple ? id.items.get() : nullptr;
        if (!f || f->size() != 5 || (*f)[0].kind != Kind::String || (*f)[0].text != "storage" ||
            (*f)[1].kind != Kind::Global || (*f)[2].kind != Kind::String || (*f)[3].kind != Kind::String ||
            (*f)[4].kind != Kind::Int || (*f)[4].number < 0)
          return problem(op_at, "a persistent id that is no storage");
        const std::string& storage = (*f)[1].text;
        const int64_t element = storage.compare(0, 6, "torch\n") == 0 ? storage_element_size(storage.substr(6)) : 0;
        if (element == 0) return problem(op_at, "a persistent id that is no storage");
        // The storage's size is the record's: LibTorch would take the pickle's word for it.
        const std::optional<uint64_t> record = storage_bytes ? storage_bytes((*f)[2].text) : std::nullopt;
        const uint64_t claimed = static_cast<uint64_t>((*f)[4].number);
        if (!record || claimed > *record / static_cast<uint64_t>(element) ||
            claimed * static_cast<uint64_t>(element) != *record) {
          return problem(op_at, "storage '" + (*f)[2].text.substr(0, 40) + "' of " + std::to_string(claimed) +
                                    " elements, which " + (record ? "its record of " + std::to_string(*record) +
                                                                        " bytes does not hold"
                                                                  : "has no record"));
        }
        break;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", op);
        return problem(op_at, std::string("opcode ") + hex + ", which Torch's Pickler does not write");
      }
    }
    if (push) {
      if (value.depth > kMaxPickleDepth)
        return problem(op_at, "values nested more than " + std::to_string(kMaxPickleDepth) + " deep");
      stack.push_back(std::move(value));
    }
  }
  return problem(size, "no STOP");
}

void check_archive_records(const FileBytes& file, const std::vector<ZipRecord>& records) {
  const auto fail = [&](const std::string& record, const std::string& problem) {
    throw Error(file.name + " is damaged or not written by bitrobust: its record " + record + " " + problem);
  };
  // LibTorch finds records by name without regard to case (miniz): so does this check.
  std::map<std::string, const ZipRecord*> by_name;
  for (const ZipRecord& record : records) {
    const std::string lower = record_lookup_name(record.name);
    BR_CHECK(by_name.emplace(lower, &record).second, file.name, " is damaged or not written by bitrobust: ",
             "its records ", by_name[lower]->name, " and ", record.name, " differ only in case");
    // (model.json would send LibTorch down its pre-1.4 reader, which none of this checks)
    BR_CHECK(!ends_with(lower, "/model.json") && lower != "model.json", file.name,
             " is not an archive bitrobust writes: it holds ", record.name, " (a Torch archive of before 1.4)");
  }
  for (const ZipRecord& record : records) {
    const std::string name = record_lookup_name(record.name);
    if (ends_with(name, ".pkl") || ends_with(name, ".debug_pkl")) {
      // "<archive>/data.pkl" keeps its storages in "<archive>/data/<key>"; debug pickles have none.
      const std::string folder = ends_with(name, ".pkl") ? name.substr(0, name.size() - 4) + "/" : std::string();
      const StorageSizes storage_bytes = [&](const std::string& key) -> std::optional<uint64_t> {
        if (folder.empty()) return std::nullopt;
        const auto found = by_name.find(folder + record_lookup_name(key));
        if (found == by_name.end()) return std::nullopt;
        return found->second->uncompressed_size;
      };
      const std::string problem =
          pickle_problem(read_zip_record(file, record, kMaxPickleRecordBytes), storage_bytes);
      if (!problem.empty()) fail(record.name, "is no pickle Torch writes: " + problem);
      continue;
    }
    if (name.find("/code/") == std::string::npos || !ends_with(name, ".py")) continue;
    const std::string text = read_zip_record(file, record, kMaxCodeRecordBytes);
    size_t start = 0;
    for (int line_number = 1; start <= text.size(); ++line_number) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(start, end - start);
      if (!is_attribute_module_line(line)) {
        fail(record.name, "has a line " + std::to_string(line_number) + " ('" + shown(line) +
                              "') that is not an attribute declaration, the only code an archive of tensors holds");
      }
      start = end + 1;
    }
  }
}

}  // namespace bitrobust::io
