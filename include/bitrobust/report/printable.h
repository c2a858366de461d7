#pragma once
// Text from files and the command line, made safe to print: model names in tables, metadata in
// `info`, and every error message (which may quote a file's field or a parameter name).
#include <string>

namespace bitrobust::report {

/// `raw` with every byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string valid_utf8(const std::string& raw);

/// `raw` as valid UTF-8 with the characters that change a terminal's state or a line's layout
/// replaced by U+FFFD: C0 controls (newline and tab included) and DEL, C1 controls (CSI among
/// them), and the bidi overrides and isolates U+202A..U+202E and U+2066..U+2069, which reorder
/// what follows on the line. A printed line then stays one line, in order, and the terminal keeps
/// its state, whatever a file held.
std::string printable(const std::string& raw);

/// An error message as printed: one line (newlines, carriage returns and tabs, which LibTorch's
/// wrapped messages hold, become spaces), bytes that are not UTF-8 written as \xHH so that a
/// path of such bytes can still be told from others, then printable().
std::string printable_message(const std::string& raw);

}  // namespace bitrobust::report
