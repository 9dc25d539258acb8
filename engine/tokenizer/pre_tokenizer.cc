#include "engine/tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/unicode.h"

namespace llmc::tok {

namespace {

// Replaces every piece without an id by the pieces `fn(piece, &out)` appends, then drops empty pieces (as
// HF's PreTokenizedString::split does).
template <typename Fn>
absl::Status SplitPieces(std::vector<Piece>* pieces, Fn fn) {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  for (Piece& p : *pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    LLMC_RETURN_IF_ERROR(fn(std::move(p), &out));
  }
  std::erase_if(out, [](const Piece& p) { return p.id < 0 && p.text.empty(); });
  *pieces = std::move(out);
  return absl::OkStatus();
}

// Appends the sub-pieces of `text` at `ranges`. A sub-piece starts the original input only if it starts
// `text` and `text` did.
void AppendRanges(const std::string& text, bool at_origin, const std::vector<ByteRange>& ranges,
                  std::vector<Piece>* out) {
  for (const ByteRange& r : ranges)
    out->push_back(Piece{text.substr(r.first, r.second - r.first), -1, at_origin && r.first == 0});
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& p : parts_) LLMC_RETURN_IF_ERROR(p->PreTokenize(pieces));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<ByteRange> ranges;
    return SplitPieces(pieces, [&](Piece&& p, std::vector<Piece>* out) -> absl::Status {
      ranges.clear();
      LLMC_RETURN_IF_ERROR(SplitByPattern(p.text, pattern_, behavior_, invert_, &ranges));
      AppendRanges(p.text, p.at_origin, ranges, out);
      return absl::OkStatus();
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// HF ByteLevel: optional leading space, GPT-2 regex split (Isolated), then every byte mapped to its printable
// byte-level character.
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    const auto& chars = ByteLevelCharUtf8();
    std::vector<ByteRange> matches;
    std::string mapped;
    return SplitPieces(pieces, [&](Piece&& p, std::vector<Piece>* out) -> absl::Status {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      auto emit = [&](size_t begin, size_t end) {
        mapped.clear();
        for (size_t i = begin; i < end; ++i) mapped.append(chars[static_cast<unsigned char>(p.text[i])]);
        out->push_back(Piece{mapped, -1, p.at_origin && begin == 0});
      };
      if (!regex_) {
        emit(0, p.text.size());
        return absl::OkStatus();
      }
      // Isolated split: matches and the text between them are all pieces.
      matches.clear();
      LLMC_RETURN_IF_ERROR(regex_->FindAll(p.text, &matches));
      size_t prev = 0;
      for (const ByteRange& m : matches) {
        if (prev < m.first) emit(prev, m.first);
        if (m.first < m.second) emit(m.first, m.second);
        prev = m.second;
      }
      if (prev < p.text.size()) emit(prev, p.text.size());
      return absl::OkStatus();
    });
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // null when use_regex is false
};

enum class PrependScheme { kAlways, kFirst, kNever };

// HF Metaspace: spaces become the replacement character, which is prepended per `prepend_scheme`; then the
// text is split before each replacement character (MergedWithNext) when `split` is set.
class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)),
        scheme_(scheme),
        split_(split),
        pattern_(Pattern::Literal(replacement_)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<ByteRange> ranges;
    return SplitPieces(pieces, [&](Piece&& p, std::vector<Piece>* out) -> absl::Status {
      std::string text;
      text.reserve(p.text.size() + replacement_.size() * 4);
      for (char c : p.text) {
        if (c == ' ') {
          text.append(replacement_);
        } else {
          text.push_back(c);
        }
      }
      const bool starts_with_replacement = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts_with_replacement &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_origin))) {
        text.insert(0, replacement_);
      }
      if (!split_) {
        out->push_back(Piece{std::move(text), -1, p.at_origin});
        return absl::OkStatus();
      }
      ranges.clear();
      LLMC_RETURN_IF_ERROR(SplitByPattern(text, pattern_, SplitBehavior::kMergedWithNext, false, &ranges));
      AppendRanges(text, p.at_origin, ranges, out);
      return absl::OkStatus();
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  Pattern pattern_;
};

