// Explicit bit error patterns: draw, save, load, replay. File format: docs/bit_errors.md.
#include "bitrobust/bits/pattern.h"
#include "bitrobust/report/output.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <type_traits>

#include "bits/device_dispatch.h"
#include "bitrobust/bits/bit_errors_kernels.h"
#include "bitrobust/common/error.h"

namespace bitrobust::bits {
namespace {

constexpr const char* kMagic = "bitrobust-bit-pattern";
constexpr int kVersion = 2;  // 2: the layers line

char kind_letter(FlipKind kind) {
  switch (kind) {
    case FlipKind::Flip: return 'f';
    case FlipKind::Set0: return '0';
    default: return '1';
  }
}

std::string rate_text(double rate) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", rate);
  return buffer;
}

bool flip_less(const BitFlip& a, const BitFlip& b) {
  if (a.param != b.param) return a.param < b.param;
  if (a.element != b.element) return a.element < b.element;
  return a.bit < b.bit;
}

}  // namespace

std::string shape_text(const std::vector<int64_t>& shape) {
  if (shape.empty()) return "scalar";
  std::string text;
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "x" : "") + std::to_string(shape[i]);
  return text;
}

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ParamSpec::to_string() const {
  std::ostringstream out;
  if (!name.empty()) out << name << " ";
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "] " << bits << " bits";
  return out.str();
}

std::vector<BitFlip> draw_pattern(int64_t numel, int bits, const ErrorModel& model, uint64_t seed,
                                  int64_t param_index) {
  BR_CHECK(numel >= 0, "draw_pattern: numel must be >= 0, got ", numel);
  BR_CHECK(param_index >= 0, "draw_pattern: param_index must be >= 0, got ", param_index);
  const BitErrorParams params = model.kernel_params(bits, 32);
  std::vector<BitFlip> flips;
  for (const SelectedBit& s : draw_selected_bits(numel, params, seed, param_index)) {
    flips.push_back({param_index, s.element, s.bit, s.kind});
  }
  std::sort(flips.begin(), flips.end(), flip_less);
  return flips;
}

BitPattern draw_pattern(const std::vector<ParamSpec>& params, const ErrorModel& model, uint64_t seed,
                        const ParamSelector& selector) {
  model.validate();
  BitPattern pattern;
  pattern.seed = seed;
  pattern.model = model;
  pattern.params = params;
  pattern.layers = selector.pattern();
  for (size_t i = 0; i < params.size(); ++i) {
    for (int64_t d : params[i].shape) BR_CHECK(d >= 0, "draw_pattern: negative dimension in ", params[i].to_string());
    if (!selector.selects(params[i].name)) continue;
    const auto flips = draw_pattern(params[i].numel(), params[i].bits, model, seed, static_cast<int64_t>(i));
    pattern.flips.insert(pattern.flips.end(), flips.begin(), flips.end());
  }
  return pattern;
}

void save_pattern(const std::string& path, const BitPattern& pattern, const std::string& what) {
  for (const ParamSpec& p : pattern.params) {
    BR_CHECK(p.name.find_first_of(" \t\r\n") == std::string::npos, "pattern file: parameter name '", p.name,
             "' contains whitespace");
  }
  BR_CHECK(pattern.layers.find_first_of("\r\n") == std::string::npos,
           "pattern file: the layers expression holds a line break");
  // Built in memory and written atomically (temporary file, then rename).
  std::ostringstream out;
  out << kMagic << " " << kVersion << "\n";
  out << "seed " << pattern.seed << "\n";
  out << "model " << pattern.model.name() << "\n";
  out << "rate " << rate_text(pattern.model.rate) << "\n";
  out << "layers" << (pattern.layers.empty() ? "" : " " + pattern.layers) << "\n";
  out << "chunk_elements " << kChunkElements << "\n";
  out << "params " << pattern.params.size() << "\n";
  for (size_t i = 0; i < pattern.params.size(); ++i) {
    const ParamSpec& p = pattern.params[i];
    out << i << " " << (p.name.empty() ? "-" : p.name) << " " << shape_text(p.shape) << " " << p.bits << "\n";
  }
  out << "flips " << pattern.flips.size() << "\n";
  std::string line;
  for (const BitFlip& f : pattern.flips) {
    line.clear();
    line += std::to_string(f.param);
    line += ' ';
    line += std::to_string(f.element);
    line += ' ';
    line += std::to_string(f.bit);
    line += ' ';
    line += kind_letter(f.kind);
    line += '\n';
    out << line;
  }
  out << "end\n";
  report::write_text_atomic(path, out.str(), what);
}

