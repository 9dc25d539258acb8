#include "common/utf8.h"

namespace llmc {

size_t WellFormedUtf8Length(absl::string_view s, size_t i, size_t* bad_len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  const unsigned char b = p[i];
  if (b < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad_len = 1;
    return 0;
  }
  if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) {
    *bad_len = 1;
    return 0;
  }
  for (size_t k = 2; k < len; ++k) {
    if (i + k >= n || (p[i + k] & 0xC0) != 0x80) {
      *bad_len = k;
      return 0;
    }
  }
  return len;
}

size_t FindInvalidUtf8(absl::string_view s) {
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t len = WellFormedUtf8Length(s, i, &bad);
    if (len == 0) return i;
    i += len;
  }
  return absl::string_view::npos;
}


bool IsValidUtf8(absl::string_view text) { return FindInvalidUtf8(text) == absl::string_view::npos; }

}  // namespace llmc
