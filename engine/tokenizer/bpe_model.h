// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), with the exact merge order of Hugging
// Face `tokenizers`: lowest merge rank first, leftmost on ties; unknown characters go to byte-fallback tokens
// (<0xAB>) when `byte_fallback` is set, else to `unk_token` (fused runs when `fuse_unk`), else are dropped;
// `ignore_merges` takes a whole word straight from the vocabulary when it is there.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc::tok {

class BpeCache;

// Immutable after FromJson except for an internal, internally locked word cache: Tokenize may be called from
// many threads at once.
class BpeModel {
 public:
  // Parses the "model" object. Merges may be "a b" strings or ["a", "b"] pairs. Errors (unknown merge tokens,
  // duplicate ids, dropout, ...) name `where` and the offending entry.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model,
                                                            const std::string& where);
  ~BpeModel();

  // Appends the ids of `word` (one pre-token, non-empty) to `ids`. Fails only when an unknown character needs
  // an `unk_token` that is not in the vocabulary.
  absl::Status Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The token of `id`, or null if the vocabulary has no such id.
  const std::string* IdToToken(int32_t id) const;
  // Number of entries in the vocabulary.
  int64_t size() const { return static_cast<int64_t>(vocab_.size()); }
  // Largest id in the vocabulary, -1 when empty.
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  BpeModel();
  // Runs the merges over `word` without the cache.
  absl::Status MergeWord(absl::string_view word, std::vector<int32_t>* ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  // (left id, right id) -> (rank, merged id)
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::vector<int32_t> byte_fallback_ids_;  // id of <0xAB> per byte, -1 when absent
  std::unique_ptr<BpeCache> cache_;
};

}  // namespace llmc::tok