namespace {

class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_.good()) {
      const int error = errno != 0 ? errno : EIO;  // left by the failed open: why
      throw Error("cannot read pattern file '" + path + "': " +
                  (error == ENOENT ? std::string("it does not exist") : std::string(std::strerror(error))));
    }
    std::error_code ec;  // (an ifstream opens a folder, and then reads nothing)
    BR_CHECK(!std::filesystem::is_directory(path, ec), "pattern file '", path, "' is a folder, not a pattern file");
  }
  std::istringstream next(const char* expecting) {
    std::string line;
    BR_CHECK(read_line(line), "pattern file '", path_, "' ends early (line ", line_number_ + 1, "), expected ",
             expecting);
    ++line_number_;
    return std::istringstream(line);
  }
  /// Whether anything but white space follows the current line.
  bool has_more_text() {
    std::string rest;
    while (read_line(rest)) {
      if (rest.find_first_not_of(" \t\r") != std::string::npos) return true;
    }
    return false;
  }
  // A pattern file's lines are short (a header line, or one flip's four fields): a longer one, or
  // a NUL byte, is not such a file (/dev/zero would otherwise be read into memory without end,
  // and a NUL would cut the message short). Read from the stream buffer: files hold millions of flips.
  bool read_line(std::string& line) {
    constexpr size_t kMaxLine = 4096;
    using traits = std::char_traits<char>;
    std::streambuf* buffer = in_.rdbuf();
    line.clear();
    int c = buffer->sbumpc();
    if (c == traits::eof()) return false;
    for (; c != traits::eof() && c != '\n'; c = buffer->sbumpc()) {
      BR_CHECK(c != '\0', "pattern file '", path_, "' line ", line_number_ + 1,
               ": a NUL byte (not a bitrobust bit pattern file)");
      BR_CHECK(line.size() < kMaxLine, "pattern file '", path_, "' line ", line_number_ + 1, ": longer than ",
               kMaxLine, " bytes (not a bitrobust bit pattern file)");
      line.push_back(static_cast<char>(c));
    }
    return true;
  }
  template <typename... Args>
  [[noreturn]] void fail(Args&&... parts) const {
    throw Error(::bitrobust::detail::concat("pattern file '", path_, "' line ", line_number_, ": ",
                                            std::forward<Args>(parts)...));
  }
  template <typename T>
  T keyed(const char* key) {
    std::istringstream line = next(key);
    std::string word;
    T value{};
    if (!(line >> word) || word != key) fail("expected '", key, " <value>'");
    // (an istream reads "-5" into an unsigned type as 2^64 - 5)
    if (std::is_unsigned_v<T> && (line >> std::ws).peek() == '-') fail(key, " must not be negative");
    if (!(line >> value)) fail("expected '", key, " <value>'");
    std::string rest;
    if (line >> rest) fail("unexpected '", rest, "' after ", key);
    return value;
  }

 private:
  std::string path_;
  std::ifstream in_;
  int64_t line_number_ = 0;
};

