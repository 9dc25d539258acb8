// Hashes the storage layer needs (SHA-256, HMAC-SHA256, MD5), from OpenSSL's EVP interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace llmc::storage {

// Incremental SHA-256. Not thread-safe; one instance per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // The 32-byte digest. The object must not be updated afterwards.
  std::string Finish();
  // Lowercase hex of Finish().
  std::string FinishHex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Lowercase hex of bytes.
std::string HexEncode(absl::string_view bytes);
// Lowercase hex SHA-256 of `data` (what SigV4 calls Hex(SHA256Hash(...))).
std::string Sha256Hex(absl::string_view data);
// The 32-byte HMAC-SHA256 of `data` keyed with `key`.
std::string HmacSha256(absl::string_view key, absl::string_view data);
// Base64 of the 16-byte MD5 of `data` (the Content-MD5 header).
std::string Md5Base64(absl::string_view data);

}  // namespace llmc::storage
