// The added tokens of a tokenizer.json ("added_tokens"): special and user-added tokens that are cut out of
// the text before the model runs, as Hugging Face `tokenizers`' AddedVocabulary does:
//  1. tokens with `normalized: false` are matched on the raw text (leftmost-longest);
//  2. every remaining piece is normalized, and tokens with `normalized: true` (their content normalized the
//  same
//     way) are matched on it.
// `single_word` tokens only match between non-word characters; `lstrip` / `rstrip` tokens swallow the
// whitespace on their left / right.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace llmc::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Immutable after Build; ExtractAndNormalize may be called from many threads at once.
class AddedVocabulary {
 public:
  AddedVocabulary();
  ~AddedVocabulary();
  AddedVocabulary(AddedVocabulary&&) noexcept;
  AddedVocabulary& operator=(AddedVocabulary&&) noexcept;

  // Reads the "added_tokens" list (null or absent: none). Ids are assigned as HF does: a token already in the
  // model's vocabulary keeps that id, a new one gets the next free id; a file whose ids disagree is loaded
  // the way HF loads it, with a warning. `normalizer` (may be null) normalizes the `normalized: true` tokens.
  static absl::StatusOr<AddedVocabulary> Build(const nlohmann::json* added_tokens, const BpeModel& model,
                                               const Normalizer* normalizer, const std::string& where);

  // Splits `text` (valid UTF-8) into pieces: added tokens (with their id) and normalized text between them.
  absl::Status ExtractAndNormalize(absl::string_view text, const Normalizer* normalizer,
                                   std::vector<Piece>* pieces) const;

  // The added token with this id, or null.
  const AddedToken* FindById(int32_t id) const;
  std::optional<int32_t> FindByContent(absl::string_view content) const;
  // Whether `content` is the content of a special token (decoding with skip_special_tokens drops such
  // tokens).
  bool IsSpecialContent(absl::string_view content) const { return special_contents_.contains(content); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  class Matcher;
  struct Match {
    size_t start, end;
    int32_t id;
  };
  // HF find_matches: the pieces of `text` split at the matches of `matcher`.
  void FindMatches(absl::string_view text, const Matcher& matcher, std::vector<Match>* out) const;
  absl::Status SplitOn(const Matcher& matcher, const Normalizer* normalizer,
                       std::vector<Piece>* pieces) const;

  std::vector<AddedToken> tokens_;                        // one per distinct id
  absl::flat_hash_map<int32_t, size_t> by_id_;            // id -> index in tokens_
  absl::flat_hash_map<std::string, int32_t> by_content_;  // content -> id
  absl::flat_hash_set<std::string> special_contents_;
  std::unique_ptr<Matcher> raw_matcher_, normalized_matcher_;
};

}  // namespace llmc::tok
