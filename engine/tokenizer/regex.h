// Regular expressions for tokenizer.json patterns, on PCRE2 (UTF + UCP mode, JIT when available).
//
// Hugging Face `tokenizers` runs its patterns on Oniguruma. PCRE2 has the same Perl-style syntax and
// leftmost-first backtracking semantics; the one visible difference in practice is the Unicode meaning of
// `\s` and `\w`, so `Regex::Compile` rewrites those escapes to Oniguruma's definitions (`\s` is
// U+0009..U+000D, U+0085 and the Z categories, so it matches NEL but not U+180E; `\w` is
// Letter|Mark|Number|Connector_Punctuation). Iteration over matches follows the Rust `onig` crate: an empty
// match right where the previous match ended is skipped.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc::tok {

// Half-open byte range [first, second) into a string.
using ByteRange = std::pair<size_t, size_t>;

// A compiled pattern. Immutable after Compile; FindAll may be called from many threads at once.
class Regex {
 public:
  // Compiles `pattern` (Oniguruma/HF dialect). The error names the pattern and PCRE2's message with its
  // offset.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(absl::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every match in `text` (valid UTF-8) to `matches`, in order, without overlaps. Fails only when
  // PCRE2 reports a matching error (e.g. its resource limits), with the pattern named.
  absl::Status FindAll(absl::string_view text, std::vector<ByteRange>* matches) const;

  // Whether the pattern matches somewhere in `text`.
  absl::StatusOr<bool> Search(absl::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  // One match at or after `start`; returns false when there is none.
  absl::StatusOr<bool> MatchAt(absl::string_view text, size_t start, ByteRange* match) const;

  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

// A tokenizer.json pattern: `{"String": "..."}` (a literal) or `{"Regex": "..."}`.
class Pattern {
 public:
  // `where` names the JSON location for errors, e.g. "tokenizer.json:
  // pre_tokenizer.pretokenizers[0].pattern".
  static absl::StatusOr<Pattern> FromJson(const nlohmann::json& j, absl::string_view where);
  static Pattern Literal(std::string text);

  // Every match in `text`, in order, as HF's `Pattern::find_matches` reports them (an empty literal matches
  // nowhere).
  absl::Status FindMatches(absl::string_view text, std::vector<ByteRange>* matches) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;  // null for a literal
};

// How `SplitByPattern` treats the delimiters it finds (HF `SplitDelimiterBehavior`).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Parses "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext" or "Contiguous".
absl::StatusOr<SplitBehavior> ParseSplitBehavior(const nlohmann::json& j, absl::string_view where);

// Splits `text` at the matches of `pattern` as HF's `NormalizedString::split` does (with `invert`, the
// non-matching stretches act as the delimiters). Appends the pieces' byte ranges to `pieces`, empty ones left
// out.
absl::Status SplitByPattern(absl::string_view text, const Pattern& pattern, SplitBehavior behavior,
                            bool invert, std::vector<ByteRange>* pieces);

}  // namespace llmc::tok
