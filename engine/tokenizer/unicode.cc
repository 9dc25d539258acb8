#include "engine/tokenizer/unicode.h"

#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace llmc::tok {

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t NextCodePoint(absl::string_view s, size_t* pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *pos;
  const size_t len = Utf8SequenceLength(p[0]);
  char32_t cp;
  switch (len) {
    case 1:
      cp = p[0];
      break;
    case 2:
      cp = (char32_t{p[0]} & 0x1F) << 6 | (p[1] & 0x3F);
      break;
    case 3:
      cp = (char32_t{p[0]} & 0x0F) << 12 | (char32_t{p[1]} & 0x3F) << 6 | (p[2] & 0x3F);
      break;
    default:
      cp = (char32_t{p[0]} & 0x07) << 18 | (char32_t{p[1]} & 0x3F) << 12 | (char32_t{p[2]} & 0x3F) << 6 |
           (p[3] & 0x3F);
      break;
  }
  *pos += len;
  return cp;
}

char32_t LastCodePoint(absl::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return NextCodePoint(s, &start);
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0, bad = 0;
  while (i < bytes.size()) {
    const size_t len = WellFormedUtf8Length(bytes, i, &bad);
    if (len == 0) {
      out.append("\xEF\xBF\xBD");
      i += bad;
    } else {
      out.append(bytes.data() + i, len);
      i += len;
    }
  }
  return out;
}

bool IsUnicodeWhitespace(char32_t cp) {
  if (cp < 0x80) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

namespace {

struct ByteLevelTables {
  std::array<std::string, 256> utf8;
  std::array<int16_t, 0x144> byte_of;  // code points of the alphabet are all below U+0144
  ByteLevelTables() {
    byte_of.fill(-1);
    std::array<char32_t, 256> cp{};
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
    }
    for (int b = 0; b < 256; ++b) {
      AppendUtf8(cp[b], &utf8[b]);
      byte_of[cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables* tables = new ByteLevelTables();
  return *tables;
}

// UTF-8 <-> UTF-16 through ICU.
absl::Status ToUtf16(const std::string& in, std::vector<UChar>* out) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  out->resize(in.size() + 1);
  u_strFromUTF8(out->data(), static_cast<int32_t>(out->size()), &len, in.data(),
                static_cast<int32_t>(in.size()), &err);
  if (U_FAILURE(err))
    return absl::InternalError(absl::StrCat("ICU u_strFromUTF8 failed: ", u_errorName(err)));
  out->resize(len);
  return absl::OkStatus();
}

absl::Status FromUtf16(const UChar* in, int32_t len, std::string* out) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t need = 0;
  out->resize(static_cast<size_t>(len) * 3 + 1);
  u_strToUTF8(out->data(), static_cast<int32_t>(out->size()), &need, in, len, &err);
  if (U_FAILURE(err)) return absl::InternalError(absl::StrCat("ICU u_strToUTF8 failed: ", u_errorName(err)));
  out->resize(need);
  return absl::OkStatus();
}

bool IsAscii(absl::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

}  // namespace

const std::array<std::string, 256>& ByteLevelCharUtf8() { return Tables().utf8; }

int ByteLevelByteOf(char32_t cp) { return cp < 0x144 ? Tables().byte_of[cp] : -1; }

absl::Status UnicodeNormalize(NormalizationForm form, std::string* text) {
  if (IsAscii(*text)) return absl::OkStatus();  // ASCII is invariant under every normalization form
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* norm = nullptr;
  switch (form) {
    case NormalizationForm::kNfc:
      norm = unorm2_getNFCInstance(&err);
      break;
    case NormalizationForm::kNfd:
      norm = unorm2_getNFDInstance(&err);
      break;
    case NormalizationForm::kNfkc:
      norm = unorm2_getNFKCInstance(&err);
      break;
    case NormalizationForm::kNfkd:
      norm = unorm2_getNFKDInstance(&err);
      break;
  }
  if (U_FAILURE(err))
    return absl::InternalError(absl::StrCat("ICU normalizer unavailable: ", u_errorName(err)));
  std::vector<UChar> in;
  if (auto s = ToUtf16(*text, &in); !s.ok()) return s;
  const int32_t in_len = static_cast<int32_t>(in.size());
  if (unorm2_isNormalized(norm, in.data(), in_len, &err) && U_SUCCESS(err)) return absl::OkStatus();
  err = U_ZERO_ERROR;
  // NFKD can expand one code unit to 18; grow on overflow rather than guess.
  std::vector<UChar> out(static_cast<size_t>(in_len) * 3 + 16);
  int32_t out_len =
      unorm2_normalize(norm, in.data(), in_len, out.data(), static_cast<int32_t>(out.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    err = U_ZERO_ERROR;
    out.resize(out_len);
    out_len = unorm2_normalize(norm, in.data(), in_len, out.data(), static_cast<int32_t>(out.size()), &err);
  }
  if (U_FAILURE(err))
    return absl::InternalError(absl::StrCat("ICU unorm2_normalize failed: ", u_errorName(err)));
  return FromUtf16(out.data(), out_len, text);
}

absl::Status UnicodeLowercase(std::string* text) {
  std::string out;
  out.reserve(text->size());
  size_t pos = 0;
  while (pos < text->size()) {
    const unsigned char c = static_cast<unsigned char>((*text)[pos]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c));
      ++pos;
      continue;
    }
    const char32_t cp = NextCodePoint(*text, &pos);
    UChar src[2];
    int32_t src_len = 0;
    if (cp < 0x10000) {
      src[src_len++] = static_cast<UChar>(cp);
    } else {
      src[src_len++] = static_cast<UChar>(0xD7C0 + (cp >> 10));
      src[src_len++] = static_cast<UChar>(0xDC00 | (cp & 0x3FF));
    }
    // One code point at a time: no context, so no Final_Sigma rule, matching Rust's char::to_lowercase.
    UChar dst[8];
    UErrorCode err = U_ZERO_ERROR;
    const int32_t dst_len = u_strToLower(dst, 8, src, src_len, "", &err);
    if (U_FAILURE(err))
      return absl::InternalError(absl::StrCat("ICU u_strToLower failed: ", u_errorName(err)));
    std::string piece;
    if (auto s = FromUtf16(dst, dst_len, &piece); !s.ok()) return s;
    out.append(piece);
  }
  *text = std::move(out);
  return absl::OkStatus();
}

}  // namespace llmc::tok