std::vector<int64_t> parse_shape(const std::string& text, const LineReader& reader) {
  std::vector<int64_t> shape;
  if (text == "scalar") return shape;
  std::stringstream stream(text);
  std::string dim;
  int64_t numel = 1;
  // (getline drops an empty last field: "10x" would read as 10)
  if (!text.empty() && text.back() == 'x') reader.fail("bad shape '", text, "'");
  while (std::getline(stream, dim, 'x')) {
    char* end = nullptr;
    errno = 0;
    const long long value = std::strtoll(dim.c_str(), &end, 10);
    if (dim.empty() || *end != '\0' || value < 0 || errno == ERANGE) reader.fail("bad shape '", text, "'");
    // (element indices are checked against the product, which must not wrap)
    if (value > 0 && numel > (int64_t{1} << 62) / value) reader.fail("shape '", text, "' holds more than 2^62 elements");
    numel *= value;
    shape.push_back(value);
  }
  return shape;
}

}  // namespace

BitPattern load_pattern(const std::string& path) {
  LineReader reader(path);
  BitPattern pattern;
  int file_version = 0;
  {
    std::istringstream line = reader.next("the header");
    std::string magic;
    int version = 0;
    if (!(line >> magic >> version) || magic != kMagic) reader.fail("not a bitrobust bit pattern file");
    // (1: before the layers line; read as drawn for every parameter)
    if (version != kVersion && version != 1) {
      reader.fail("unsupported version ", version, " (this build reads 1 and ", kVersion, ")");
    }
    file_version = version;
    std::string extra;
    if (line >> extra) reader.fail("unexpected '", extra, "' after the version");
  }
  pattern.seed = reader.keyed<uint64_t>("seed");
  const std::string model_name = reader.keyed<std::string>("model");
  const double rate = reader.keyed<double>("rate");
  try {
    pattern.model = ErrorModel::parse(model_name, rate);
  } catch (const Error& e) {
    reader.fail(e.what());
  }
  std::optional<ParamSelector> layers;
  pattern.layers_recorded = file_version >= 2;
  if (file_version >= 2) {
    std::string line = reader.next("'layers'").str();
    if (!line.empty() && line.back() == '\r') line.pop_back();  // (CRLF files are read too)
    if (line != "layers" && line.rfind("layers ", 0) != 0) reader.fail("expected 'layers' or 'layers <regex>'");
    pattern.layers = line.size() > 7 ? line.substr(7) : "";
    try {
      layers.emplace(pattern.layers);
    } catch (const Error& e) {
      reader.fail(e.what());
    }
  }
  // Informational (replay does not depend on it), but a generator's chunk is never empty.
  if (reader.keyed<int64_t>("chunk_elements") <= 0) reader.fail("chunk_elements must be positive");
  const int64_t num_params = reader.keyed<int64_t>("params");
  if (num_params < 0) reader.fail("negative parameter count");
  for (int64_t i = 0; i < num_params; ++i) {
    std::istringstream line = reader.next("a parameter line");
    int64_t index = -1;
    std::string name, shape;
    ParamSpec spec;
    if (!(line >> index >> name >> shape >> spec.bits) || index != i) {
      reader.fail("expected '", i, " <name> <shape> <bits>'");
    }
    std::string extra;
    if (line >> extra) reader.fail("unexpected '", extra, "' after the bit width");
    if (spec.bits < 1 || spec.bits > 32) reader.fail("bit width ", spec.bits, " outside [1, 32]");
    spec.name = name == "-" ? "" : name;
    spec.shape = parse_shape(shape, reader);
    pattern.params.push_back(std::move(spec));
  }
  const int64_t num_flips = reader.keyed<int64_t>("flips");
  if (num_flips < 0) reader.fail("negative flip count");
  // The count is the file's word: reserve no more than its bytes can hold (a flip line, "0 0 0 f\n",
  // takes at least 8), so a damaged count is "ends early", not a gigabyte-sized allocation.
  std::error_code size_error;
  const auto file_bytes = std::filesystem::file_size(path, size_error);
  const int64_t fits = size_error ? 0 : static_cast<int64_t>(file_bytes / 8);
  pattern.flips.reserve(static_cast<size_t>(std::min({num_flips, fits, int64_t{1} << 26})));
  std::vector<int64_t> numels;
  for (const ParamSpec& p : pattern.params) numels.push_back(p.numel());
  // The bit positions the header's error model reaches in each parameter (msb: the top bit; lsb k:
  // the k lowest): a flip elsewhere contradicts the model the result would be recorded under.
  std::vector<std::pair<int, int>> reach;  // (lowest bit, count)
  // And the kinds it makes (BitErrorParams::kind_of): random flips, stuck-at sets to 0 or 1, and an
  // asymmetric model flips and sets in the direction whose rate is the higher.
  std::vector<std::array<bool, 3>> makes;  // Flip, Set0, Set1
  for (const ParamSpec& p : pattern.params) {
    try {
      const BitErrorParams k = pattern.model.kernel_params(p.bits, p.bits <= 8 ? 8 : p.bits <= 16 ? 16 : 32);
      reach.emplace_back(k.bit_lo, k.bit_count);
      makes.push_back({k.threshold_0to1 > 0 && k.threshold_1to0 > 0, k.threshold_1to0 > k.threshold_0to1,
                       k.threshold_0to1 > k.threshold_1to0});
    } catch (const Error&) {
      reach.emplace_back(0, 0);  // (the model reaches no bit of it: any flip is an error below)
      makes.push_back({false, false, false});
    }
  }
  for (int64_t i = 0; i < num_flips; ++i) {
    std::istringstream line = reader.next("a flip line");
    BitFlip flip;
    char kind = 0;
    if (!(line >> flip.param >> flip.element >> flip.bit >> kind)) reader.fail("expected '<param> <element> <bit> <f|0|1>'");
    if (kind == 'f') flip.kind = FlipKind::Flip;
    else if (kind == '0') flip.kind = FlipKind::Set0;
    else if (kind == '1') flip.kind = FlipKind::Set1;
    else reader.fail("unknown flip kind '", kind, "' (expected f, 0 or 1)");
    std::string extra;
    if (line >> extra) reader.fail("unexpected '", extra, "' after the flip kind");
    if (flip.param < 0 || flip.param >= num_params) reader.fail("parameter index ", flip.param, " out of range");
    const ParamSpec& p = pattern.params[flip.param];
    if (layers && !layers->selects(p.name)) {
      reader.fail("a flip in parameter ", flip.param, " (", p.to_string(), "), which the header's layers '",
                  pattern.layers, "' do not select");
    }
    if (flip.element < 0 || flip.element >= numels[flip.param]) {
      reader.fail("element ", flip.element, " outside parameter ", flip.param, " (", p.to_string(), ")");
    }
    if (flip.bit < 0 || flip.bit >= p.bits) reader.fail("bit ", flip.bit, " outside the ", p.bits, " bits of parameter ", flip.param);
    const auto [lo, count] = reach[static_cast<size_t>(flip.param)];
    if (flip.bit < lo || flip.bit >= lo + count) {
      reader.fail("bit ", flip.bit, " of parameter ", flip.param, " is not one the header's error model ",
                  pattern.model.name(), " reaches in ", p.bits, "-bit codes");
    }
    if (!makes[static_cast<size_t>(flip.param)][static_cast<size_t>(flip.kind)]) {
      reader.fail("flip kind '", kind, "' is not one the header's error model ", pattern.model.name(), " makes at rate ",
                  rate_text(pattern.model.rate), " (random errors flip: f; stuck-at-0 sets 0, stuck-at-1 sets 1)");
    }
    pattern.flips.push_back(flip);
  }
  {
    std::istringstream line = reader.next("'end'");
    std::string word;
    if (!(line >> word) || word != "end") reader.fail("expected 'end' after ", num_flips, " flips");
    if (line >> word) reader.fail("unexpected '", word, "' after 'end'");
    if (reader.has_more_text()) reader.fail("text after 'end' (the file holds more than one pattern, or is damaged)");
  }
  std::sort(pattern.flips.begin(), pattern.flips.end(), flip_less);
  for (size_t i = 1; i < pattern.flips.size(); ++i) {
    const BitFlip& a = pattern.flips[i - 1];
    const BitFlip& b = pattern.flips[i];
    BR_CHECK(!(a.param == b.param && a.element == b.element && a.bit == b.bit), "pattern file '", path,
             "' lists bit ", a.bit, " of element ", a.element, " of parameter ", a.param, " twice");
  }
  return pattern;
}

