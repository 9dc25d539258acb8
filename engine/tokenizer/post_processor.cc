#include "engine/tokenizer/post_processor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/tokenizer/json_fields.h"

namespace llmc::tok {

namespace {

// Wraps the sequence as prefix + ids + suffix.
class AffixProcessor final : public PostProcessor {
 public:
  AffixProcessor(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids->insert(ids->begin(), prefix_.begin(), prefix_.end());
    ids->insert(ids->end(), suffix_.begin(), suffix_.end());
  }
  std::vector<int32_t> Prefix() const override { return prefix_; }
  std::vector<int32_t> Suffix() const override { return suffix_; }

 private:
  std::vector<int32_t> prefix_, suffix_;
};

// TemplateProcessing with a single template that may repeat the sequence ($A $A is legal, if odd).
class TemplateProcessor final : public PostProcessor {
 public:
  // Each item: a list of special ids, or nullopt for the sequence itself.
  explicit TemplateProcessor(std::vector<std::optional<std::vector<int32_t>>> items)
      : items_(std::move(items)) {}
  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    std::vector<int32_t> out;
    out.reserve(ids->size() + 8);
    for (const auto& item : items_) {
      if (item) {
        out.insert(out.end(), item->begin(), item->end());
      } else {
        out.insert(out.end(), ids->begin(), ids->end());
      }
    }
    *ids = std::move(out);
  }
  std::vector<int32_t> Prefix() const override {
    std::vector<int32_t> out;
    for (const auto& item : items_) {
      if (!item) break;
      out.insert(out.end(), item->begin(), item->end());
    }
    return out;
  }
  std::vector<int32_t> Suffix() const override {
    std::vector<int32_t> out;
    for (auto it = items_.rbegin(); it != items_.rend() && *it; ++it)
      out.insert(out.begin(), (*it)->begin(), (*it)->end());
    return out;
  }

 private:
  std::vector<std::optional<std::vector<int32_t>>> items_;
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {
    for (const auto& p : parts_) p->Process(ids, add_special_tokens);
  }
  std::vector<int32_t> Prefix() const override {
    std::vector<int32_t> out;
    for (const auto& p : parts_) {
      auto part = p->Prefix();
      out.insert(out.begin(), part.begin(), part.end());
    }
    return out;
  }
  std::vector<int32_t> Suffix() const override {
    std::vector<int32_t> out;
    for (const auto& p : parts_) {
      auto part = p->Suffix();
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// ["</s>", 2] as Roberta/Bert processors write their special tokens.
absl::StatusOr<int32_t> TokenPairId(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_unsigned())
    return FieldError(where, key, "must be [\"token\", id]");
  return static_cast<int32_t>((*it)[1].get<uint64_t>());
}

absl::StatusOr<std::unique_ptr<PostProcessor>> ParseTemplate(const nlohmann::json& j,
                                                             const std::string& where) {
  LLMC_ASSIGN_OR_RETURN(const nlohmann::json* single, GetArray(j, "single", where));
  auto specials = j.find("special_tokens");
  std::vector<std::optional<std::vector<int32_t>>> items;
  for (size_t i = 0; i < single->size(); ++i) {
    const nlohmann::json& piece = (*single)[i];
    const std::string at = absl::StrCat(where, ".single[", i, "]");
    if (piece.is_object() && piece.contains("Sequence")) {
      items.emplace_back(std::nullopt);
      continue;
    }
    if (!piece.is_object() || !piece.contains("SpecialToken") || !piece["SpecialToken"].is_object())
      return absl::InvalidArgumentError(
          absl::StrCat(at, ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}, got ", piece.dump()));
    LLMC_ASSIGN_OR_RETURN(const std::string name, GetString(piece["SpecialToken"], "id", at));
    if (specials == j.end() || !specials->is_object() || !specials->contains(name))
      return absl::InvalidArgumentError(
          absl::StrCat(at, ": special token \"", name, "\" is not defined in special_tokens"));
    const nlohmann::json& def = (*specials)[name];
    LLMC_ASSIGN_OR_RETURN(const nlohmann::json* id_list,
                          GetArray(def, "ids", absl::StrCat(where, ".special_tokens[\"", name, "\"]")));
    std::vector<int32_t> ids;
    for (const auto& id : *id_list) {
      if (!id.is_number_unsigned())
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".special_tokens[\"", name, "\"].ids: ", id.dump(), " is not a token id"));
      ids.push_back(static_cast<int32_t>(id.get<uint64_t>()));
    }
    items.emplace_back(std::move(ids));
  }
  return std::make_unique<TemplateProcessor>(std::move(items));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const nlohmann::json& j,
                                                                  const std::string& where) {
  LLMC_ASSIGN_OR_RETURN(const std::string type, TypeOf(j, where));
  if (type == "TemplateProcessing") return ParseTemplate(j, where);
  if (type == "ByteLevel")
    return std::make_unique<AffixProcessor>(std::vector<int32_t>{}, std::vector<int32_t>{});
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    LLMC_ASSIGN_OR_RETURN(const int32_t cls, TokenPairId(j, "cls", where));
    LLMC_ASSIGN_OR_RETURN(const int32_t sep, TokenPairId(j, "sep", where));
    return std::make_unique<AffixProcessor>(std::vector<int32_t>{cls}, std::vector<int32_t>{sep});
  }
  if (type == "Sequence") {
    LLMC_ASSIGN_OR_RETURN(const nlohmann::json* list, GetArray(j, "processors", where));
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      LLMC_ASSIGN_OR_RETURN(auto part,
                            ParsePostProcessor((*list)[i], absl::StrCat(where, ".processors[", i, "]")));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceProcessor>(std::move(parts));
  }
  return absl::UnimplementedError(absl::StrCat(where, ": post_processor type \"", type,
                                               "\" is not supported (supported: TemplateProcessing, "
                                               "RobertaProcessing, BertProcessing, ByteLevel, Sequence)"));
}

}  // namespace llmc::tok
