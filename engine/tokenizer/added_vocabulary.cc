#include "engine/tokenizer/added_vocabulary.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bitset>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/unicode.h"

namespace llmc::tok {

// Leftmost-longest multi-pattern matcher over bytes (what HF builds with aho-corasick's
// MatchKind::LeftmostLongest). Patterns are valid UTF-8, so matches always fall on character boundaries.
class AddedVocabulary::Matcher {
 public:
  // Patterns earlier in the list win ties (same text).
  explicit Matcher(const std::vector<std::pair<std::string, int32_t>>& patterns) {
    nodes_.push_back(-1);
    for (const auto& [text, id] : patterns) {
      if (text.empty()) continue;
      int32_t node = 0;
      for (unsigned char b : text) {
        const uint64_t key = (uint64_t{static_cast<uint32_t>(node)} << 8) | b;
        auto it = edges_.find(key);
        if (it == edges_.end()) {
          it = edges_.emplace(key, static_cast<int32_t>(nodes_.size())).first;
          nodes_.push_back(-1);
        }
        node = it->second;
      }
      if (nodes_[node] < 0) nodes_[node] = id;
      first_bytes_.set(static_cast<unsigned char>(text[0]));
    }
  }

  bool empty() const { return nodes_.size() == 1; }

  // The leftmost-longest match at or after `from`; false when there is none.
  bool Find(absl::string_view text, size_t from, size_t* start, size_t* end, int32_t* id) const {
    for (size_t s = from; s < text.size(); ++s) {
      if (!first_bytes_.test(static_cast<unsigned char>(text[s]))) continue;
      int32_t node = 0, best = -1;
      size_t best_end = 0;
      for (size_t k = s; k < text.size(); ++k) {
        auto it =
            edges_.find((uint64_t{static_cast<uint32_t>(node)} << 8) | static_cast<unsigned char>(text[k]));
        if (it == edges_.end()) break;
        node = it->second;
        if (nodes_[node] >= 0) {
          best = nodes_[node];
          best_end = k + 1;
        }
      }
      if (best >= 0) {
        *start = s;
        *end = best_end;
        *id = best;
        return true;
      }
    }
    return false;
  }

