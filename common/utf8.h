// The one UTF-8 validator of llmc (recipes, patterns, datasets, the tokenizer, API strings): well-formed means no
// overlong forms, no surrogates, nothing above U+10FFFF, no truncated sequences (Unicode's definition).
#pragma once

#include <cstddef>

#include "absl/strings/string_view.h"

namespace llmc {

// Whether `text` is well-formed UTF-8.
bool IsValidUtf8(absl::string_view text);

// Byte offset of the first ill-formed sequence in `s`, or npos when it is all well-formed.
size_t FindInvalidUtf8(absl::string_view s);

// Length of the well-formed UTF-8 sequence at s[i], or 0 with `*bad_len` set to the length of the maximal
// ill-formed subpart (at least 1), per Unicode's "maximal subpart" rule (which Rust and Hugging Face follow
// when they replace ill-formed input with U+FFFD).
size_t WellFormedUtf8Length(absl::string_view s, size_t i, size_t* bad_len);

}  // namespace llmc
