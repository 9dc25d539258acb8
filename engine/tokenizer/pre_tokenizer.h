// Pre-tokenizers of a tokenizer.json ("pre_tokenizer" section): they cut each normalized piece into words
// (and may rewrite them, e.g. ByteLevel maps bytes to its printable alphabet) before the model sees them.
//
// Supported types: ByteLevel (add_prefix_space, use_regex), Split (String/Regex pattern, every behavior,
// invert), Metaspace (replacement, prepend_scheme always/first/never or the older add_prefix_space, split),
// Digits, WhitespaceSplit, CharDelimiterSplit, Sequence. Others (Whitespace, BertPreTokenizer, Punctuation,
// UnicodeScripts, FixedLength) are rejected with an error naming them.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace llmc::tok {

// One piece of the input on its way through the pipeline (a split of HF's PreTokenizedString).
struct Piece {
  std::string text;        // the (normalized, pre-tokenized) text
  int32_t id = -1;         // the id of the added token this piece is; such pieces pass through unchanged
  bool at_origin = false;  // whether the piece starts at byte 0 of the original input
};

// Immutable after parsing; PreTokenize may be called from many threads at once.
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and possibly rewrites) every piece whose id is -1; empty pieces are dropped.
  virtual absl::Status PreTokenize(std::vector<Piece>* pieces) const = 0;
};

// Parses the "pre_tokenizer" JSON object (not null). `where` names the file and JSON path for errors.
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& j,
                                                                const std::string& where);

// The regex of HF's ByteLevel pre-tokenizer (GPT-2's).
inline constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace llmc::tok