 private:
  std::vector<int32_t> nodes_;                    // per trie node: the id of the pattern ending there, or -1
  absl::flat_hash_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> child node
  std::bitset<256> first_bytes_;
};

namespace {

// Word characters as the Rust `regex` crate's Unicode \w sees them (HF's single_word check uses it).
bool IsWordChar(char32_t cp) {
  if (cp < 0x80)
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  static const Regex* word = [] {
    auto re = Regex::Compile("^[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]");
    return re.ok() ? re->release() : nullptr;
  }();
  if (word == nullptr) return false;
  std::string s;
  AppendUtf8(cp, &s);
  auto found = word->Search(s);
  return found.ok() && *found;
}

}  // namespace

AddedVocabulary::AddedVocabulary() = default;
AddedVocabulary::~AddedVocabulary() = default;
AddedVocabulary::AddedVocabulary(AddedVocabulary&&) noexcept = default;
AddedVocabulary& AddedVocabulary::operator=(AddedVocabulary&&) noexcept = default;

absl::StatusOr<AddedVocabulary> AddedVocabulary::Build(const nlohmann::json* list, const BpeModel& model,
                                                       const Normalizer* normalizer,
                                                       const std::string& where) {
  AddedVocabulary v;
  std::vector<AddedToken> special_order, plain_order;  // HF's special_tokens and added_tokens lists
  absl::flat_hash_map<int32_t, AddedToken> by_id;
  auto token_to_id = [&](const std::string& content) -> std::optional<int32_t> {
    if (auto it = v.by_content_.find(content); it != v.by_content_.end()) return it->second;
    return model.TokenToId(content);
  };
  auto same = [](const AddedToken& a, const AddedToken& b) {
    return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip &&
           a.rstrip == b.rstrip && a.normalized == b.normalized && a.special == b.special;
  };
  if (list != nullptr && !list->is_null()) {
    if (!list->is_array()) return FieldError(where, "added_tokens", "must be a list");
    for (size_t i = 0; i < list->size(); ++i) {
      const nlohmann::json& e = (*list)[i];
      const std::string at = absl::StrCat(where, ": added_tokens[", i, "]");
      if (!e.is_object()) return absl::InvalidArgumentError(absl::StrCat(at, ": expected an object"));
      AddedToken t;
      LLMC_ASSIGN_OR_RETURN(t.content, GetString(e, "content", at));
      LLMC_ASSIGN_OR_RETURN(const int64_t file_id, GetUint(e, "id", -1, at));
      LLMC_ASSIGN_OR_RETURN(t.special, GetBool(e, "special", false, at));
      LLMC_ASSIGN_OR_RETURN(t.single_word, GetBool(e, "single_word", false, at));
      LLMC_ASSIGN_OR_RETURN(t.lstrip, GetBool(e, "lstrip", false, at));
      LLMC_ASSIGN_OR_RETURN(t.rstrip, GetBool(e, "rstrip", false, at));
      LLMC_ASSIGN_OR_RETURN(t.normalized, GetBool(e, "normalized", !t.special, at));

      // HF AddedVocabulary::add_tokens, one token at a time in file order.
      if (t.special && !t.content.empty() && !v.special_contents_.contains(t.content)) {
        special_order.push_back(t);
        v.special_contents_.insert(t.content);
      }
      if (t.content.empty()) continue;
      // Skip exact repeats. A content keeps its id once it has one, so only that id can hold an equal token.
      if (auto c = v.by_content_.find(t.content); c != v.by_content_.end()) {
        if (auto e = by_id.find(c->second); e != by_id.end() && same(e->second, t)) continue;
      }
      int32_t id;
      if (auto known = token_to_id(t.content)) {
        id = *known;
      } else {
        const int32_t vocab_size = static_cast<int32_t>(model.size());
        id = vocab_size;
        for (const auto& [content, other] : v.by_content_)
          id = std::max(id, (other >= vocab_size || vocab_size == 0) ? other + 1 : vocab_size);
      }
      if (file_id >= 0 && file_id != id)
        spdlog::warn("{}: token \"{}\" is listed with id {} but gets id {} (as in Hugging Face tokenizers)",
                     at, t.content, file_id, id);
      t.id = id;
      v.by_content_[t.content] = id;
      by_id[id] = t;
      if (!v.special_contents_.contains(t.content)) plain_order.push_back(t);
    }
  }
  for (auto& [id, t] : by_id) {
    v.by_id_[id] = v.tokens_.size();
    v.tokens_.push_back(t);
  }

  // Matchers over special tokens then plain ones, split by `normalized`.
  std::vector<std::pair<std::string, int32_t>> raw, normalized;
  for (const auto* order : {&special_order, &plain_order}) {
    for (const AddedToken& t : *order) {
      const int32_t id = *token_to_id(t.content);
      if (!t.normalized) {
        raw.emplace_back(t.content, id);
        continue;
      }
      std::string content = t.content;
      if (normalizer != nullptr) {
        if (auto s = normalizer->Normalize(&content); !s.ok())
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": normalizing added token \"", t.content, "\" failed: ", s.message()));
      }
      normalized.emplace_back(std::move(content), id);
    }
  }
  v.raw_matcher_ = std::make_unique<Matcher>(raw);
  v.normalized_matcher_ = std::make_unique<Matcher>(normalized);
  return v;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::FindByContent(absl::string_view content) const {
  auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

void AddedVocabulary::FindMatches(absl::string_view s, const Matcher& matcher,
                                  std::vector<Match>* out) const {
  size_t start_offset = 0, from = 0, mstart = 0, mend = 0;
  int32_t id = -1;
  while (from < s.size() && matcher.Find(s, from, &mstart, &mend, &id)) {
    from = mend;  // the matcher resumes after the raw match, whatever the options do below
    size_t start = mstart, stop = mend;
    const AddedToken* t = FindById(id);
    if (t == nullptr) continue;  // cannot happen: every pattern's id is an added token's
    if (t->single_word) {
      const bool start_space = start == 0 || !IsWordChar(LastCodePoint(s, start));
      size_t p = stop;
      const bool stop_space = stop == s.size() || !IsWordChar(NextCodePoint(s, &p));
      if (!start_space || !stop_space) continue;
    }
    if (t->lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const char32_t cp = LastCodePoint(s, new_start);
        if (!IsUnicodeWhitespace(cp)) break;
        size_t back = new_start - 1;
        while (back > 0 && (static_cast<unsigned char>(s[back]) & 0xC0) == 0x80) --back;
        new_start = back;
      }
      start = std::max(new_start, start_offset);
    }
    if (t->rstrip) {
      while (stop < s.size()) {
        size_t p = stop;
        if (!IsUnicodeWhitespace(NextCodePoint(s, &p))) break;
        stop = p;
      }
    }
    if (start_offset < start) out->push_back({start_offset, start, -1});
    out->push_back({start, stop, id});
    start_offset = stop;
  }
  if (start_offset != s.size()) out->push_back({start_offset, s.size(), -1});
}

absl::Status AddedVocabulary::SplitOn(const Matcher& matcher, const Normalizer* normalizer,
                                      std::vector<Piece>* pieces) const {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  std::vector<Match> matches;
  for (Piece& p : *pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    if (normalizer != nullptr) LLMC_RETURN_IF_ERROR(normalizer->Normalize(&p.text));
    if (matcher.empty()) {
      if (!p.text.empty()) out.push_back(std::move(p));
      continue;
    }
    matches.clear();
    FindMatches(p.text, matcher, &matches);
    for (const Match& m : matches) {
      if (m.end <= m.start) continue;
      out.push_back(Piece{p.text.substr(m.start, m.end - m.start), m.id, p.at_origin && m.start == 0});
    }
  }
  *pieces = std::move(out);
  return absl::OkStatus();
}

absl::Status AddedVocabulary::ExtractAndNormalize(absl::string_view text, const Normalizer* normalizer,
                                                  std::vector<Piece>* pieces) const {
  pieces->clear();
  pieces->push_back(Piece{std::string(text), -1, true});
  LLMC_RETURN_IF_ERROR(SplitOn(*raw_matcher_, nullptr, pieces));
  return SplitOn(*normalized_matcher_, normalizer, pieces);
}

}  // namespace llmc::tok
