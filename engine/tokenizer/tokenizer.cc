#include "engine/tokenizer/tokenizer.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/io/model_dir.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/post_processor.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/unicode.h"

namespace llmc {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kMaxTokenizerJsonBytes = uint64_t{1} << 30;

// The section `key` of the file, or null when absent or JSON null.
const json* Section(const json& root, const char* key) {
  auto it = root.find(key);
  return it == root.end() || it->is_null() ? nullptr : &*it;
}

// Parses a small JSON file beside tokenizer.json; nullopt (with a warning if it exists but is broken)
// otherwise.
std::optional<json> ReadSiblingJson(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  auto text = ReadTextFile(path.string(), 64u << 20);
  if (!text.ok()) {
    spdlog::warn("{}; ignoring it", std::string(text.status().message()));
    return std::nullopt;
  }
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    spdlog::warn("{}: not a JSON object; ignoring it", path.string());
    return std::nullopt;
  }
  return j;
}

// "bos_token": "<s>" or {"content": "<s>", ...} in tokenizer_config.json.
std::optional<std::string> ConfigTokenString(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

// "eos_token_id": 2 or [2, 32000] in generation_config.json.
std::optional<int32_t> ConfigTokenId(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_number_unsigned()) return static_cast<int32_t>(it->get<uint64_t>());
  if (it->is_array() && !it->empty() && (*it)[0].is_number_unsigned())
    return static_cast<int32_t>((*it)[0].get<uint64_t>());
  return std::nullopt;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonText(absl::string_view json_text,
                                                                   const std::string& source) {
  // nlohmann throws on malformed input and on unchecked type mismatches: keep every throw inside this
  // function.
  try {
    const json root = json::parse(json_text.begin(), json_text.end());
    if (!root.is_object())
      return absl::InvalidArgumentError(absl::StrCat(source,
                                                     ": expected a JSON object (a Hugging Face "
                                                     "tokenizer.json), got ",
                                                     root.type_name()));
    if (auto v = root.find("version"); v != root.end() && !(v->is_string() && v->get<std::string>() == "1.0"))
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": tokenizer.json version ", v->dump(), " is not supported (only \"1.0\")"));
    std::unique_ptr<Tokenizer> t(new Tokenizer());
    t->source_ = source;

    const json* model = Section(root, "model");
    if (model == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": no \"model\" section; this is not a tokenizer.json"));
    const std::string model_where = absl::StrCat(source, ": model");
    if (!model->is_object())
      return absl::InvalidArgumentError(absl::StrCat(model_where, ": expected an object"));
    std::string model_type = "BPE";
    if (auto it = model->find("type"); it != model->end()) {
      model_type = it->is_string() ? it->get<std::string>() : it->dump();
    } else if (!model->contains("merges")) {
      model_type = "(untyped, without merges)";
    }
    if (model_type != "BPE")
      return absl::UnimplementedError(absl::StrCat(model_where, ": model type \"", model_type,
                                                   "\" is not supported (only BPE); use a model with a BPE "
                                                   "tokenizer (GPT-2, Llama, Mistral, Qwen style)"));
    LLMC_ASSIGN_OR_RETURN(t->model_, tok::BpeModel::FromJson(*model, model_where));

    if (const json* n = Section(root, "normalizer")) {
      LLMC_ASSIGN_OR_RETURN(t->normalizer_, tok::ParseNormalizer(*n, absl::StrCat(source, ": normalizer")));
    }
    if (const json* p = Section(root, "pre_tokenizer")) {
      LLMC_ASSIGN_OR_RETURN(t->pre_tokenizer_,
                            tok::ParsePreTokenizer(*p, absl::StrCat(source, ": pre_tokenizer")));
    }
    if (const json* p = Section(root, "post_processor")) {
      LLMC_ASSIGN_OR_RETURN(t->post_processor_,
                            tok::ParsePostProcessor(*p, absl::StrCat(source, ": post_processor")));
    }
    if (const json* d = Section(root, "decoder")) {
      LLMC_ASSIGN_OR_RETURN(t->decoder_, tok::ParseDecoder(*d, absl::StrCat(source, ": decoder")));
    }
    LLMC_ASSIGN_OR_RETURN(auto added, tok::AddedVocabulary::Build(Section(root, "added_tokens"), *t->model_,
                                                                  t->normalizer_.get(), source));
    t->added_ = std::make_unique<tok::AddedVocabulary>(std::move(added));

    int64_t max_id = t->model_->max_id();
    for (const tok::AddedToken& a : t->added_->tokens()) max_id = std::max<int64_t>(max_id, a.id);
    t->vocab_size_ = max_id + 1;

    // Single special ids the post-processor adds around a sequence serve as bos/eos.
    if (t->post_processor_) {
      const std::vector<int32_t> prefix = t->post_processor_->Prefix(), suffix = t->post_processor_->Suffix();
      for (const auto* ids : {&prefix, &suffix}) {
        for (int32_t id : *ids) {
          if (t->TokenOf(id) == nullptr)  // HF loads such a file too; decoding its output would fail
            spdlog::warn("{}: post_processor adds token id {}, which is not in the vocabulary", source, id);
        }
      }
      if (prefix.size() == 1 && t->TokenOf(prefix[0]) != nullptr) t->bos_id_ = prefix[0];
      if (suffix.size() == 1 && t->TokenOf(suffix[0]) != nullptr) t->eos_id_ = suffix[0];
    }
    return t;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid tokenizer.json: ", e.what(),
                                                   "; re-save it with Hugging Face tokenizers/transformers"));
  } catch (const std::exception& e) {  // e.g. std::bad_alloc on a huge vocabulary
    return absl::ResourceExhaustedError(absl::StrCat(source, ": loading failed: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  auto text = ReadTextFile(path, kMaxTokenizerJsonBytes);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status()))
      return absl::NotFoundError(absl::StrCat(path,
                                              ": no such file; give the path of a Hugging Face "
                                              "tokenizer.json"));
    return text.status();
  }
  LLMC_ASSIGN_OR_RETURN(auto t, FromJsonText(*text, path));

  // bos/eos as transformers names them, from the files beside tokenizer.json.
  const fs::path dir = fs::path(path).parent_path();
  if (auto config = ReadSiblingJson(dir / "tokenizer_config.json")) {
    for (auto [key, slot] : {std::pair{"bos_token", &t->bos_id_}, std::pair{"eos_token", &t->eos_id_}}) {
      if (auto name = ConfigTokenString(*config, key)) {
        if (auto id = t->TokenToId(*name)) {
          *slot = *id;
        } else {
          spdlog::warn("{}: {} \"{}\" is not in the vocabulary of {}; ignoring it",
                       (dir / "tokenizer_config.json").string(), key, *name, path);
        }
      }
    }
  }
  if (!t->bos_id_ || !t->eos_id_) {
    if (auto gen = ReadSiblingJson(dir / "generation_config.json")) {
      if (!t->bos_id_) t->bos_id_ = ConfigTokenId(*gen, "bos_token_id");
      if (!t->eos_id_) t->eos_id_ = ConfigTokenId(*gen, "eos_token_id");
    }
  }
  for (auto* slot : {&t->bos_id_, &t->eos_id_}) {
    if (*slot && (**slot < 0 || **slot >= t->vocab_size_)) slot->reset();
  }
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModelDir(const std::string& dir) {
  const fs::path path = fs::path(dir) / "tokenizer.json";
  std::error_code ec;
  if (!fs::exists(path, ec))
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": no tokenizer.json; llmc reads Hugging Face tokenizer.json files "
                     "(write one with transformers: AutoTokenizer.from_pretrained(...)"
                     ".save_pretrained(DIR))"));
  return FromFile(path.string());
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       bool add_special_tokens) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat("text to tokenize is not valid UTF-8 (at byte ", bad,
                                                   " of ", text.size(), "); convert it to UTF-8 first"));
  auto with_source = [this](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("tokenizing with ", source_, ": ", s.message()));
  };
  std::vector<tok::Piece> pieces;
  if (auto s = added_->ExtractAndNormalize(text, normalizer_.get(), &pieces); !s.ok()) return with_source(s);
  if (pre_tokenizer_) {
    if (auto s = pre_tokenizer_->PreTokenize(&pieces); !s.ok()) return with_source(s);
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  for (const tok::Piece& p : pieces) {
    if (p.id >= 0) {
      ids.push_back(p.id);
      continue;
    }
    if (auto s = model_->Tokenize(p.text, &ids); !s.ok()) return with_source(s);
  }
  if (post_processor_) post_processor_->Process(&ids, add_special_tokens);
  return ids;
}

const std::string* Tokenizer::TokenOf(int32_t id) const {
  if (const tok::AddedToken* a = added_->FindById(id)) return &a->content;
  return model_->IdToToken(id);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (auto id = added_->FindByContent(token)) return id;
  return model_->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  const std::string* t = TokenOf(id);
  if (t == nullptr) return std::nullopt;
  return *t;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids,
                                              bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string* t = TokenOf(ids[i]);
    if (t == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(
          "decoding with ", source_, ": id ", ids[i], " at position ", i, " is not in the vocabulary (",
          vocab_size_, " ids); the ids come from another tokenizer or model"));
    if (skip_special_tokens && added_->IsSpecialContent(*t)) continue;
    tokens.push_back(*t);
  }
  if (!decoder_) return absl::StrJoin(tokens, " ");
  if (auto s = decoder_->DecodeChain(&tokens); !s.ok())
    return absl::Status(s.code(), absl::StrCat("decoding with ", source_, ": ", s.message()));
  return absl::StrJoin(tokens, "");
}

}  // namespace llmc