bool drawn_by_its_header(const BitPattern& pattern) {
  if (pattern.layers_recorded) {
    return draw_pattern(pattern.params, pattern.model, pattern.seed, ParamSelector(pattern.layers)).flips == pattern.flips;
  }
  // (flips are sorted by parameter: each parameter's are one run)
  auto begin = pattern.flips.begin();
  for (size_t i = 0; i < pattern.params.size(); ++i) {
    auto end = begin;
    while (end != pattern.flips.end() && end->param == static_cast<int64_t>(i)) ++end;
    if (begin != end) {
      const std::vector<BitFlip> drawn = draw_pattern(pattern.params[i].numel(), pattern.params[i].bits, pattern.model,
                                                      pattern.seed, static_cast<int64_t>(i));
      if (!std::equal(begin, end, drawn.begin(), drawn.end())) return false;
    }
    begin = end;
  }
  return begin == pattern.flips.end();
}

void check_pattern_fits(const BitPattern& pattern, const std::vector<ParamSpec>& expected) {
  BR_CHECK(pattern.params.size() == expected.size(), "bit pattern: made for ", pattern.params.size(),
           " parameters, the model has ", expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const ParamSpec& have = pattern.params[i];
    const ParamSpec& want = expected[i];
    BR_CHECK(have.shape == want.shape && have.bits == want.bits &&
                 (have.name.empty() || want.name.empty() || have.name == want.name),
             "bit pattern: parameter ", i, " was ", have.to_string(), " when the pattern was made, the model has ",
             want.to_string());
  }
}

