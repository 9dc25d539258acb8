// Normalizers of a tokenizer.json ("normalizer" section): string rewrites applied to each piece of the input
// that is not an added token, before pre-tokenization.
//
// Supported types: Sequence, Prepend, Replace (String or Regex pattern), Strip, NFC, NFD, NFKC, NFKD,
// Lowercase, ByteLevel. Others (BertNormalizer, StripAccents, Nmt, Precompiled) are rejected with an error
// naming them.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc::tok {

// Immutable after parsing; Normalize may be called from many threads at once.
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place; the result is valid UTF-8.
  virtual absl::Status Normalize(std::string* text) const = 0;
};

// Parses the "normalizer" JSON object (not null). `where` names the file and JSON path for errors.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& j,
                                                            const std::string& where);

}  // namespace llmc::tok
