#include "engine/io/model_dir.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace llmc {

namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<std::string> ReadTextFile(const std::string& path, uint64_t max_bytes) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (!fs::is_regular_file(path, ec)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  uint64_t size = fs::file_size(path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
  if (size > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat(path, ": file of ", size, " bytes is larger than expected"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for reading"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

// Reads an optional integer key; error if present with the wrong type.
absl::Status GetInt(const json& j, const char* key, int64_t* out, absl::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer())
    return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' must be an integer, got ", it->dump()));
  *out = it->get<int64_t>();
  if (*out < 0) return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' must not be negative"));
  return absl::OkStatus();
}

absl::Status GetDouble(const json& j, const char* key, double* out, absl::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number())
    return absl::InvalidArgumentError(absl::StrCat(source, ": '", key, "' must be a number, got ", it->dump()));
  *out = it->get<double>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (j.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON; fix or regenerate config.json"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": config must be a JSON object"));
  ModelConfig c;
  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return absl::InvalidArgumentError(absl::StrCat(source, ": 'architectures' must be a list"));
    for (const auto& a : *it) {
      if (!a.is_string())
        return absl::InvalidArgumentError(absl::StrCat(source, ": 'architectures' must list strings"));
      c.architectures.push_back(a.get<std::string>());
    }
  }
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) c.model_type = it->get<std::string>();
  LLMC_RETURN_IF_ERROR(GetInt(j, "hidden_size", &c.hidden_size, source));
  LLMC_RETURN_IF_ERROR(GetInt(j, "num_hidden_layers", &c.num_hidden_layers, source));
  LLMC_RETURN_IF_ERROR(GetInt(j, "num_attention_heads", &c.num_attention_heads, source));
  c.num_key_value_heads = c.num_attention_heads;
  LLMC_RETURN_IF_ERROR(GetInt(j, "num_key_value_heads", &c.num_key_value_heads, source));
  if (c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  LLMC_RETURN_IF_ERROR(GetInt(j, "head_dim", &c.head_dim, source));
  LLMC_RETURN_IF_ERROR(GetInt(j, "intermediate_size", &c.intermediate_size, source));
  LLMC_RETURN_IF_ERROR(GetInt(j, "vocab_size", &c.vocab_size, source));
  LLMC_RETURN_IF_ERROR(GetDouble(j, "rms_norm_eps", &c.rms_norm_eps, source));
  LLMC_RETURN_IF_ERROR(GetDouble(j, "rope_theta", &c.rope_theta, source));
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object())
      return absl::InvalidArgumentError(absl::StrCat(source, ": 'rope_parameters' must be an object"));
    LLMC_RETURN_IF_ERROR(GetDouble(*it, "rope_theta", &c.rope_theta, source));
    c.rope_scaling = *it;
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": 'rope_scaling' must be an object"));
    c.rope_scaling = *it;
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean())
      return absl::InvalidArgumentError(absl::StrCat(source, ": 'tie_word_embeddings' must be true or false"));
    c.tie_word_embeddings = it->get<bool>();
  }
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) {
      c.torch_dtype = it->get<std::string>();
      break;
    }
  }
  c.has_quantization_config = j.contains("quantization_config") && !j["quantization_config"].is_null();
  return c;
}

absl::StatusOr<std::unique_ptr<ModelDir>> ModelDir::Open(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    return absl::NotFoundError(absl::StrCat(path, ": no such model directory"));
  if (!fs::is_directory(path, ec))
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a directory; MODEL must be a Hugging Face model directory"));
  auto m = std::make_unique<ModelDir>();
  m->path_ = path;
  std::string config_path = (fs::path(path) / "config.json").string();
  auto text = ReadTextFile(config_path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status()))
      return absl::NotFoundError(absl::StrCat(config_path, ": not found; MODEL must be a Hugging Face model directory with config.json"));
    return text.status();
  }
  m->config_json_ = json::parse(*text, nullptr, false);
  LLMC_ASSIGN_OR_RETURN(m->config_, ParseModelConfig(*text, config_path));

  // Shards: from the index if present, else model.safetensors.
  std::string index_path = (fs::path(path) / "model.safetensors.index.json").string();
  std::vector<std::string> shards;
  json weight_map;
  if (fs::exists(index_path, ec)) {
    LLMC_ASSIGN_OR_RETURN(std::string itext, ReadTextFile(index_path));
    json idx = json::parse(itext, nullptr, false);
    if (idx.is_discarded() || !idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": not a valid index (expected a JSON object with a 'weight_map' object)"));
    weight_map = idx["weight_map"];
    std::set<std::string> names;
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
      if (!it.value().is_string())
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map['", it.key(), "'] is not a file name"));
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." || f.empty())
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": shard name '", f, "' must be a plain file name"));
      names.insert(f);
    }
    shards.assign(names.begin(), names.end());
  } else if (fs::exists(fs::path(path) / "model.safetensors", ec)) {
    shards.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(path, ": no model.safetensors or model.safetensors.index.json; ",
                                            "llmc reads safetensors checkpoints (convert .bin weights first)"));
  }
  for (const auto& s : shards) {
    LLMC_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open((fs::path(path) / s).string()));
    m->shard_names_.push_back(s);
    m->files_.push_back(std::move(f));
  }
  for (const auto& f : m->files_) {
    for (const auto& t : f->tensors()) {
      if (!weight_map.is_null()) {
        auto it = weight_map.find(t.name);
        // Tensors present in a shard but mapped elsewhere (or not at all) are not part of the model.
        if (it == weight_map.end() || fs::path(f->path()).filename() != it->get<std::string>()) continue;
      }
      if (m->by_name_.count(t.name))
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' appears in two shards"));
      m->by_name_[t.name] = m->tensors_.size();
      m->tensors_.push_back({f.get(), &t});
      m->total_bytes_ += t.nbytes();
    }
  }
  if (!weight_map.is_null()) {
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
      if (!m->by_name_.count(it.key()))
        return absl::DataLossError(absl::StrCat(index_path, ": tensor '", it.key(), "' is mapped to ",
                                                it.value().get<std::string>(), " but that file does not contain it"));
    }
  }
  // Auxiliary files a compressed checkpoint should carry.
  static const char* kAux[] = {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                               "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
                               "added_tokens.json", "chat_template.jinja", "chat_template.json",
                               "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                               "vocab.txt"};
  for (const char* a : kAux) {
    if (fs::is_regular_file(fs::path(path) / a, ec)) m->aux_files_.push_back(a);
  }
  return m;
}

const ModelTensor* ModelDir::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace llmc
