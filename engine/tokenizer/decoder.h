// Decoders of a tokenizer.json ("decoder" section): they turn the token strings of a sequence back into text.
//
// Supported types: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence. Others
// (WordPiece, CTC) are rejected with an error naming them.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace llmc::tok {

// Immutable after parsing; DecodeChain may be called from many threads at once.
class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the token strings in place (HF's decode_chain); the caller concatenates the result.
  virtual absl::Status DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// Parses the "decoder" JSON object (not null). `where` names the file and JSON path for errors.
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& j, const std::string& where);

}  // namespace llmc::tok
