// UTF-8 and Unicode helpers for the tokenizer, each matching what Hugging Face `tokenizers` (Rust) does: char
// iteration, `char::is_whitespace`, `String::from_utf8_lossy`, the GPT-2 byte-to-unicode table, and Unicode
// normalization forms / lowercasing (through ICU).
#pragma once

#include "common/utf8.h"  // FindInvalidUtf8, WellFormedUtf8Length

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace llmc::tok {

// Appends the UTF-8 encoding of code point `cp` (must be a Unicode scalar value) to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// Length of the UTF-8 sequence that starts with `lead` (1 for ASCII and for bytes that cannot start a
// sequence).
inline size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Decodes the code point starting at `s[*pos]` and advances `*pos` past it. `s` must be valid UTF-8.
char32_t NextCodePoint(absl::string_view s, size_t* pos);

// Decodes the code point that ends at `s[end]` (exclusive). `s` must be valid UTF-8 and `end` > 0.
char32_t LastCodePoint(absl::string_view s, size_t end);



// Rust's `String::from_utf8_lossy`: valid sequences are copied, each maximal ill-formed subpart becomes
// U+FFFD.
std::string Utf8Lossy(absl::string_view bytes);

// Rust's `char::is_whitespace` (the Unicode White_Space property).
bool IsUnicodeWhitespace(char32_t cp);

// The GPT-2 byte-level alphabet: byte b is written as a printable code point (b itself for printable Latin-1,
// 0x100 + n for the others). `ByteLevelCharUtf8()[b]` is that code point in UTF-8.
const std::array<std::string, 256>& ByteLevelCharUtf8();
// The byte written as `cp` in the byte-level alphabet, or -1 if `cp` is not in it.
int ByteLevelByteOf(char32_t cp);

enum class NormalizationForm { kNfc, kNfd, kNfkc, kNfkd };

// Applies a Unicode normalization form to `text` (valid UTF-8) in place. Fails only if ICU does.
absl::Status UnicodeNormalize(NormalizationForm form, std::string* text);

// Lowercases `text` (valid UTF-8) code point by code point with the full, context-free Unicode mapping, as
// Rust's `char::to_lowercase` does (so a final capital sigma becomes U+03C3, not U+03C2).
absl::Status UnicodeLowercase(std::string* text);

}  // namespace llmc::tok