BitPattern load_pattern(const std::string& path, const std::vector<ParamSpec>& expected) {
  BitPattern pattern = load_pattern(path);
  try {
    check_pattern_fits(pattern, expected);
  } catch (const Error& e) {
    // (check_pattern_fits speaks of "bit pattern: ..."; here the file is named instead)
    std::string reason = e.what();
    const std::string prefix = "bit pattern: ";
    if (reason.rfind(prefix, 0) == 0) reason.erase(0, prefix.size());
    throw Error("pattern file '" + path + "' does not fit the model: " + reason);
  }
  return pattern;
}

int64_t apply_pattern(const std::vector<BitFlip>& flips, int64_t param_index, const at::Tensor& clean, int bits,
                      at::Tensor& out) {
  const int eb = detail::check_bit_tensor("apply_pattern", "clean codes", clean);
  BR_CHECK(out.defined(), "apply_pattern: out is an undefined tensor");
  detail::check_same_layout("apply_pattern", clean, out, "clean codes", "out");
  BR_CHECK(clean.is_contiguous() && out.is_contiguous(), "apply_pattern: clean codes and out must be contiguous");
  BR_CHECK(bits >= 1 && bits <= 8 * eb, "apply_pattern: code width must be in [1, ", 8 * eb, "] for ",
           clean.scalar_type(), " codes, got ", bits);
  std::vector<SelectedBit> selected;
  const int64_t numel = clean.numel();
  for (const BitFlip& f : flips) {
    if (f.param != param_index) continue;
    BR_CHECK(f.element >= 0 && f.element < numel, "apply_pattern: element ", f.element, " of parameter ",
             param_index, " outside its ", numel, " elements");
    BR_CHECK(f.bit >= 0 && f.bit < bits, "apply_pattern: bit ", f.bit, " of parameter ", param_index,
             " outside its ", bits, " bits");
    selected.push_back({f.element, f.bit, f.kind});
  }
  // Each bit at most once: the CUDA kernel applies the entries in no fixed order, so two actions on
  // one bit (a flip and a set) would have no defined result (load_pattern refuses such files too).
  std::vector<uint64_t> keys(selected.size());
  for (size_t i = 0; i < selected.size(); ++i) {
    keys[i] = static_cast<uint64_t>(selected[i].element) << 6 | static_cast<uint64_t>(selected[i].bit);
  }
  std::sort(keys.begin(), keys.end());
  const auto twice = std::adjacent_find(keys.begin(), keys.end());
  BR_CHECK(twice == keys.end(), "apply_pattern: bit ", *twice & 63u, " of element ", *twice >> 6, " of parameter ",
           param_index, " is listed twice");
  if (out.data_ptr() != clean.data_ptr()) out.copy_(clean);
  if (selected.empty()) return 0;
  if (!clean.is_cuda()) {
    return apply_selected_bits_cpu(out.data_ptr(), eb, selected.data(), static_cast<int64_t>(selected.size()));
  }
  // Upload the list as bytes, then apply with per-bit atomics.
  const int64_t bytes = static_cast<int64_t>(selected.size() * sizeof(SelectedBit));
  at::Tensor host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(host.data_ptr(), selected.data(), static_cast<size_t>(bytes));
  const at::Tensor device_list = host.to(clean.device());
  at::Tensor count = at::zeros({1}, clean.options().dtype(at::kLong));
  detail::on_cuda("apply_pattern", clean, [&](void* stream) {
    apply_selected_bits_cuda(out.data_ptr(), eb, reinterpret_cast<const SelectedBit*>(device_list.data_ptr()),
                             static_cast<int64_t>(selected.size()),
                             reinterpret_cast<unsigned long long*>(count.data_ptr<int64_t>()), stream);
  });
  return count.item<int64_t>();
}

