// NOTE [Archive code records] in bitrobust/io/archive_check.h.
#include "bitrobust/io/archive_check.h"

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bitrobust/common/error.h"

namespace bitrobust::io {
namespace {

// The largest code record bitrobust writes is a module listing one buffer per quantized tensor:
// tens of kilobytes for the largest networks.
constexpr uint64_t kMaxCodeRecordBytes = uint64_t{16} << 20;
// data.pkl lists every tensor (about a hundred bytes each) and the metadata: kilobytes to a megabyte.
constexpr uint64_t kMaxPickleRecordBytes = uint64_t{256} << 20;
// List[Dict[str, Tuple[int, ...]]] is three deep; deeper nesting is no attribute of ours.
constexpr int kMaxTypeDepth = 8;

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
    if (literal("__torch__")) {
      bool parts = false;
      while (literal(".")) {
        if (!identifier()) return fail(start);
        parts = true;
      }
      return parts ? true : fail(start);
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

std::string pickle_problem(const std::string& pickle) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(pickle.data());
  const size_t size = pickle.size();
  size_t at = 0;
  // Values on the stack since the innermost MARK, and those below each open MARK.
  std::vector<uint64_t> marks;
  uint64_t depth = 0;
  uint64_t memo = 0;  // memo entries so far: Pickler numbers them 0, 1, 2, ...
  const auto problem = [&](size_t where, const std::string& what) {
    return what + " at byte " + std::to_string(where);
  };
  const auto le = [&](size_t from, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{bytes[from + static_cast<size_t>(i)]} << (8 * i);
    return v;
  };
  while (at < size) {
    const size_t op_at = at;
    const unsigned char op = bytes[at++];
    // What an opcode's argument occupies, and what it does to the stack: needs `pop` values above
    // the innermost MARK (or, with to_mark, all of them), then pushes `push`.
    size_t arg = 0;
    uint64_t pop = 0, push = 0;
    bool to_mark = false;
    switch (op) {
      case 0x80: arg = 1; break;                                  // PROTO
      case '.': pop = 1; break;                                   // STOP
      case '(': break;                                            // MARK
      case 'N': case 0x88: case 0x89: case ')': case ']': case '}': push = 1; break;  // None, True, False, (), [], {}
      case 'K': arg = 1; push = 1; break;                         // BININT1
      case 'M': arg = 2; push = 1; break;                         // BININT2
      case 'J': arg = 4; push = 1; break;                         // BININT
      case 'G': arg = 8; push = 1; break;                         // BINFLOAT
      case 0x8a:                                                  // LONG1: a length byte, at most 8 bytes
        if (at >= size) return problem(op_at, "a LONG1 cut short");
        if (bytes[at] > 8) return problem(op_at, "a LONG1 of " + std::to_string(bytes[at]) + " bytes");
        arg = 1 + bytes[at];
        push = 1;
        break;
      case 'X': case 'B':                                         // BINUNICODE, BINBYTES: 4-byte length
        if (size - at < 4) return problem(op_at, "a string length cut short");
        if (le(at, 4) > size - at - 4) return problem(op_at, "a string of " + std::to_string(le(at, 4)) +
                                                                 " bytes in a record of " + std::to_string(size));
        arg = 4 + static_cast<size_t>(le(at, 4));
        push = 1;
        break;
      case 0x8c: case 'C':                                        // SHORT_BINUNICODE, SHORT_BINBYTES
        if (at >= size) return problem(op_at, "a string length cut short");
        arg = 1 + bytes[at];
        push = 1;
        break;
      case 'c': {                                                 // GLOBAL: module\nname\n
        const void* first = at < size ? std::memchr(bytes + at, '\n', size - at) : nullptr;
        const size_t name_at = first ? static_cast<size_t>(static_cast<const unsigned char*>(first) - bytes) + 1 : size;
        const void* second = name_at < size ? std::memchr(bytes + name_at, '\n', size - name_at) : nullptr;
        if (!second) return problem(op_at, "a GLOBAL without its two lines");
        arg = static_cast<size_t>(static_cast<const unsigned char*>(second) - bytes) + 1 - at;
        push = 1;
        break;
      }
      case 'q': case 'r': case 'h': case 'j': {                   // BINPUT, LONG_BINPUT, BINGET, LONG_BINGET
        const bool put = op == 'q' || op == 'r';
        arg = op == 'q' || op == 'h' ? 1 : 4;
        if (size - at < arg) return problem(op_at, "a memo index cut short");
        const uint64_t index = le(at, static_cast<int>(arg));
        if (put) {
          if (index > memo)
            return problem(op_at, "memo index " + std::to_string(index) + " after " + std::to_string(memo) + " entries");
          if (index == memo) ++memo;
          pop = 1;  // (memoizes the top value, which stays)
        } else if (index >= memo) {
          return problem(op_at, "memo index " + std::to_string(index) + " read before it is written");
        }
        push = 1;
        break;
      }
      case '0': pop = 1; break;                                   // POP
      case '2': pop = 1; push = 2; break;                         // DUP
      case 'Q': pop = 1; push = 1; break;                         // BINPERSID
      case 0x85: pop = 1; push = 1; break;                        // TUPLE1
      case 0x86: pop = 2; push = 1; break;                        // TUPLE2
      case 0x87: pop = 3; push = 1; break;                        // TUPLE3
      case 'R': pop = 2; push = 1; break;                         // REDUCE
      case 0x81: pop = 2; push = 1; break;                        // NEWOBJ
      case 'b': pop = 2; push = 1; break;                         // BUILD
      case 'a': pop = 2; push = 1; break;                         // APPEND
      case 's': pop = 3; push = 1; break;                         // SETITEM
      case 't': to_mark = true; push = 1; break;                  // TUPLE
      case '1': to_mark = true; break;                            // POP_MARK
      case 'e': case 'u': to_mark = true; break;                  // APPENDS, SETITEMS
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", op);
        return problem(op_at, std::string("opcode ") + hex + ", which Torch's Pickler does not write");
      }
    }
    if (size - at < arg) return problem(op_at, "an argument cut short");
    at += arg;
    if (to_mark) {
      if (marks.empty()) return problem(op_at, "an operation to a MARK without one");
      const uint64_t items = depth;
      depth = marks.back();
      marks.pop_back();
      if (op == 'e' || op == 'u') {
        // The list or dict they extend lies below the MARK; SETITEMS takes pairs.
        if (depth < 1) return problem(op_at, "APPENDS or SETITEMS without a list or dict");
        if (op == 'u' && items % 2 != 0) return problem(op_at, "SETITEMS with an odd number of values");
      }
    } else {
      if (depth < pop) return problem(op_at, "an operation on fewer values than it takes");
      depth -= pop;
    }
    depth += push;
    if (op == '(') {
      marks.push_back(depth);
      depth = 0;
    }
    if (op == '.') {
      if (!marks.empty() || depth != 0) return problem(op_at, "STOP with values or MARKs left");
      return "";
    }
  }
  return problem(size, "no STOP");
}

void check_archive_records(const std::string& path, const std::vector<ZipRecord>& records, const std::string& what) {
  const auto fail = [&](const std::string& record, const std::string& problem) {
    throw Error(what + " " + path + " is damaged or not written by bitrobust: its record " + record + " " + problem);
  };
  const auto ends_with = [](const std::string& name, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
  };
  for (const ZipRecord& record : records) {
    const std::string& name = record.name;
    if (ends_with(name, ".pkl") || ends_with(name, ".debug_pkl")) {
      const std::string problem = pickle_problem(read_zip_record(path, record, what, kMaxPickleRecordBytes));
      if (!problem.empty()) fail(name, "is no pickle Torch writes: " + problem);
      continue;
    }
    if (name.find("/code/") == std::string::npos || !ends_with(name, ".py")) continue;
    const std::string text = read_zip_record(path, record, what, kMaxCodeRecordBytes);
    size_t start = 0;
    for (int line_number = 1; start <= text.size(); ++line_number) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(start, end - start);
      if (!is_attribute_module_line(line)) {
        std::string shown;
        for (const char ch : line.substr(0, 80)) {
          const auto byte = static_cast<unsigned char>(ch);
          shown += byte >= 0x20 && byte < 0x7F ? ch : '?';
        }
        fail(name, "has a line " + std::to_string(line_number) + " ('" + shown +
                       "') that is not an attribute declaration, the only code an archive of tensors holds");
      }
      start = end + 1;
    }
  }
}

}  // namespace bitrobust::io
