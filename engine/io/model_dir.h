// A Hugging Face model directory: config.json, safetensors weights (one file or shards plus
// model.safetensors.index.json), tokenizer and generation files.
#pragma once

#include "absl/strings/string_view.h"
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/io/safetensors.h"

namespace llmc {

// The parts of config.json llmc uses. Missing optional keys keep their defaults.
struct ModelConfig {
  std::vector<std::string> architectures;
  std::string model_type;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
  // Read from `rope_theta` (transformers < 5) or `rope_parameters.rope_theta` (transformers 5).
  double rope_theta = 10000.0;
  // `rope_scaling` or `rope_parameters` as found (rope_type, factor, ...); null when absent.
  nlohmann::json rope_scaling;
  bool tie_word_embeddings = false;
  std::string torch_dtype;  // "bfloat16", ... from `dtype` or `torch_dtype`
  bool has_quantization_config = false;
};

// Parses config.json text. `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source);

// A tensor of the model: which file holds it and its header entry.
struct ModelTensor {
  const SafetensorsFile* file;
  const TensorInfo* info;
};

// Read-only view of a model directory. Opening reads config.json and every safetensors header, nothing more.
// Thread-safe after Open.
class ModelDir {
 public:
  static absl::StatusOr<std::unique_ptr<ModelDir>> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const nlohmann::json& config_json() const { return config_json_; }
  const ModelConfig& config() const { return config_; }
  // Every tensor, in shard order then file order (the order the model was saved in, i.e. module order).
  const std::vector<ModelTensor>& tensors() const { return tensors_; }
  const ModelTensor* Find(const std::string& name) const;
  // Shard file names relative to the directory, in order.
  const std::vector<std::string>& shard_files() const { return shard_names_; }
  // Total bytes of tensor data.
  uint64_t total_tensor_bytes() const { return total_bytes_; }
  // Extra files to carry into a derived checkpoint (tokenizer, generation config, chat template), by name.
  const std::vector<std::string>& auxiliary_files() const { return aux_files_; }

 private:
  std::string path_;
  nlohmann::json config_json_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::string> shard_names_;
  std::vector<ModelTensor> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::vector<std::string> aux_files_;
  uint64_t total_bytes_ = 0;
};

// Reads a whole (small) text file. Errors name the path.
absl::StatusOr<std::string> ReadTextFile(const std::string& path, uint64_t max_bytes = 64u << 20);

}  // namespace llmc