int64_t apply_pattern(const BitPattern& pattern, const std::vector<CodeTensor>& tensors) {
  int64_t changed = 0;
  for (const CodeTensor& t : tensors) {
    BR_CHECK(t.param_index >= 0 && t.param_index < static_cast<int64_t>(pattern.params.size()),
             "apply_pattern: ", t.name, " has param index ", t.param_index, "; the pattern has ",
             pattern.params.size(), " parameters");
    const ParamSpec& spec = pattern.params[t.param_index];
    const std::vector<int64_t> shape(t.clean.sizes().begin(), t.clean.sizes().end());
    BR_CHECK(spec.shape == shape && spec.bits == t.bits &&
                 (spec.name.empty() || t.name.empty() || spec.name == t.name),
             "apply_pattern: parameter ", t.param_index, " was ", spec.to_string(), " when the pattern was made, ",
             "got ", ParamSpec{t.name, shape, t.bits}.to_string());
  }
  // Hand each tensor its own range of the flips sorted by param (drawn and loaded patterns are).
  std::vector<BitFlip> sorted;
  const std::vector<BitFlip>* flips_by_param = &pattern.flips;
  if (!std::is_sorted(pattern.flips.begin(), pattern.flips.end(), flip_less)) {
    sorted = pattern.flips;
    std::sort(sorted.begin(), sorted.end(), flip_less);
    flips_by_param = &sorted;
  }
  for (const CodeTensor& t : tensors) {
    const auto range = std::equal_range(flips_by_param->begin(), flips_by_param->end(), BitFlip{t.param_index, 0, 0},
                                        [](const BitFlip& a, const BitFlip& b) { return a.param < b.param; });
    const std::vector<BitFlip> flips(range.first, range.second);
    at::Tensor out = t.out;
    changed += apply_pattern(flips, t.param_index, t.clean, t.bits, out);
  }
  return changed;
}

}  // namespace bitrobust::bits
