#include "storage/sigv4_signer.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "storage/crypto.h"

namespace llmc::storage {

namespace {

// Trims and collapses runs of spaces, as the canonical header value wants.
std::string CanonicalHeaderValue(absl::string_view v) {
  v = absl::StripAsciiWhitespace(v);
  std::string out;
  out.reserve(v.size());
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::string UriEncode(absl::string_view s, bool encode_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3 / 2);
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !encode_slash)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string CanonicalQueryString(const std::vector<std::pair<std::string, std::string>>& query) {
  std::vector<std::pair<std::string, std::string>> enc;
  enc.reserve(query.size());
  for (const auto& [k, v] : query) enc.emplace_back(UriEncode(k, true), UriEncode(v, true));
  std::sort(enc.begin(), enc.end());
  std::vector<std::string> parts;
  parts.reserve(enc.size());
  for (const auto& [k, v] : enc) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, "&");
}

std::string AmzDate(absl::Time t) { return absl::FormatTime("%Y%m%dT%H%M%SZ", t, absl::UTCTimeZone()); }

SigV4Signature SignV4(const SigV4Request& request, const AwsCredentials& credentials, absl::string_view region,
                      absl::string_view service, absl::string_view amz_date) {
  // Lowercased names, values trimmed; duplicates joined with ',' in the order given.
  std::map<std::string, std::string> headers;
  for (const auto& [name, value] : request.headers) {
    std::string key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(name));
    std::string val = CanonicalHeaderValue(value);
    auto it = headers.find(key);
    if (it == headers.end()) headers.emplace(std::move(key), std::move(val));
    else absl::StrAppend(&it->second, ",", val);
  }
  std::string canonical_headers;
  std::vector<absl::string_view> names;
  for (const auto& [k, v] : headers) {
    absl::StrAppend(&canonical_headers, k, ":", v, "\n");
    names.push_back(k);
  }
  SigV4Signature out;
  out.signed_headers = absl::StrJoin(names, ";");
  out.canonical_request =
      absl::StrCat(request.method, "\n", request.canonical_uri.empty() ? "/" : request.canonical_uri, "\n",
                   CanonicalQueryString(request.query), "\n", canonical_headers, "\n", out.signed_headers, "\n",
                   request.payload_hash);
  absl::string_view date = amz_date.substr(0, 8);
  std::string scope = absl::StrCat(date, "/", region, "/", service, "/aws4_request");
  out.string_to_sign =
      absl::StrCat("AWS4-HMAC-SHA256\n", amz_date, "\n", scope, "\n", Sha256Hex(out.canonical_request));
  std::string k_date = HmacSha256(absl::StrCat("AWS4", credentials.secret_access_key), date);
  std::string k_region = HmacSha256(k_date, region);
  std::string k_service = HmacSha256(k_region, service);
  std::string k_signing = HmacSha256(k_service, "aws4_request");
  out.signature = HexEncode(HmacSha256(k_signing, out.string_to_sign));
  out.authorization = absl::StrCat("AWS4-HMAC-SHA256 Credential=", credentials.access_key_id, "/", scope,
                                   ", SignedHeaders=", out.signed_headers, ", Signature=", out.signature);
  return out;
}

}  // namespace llmc::storage
