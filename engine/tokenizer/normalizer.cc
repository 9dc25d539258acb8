#include "engine/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/unicode.h"

namespace llmc::tok {

namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& p : parts_) LLMC_RETURN_IF_ERROR(p->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// HF Prepend: adds the string in front of any non-empty text.
class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

// HF Replace: every match of the pattern becomes `content`.
class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string* text) const override {
    std::vector<ByteRange> matches;
    LLMC_RETURN_IF_ERROR(pattern_.FindMatches(*text, &matches));
    if (matches.empty()) return absl::OkStatus();
    std::string out;
    out.reserve(text->size() + matches.size() * content_.size());
    size_t prev = 0;
    for (const ByteRange& m : matches) {
      out.append(*text, prev, m.first - prev);
      out.append(content_);
      prev = m.second;
    }
    out.append(*text, prev, std::string::npos);
    *text = std::move(out);
    return absl::OkStatus();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// HF Strip: removes leading and/or trailing Unicode whitespace.
class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!IsUnicodeWhitespace(NextCodePoint(*text, &next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        const char32_t cp = LastCodePoint(*text, end);
        if (!IsUnicodeWhitespace(cp)) break;
        end -= cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      }
    }
    *text = text->substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

class UnicodeFormNormalizer final : public Normalizer {
 public:
  explicit UnicodeFormNormalizer(NormalizationForm form) : form_(form) {}
  absl::Status Normalize(std::string* text) const override { return UnicodeNormalize(form_, text); }

 private:
  NormalizationForm form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override { return UnicodeLowercase(text); }
};

// HF ByteLevel normalizer: each byte becomes its byte-level character (no splitting).
class ByteLevelNormalizer final : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override {
    const auto& chars = ByteLevelCharUtf8();
    std::string out;
    out.reserve(text->size() * 2);
    for (unsigned char b : *text) out.append(chars[b]);
    *text = std::move(out);
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& j,
                                                            const std::string& where) {
  LLMC_ASSIGN_OR_RETURN(const std::string type, TypeOf(j, where));
  if (type == "Sequence") {
    LLMC_ASSIGN_OR_RETURN(const nlohmann::json* list, GetArray(j, "normalizers", where));
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(auto part,
                            ParseNormalizer((*list)[i], absl::StrCat(where, ".normalizers[", i, "]")));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend") {
    LLMC_ASSIGN_OR_RETURN(std::string prefix, GetString(j, "prepend", where));
    return std::make_unique<PrependNormalizer>(std::move(prefix));
  }
  if (type == "Replace") {
    auto it = j.find("pattern");
    if (it == j.end()) return FieldError(where, "pattern", "is missing");
    LLMC_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(*it, absl::StrCat(where, ".pattern")));
    LLMC_ASSIGN_OR_RETURN(std::string content, GetString(j, "content", where));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern), std::move(content));
  }
  if (type == "Strip") {
    LLMC_ASSIGN_OR_RETURN(const bool left, GetBool(j, "strip_left", true, where));
    LLMC_ASSIGN_OR_RETURN(const bool right, GetBool(j, "strip_right", true, where));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "NFC") return std::make_unique<UnicodeFormNormalizer>(NormalizationForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeFormNormalizer>(NormalizationForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeFormNormalizer>(NormalizationForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeFormNormalizer>(NormalizationForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  return absl::UnimplementedError(
      absl::StrCat(where, ": normalizer type \"", type,
                   "\" is not supported (supported: Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD, "
                   "Lowercase, ByteLevel); use a model whose tokenizer.json needs only these"));
}

}  // namespace llmc::tok