absl::StatusOr<Pattern> RegexPattern(absl::string_view pattern, const std::string& where) {
  return Pattern::FromJson(nlohmann::json{{"Regex", std::string(pattern)}}, where);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParseMetaspace(const nlohmann::json& j,
                                                             const std::string& where) {
  LLMC_ASSIGN_OR_RETURN(const std::string replacement, GetString(j, "replacement", where));
  size_t pos = 0;
  if (replacement.empty() || (NextCodePoint(replacement, &pos), pos != replacement.size()))
    return FieldError(where, "replacement", "must be exactly one character");
  LLMC_ASSIGN_OR_RETURN(auto scheme_name, GetOptionalString(j, "prepend_scheme", where));
  PrependScheme scheme = PrependScheme::kAlways;
  if (scheme_name) {
    if (*scheme_name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (*scheme_name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (*scheme_name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      return FieldError(where, "prepend_scheme",
                        absl::StrCat("must be always, first or never, got ", *scheme_name));
    }
  }
  // Files written before prepend_scheme existed say add_prefix_space; false means never.
  if (auto it = j.find("add_prefix_space"); it != j.end() && it->is_boolean() && !it->get<bool>()) {
    if (scheme_name && scheme != PrependScheme::kNever)
      return FieldError(where, "add_prefix_space", "is false but prepend_scheme is not never");
    scheme = PrependScheme::kNever;
  }
  LLMC_ASSIGN_OR_RETURN(const bool split, GetBool(j, "split", true, where));
  return std::make_unique<MetaspacePreTokenizer>(replacement, scheme, split);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& j,
                                                                const std::string& where) {
  LLMC_ASSIGN_OR_RETURN(const std::string type, TypeOf(j, where));
  if (type == "Sequence") {
    LLMC_ASSIGN_OR_RETURN(const nlohmann::json* list, GetArray(j, "pretokenizers", where));
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(auto part,
                            ParsePreTokenizer((*list)[i], absl::StrCat(where, ".pretokenizers[", i, "]")));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "ByteLevel") {
    LLMC_ASSIGN_OR_RETURN(const bool add_prefix_space, GetBool(j, "add_prefix_space", true, where));
    LLMC_ASSIGN_OR_RETURN(const bool use_regex, GetBool(j, "use_regex", true, where));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      auto compiled = Regex::Compile(kGpt2Pattern);
      if (!compiled.ok()) return absl::InternalError(absl::StrCat(where, ": ", compiled.status().message()));
      regex = std::move(*compiled);
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }
  if (type == "Split") {
    auto it = j.find("pattern");
    if (it == j.end()) return FieldError(where, "pattern", "is missing");
    LLMC_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(*it, absl::StrCat(where, ".pattern")));
    auto b = j.find("behavior");
    if (b == j.end()) return FieldError(where, "behavior", "is missing");
    LLMC_ASSIGN_OR_RETURN(const SplitBehavior behavior,
                          ParseSplitBehavior(*b, absl::StrCat(where, ".behavior")));
    LLMC_ASSIGN_OR_RETURN(const bool invert, GetBool(j, "invert", false, where));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior, invert);
  }
  if (type == "Metaspace") return ParseMetaspace(j, where);
  if (type == "Digits") {
    // Rust's char::is_numeric is \p{N}; each digit is a match, merged when not individual.
    LLMC_ASSIGN_OR_RETURN(const bool individual, GetBool(j, "individual_digits", false, where));
    LLMC_ASSIGN_OR_RETURN(Pattern pattern, RegexPattern("\\p{N}", where));
    return std::make_unique<SplitPreTokenizer>(
        std::move(pattern), individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
  }
  if (type == "WhitespaceSplit") {
    // char::is_whitespace, delimiters removed (\s is rewritten to Unicode White_Space, see regex.h).
    LLMC_ASSIGN_OR_RETURN(Pattern pattern, RegexPattern("\\s", where));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), SplitBehavior::kRemoved, false);
  }
  if (type == "CharDelimiterSplit") {
    LLMC_ASSIGN_OR_RETURN(std::string delimiter, GetString(j, "delimiter", where));
    return std::make_unique<SplitPreTokenizer>(Pattern::Literal(std::move(delimiter)),
                                               SplitBehavior::kRemoved, false);
  }
  return absl::UnimplementedError(
      absl::StrCat(where, ": pre_tokenizer type \"", type,
                   "\" is not supported (supported: ByteLevel, Split, Metaspace, Digits, WhitespaceSplit, "
                   "CharDelimiterSplit, Sequence); use a model whose tokenizer.json needs only these"));
}

}  // namespace llmc::tok
