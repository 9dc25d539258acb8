// The decoder architectures the CPU runtime can run, as one registry, and the hyperparameters of one model
// resolved from its config.json against that registry.
//
// Adding an architecture whose block is a variation of the Llama block (pre-norm attention + SwiGLU MLP) is
// one entry in the table in architecture.cc. Everything here is immutable and thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/io/checkpoint_layout.h"
#include "engine/io/model_dir.h"
#include "engine/tensor/dtype.h"

namespace llmc {

// How an architecture treats the `sliding_window` config keys.
enum class SlidingWindowRule {
  kNone,    // no sliding window attention
  kAlways,  // every layer uses `sliding_window` when it is set (Mistral)
  kOptIn,   // only with `use_sliding_window: true` (Qwen2/Qwen3); then per-layer, which llmc rejects
};

// One supported architecture: the `architectures[0]` name in config.json and how its block differs from
// Llama.
struct ArchitectureInfo {
  const char* name;                // "LlamaForCausalLM"
  const char* description;         // for --help and errors
  bool qkv_bias;                   // q/k/v projections always have biases (Qwen2)
  const char* attention_bias_key;  // config key that gives q/k/v/o biases ("attention_bias"), or nullptr
  const char* mlp_bias_key;        // config key that gives gate/up/down biases ("mlp_bias"), or nullptr
  bool qk_norm;                    // RMSNorm over head_dim on q and k before RoPE (Qwen3)
  SlidingWindowRule sliding_window;
};

// Every supported architecture, in a fixed order.
const std::vector<ArchitectureInfo>& SupportedArchitectures();
// "LlamaForCausalLM, MistralForCausalLM, ..."
std::string SupportedArchitectureNames();
// The registry entry for `name`. An unknown name is INVALID_ARGUMENT naming it and listing the supported
// ones.
absl::StatusOr<const ArchitectureInfo*> FindArchitecture(absl::string_view name);

// Rotary position embedding parameters (HF `rope_parameters` / `rope_scaling`).
struct RopeSpec {
  enum class Type { kDefault, kLinear, kLlama3 };
  Type type = Type::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                              // linear, llama3
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

// The resolved hyperparameters of one model.
struct ModelSpec {
  const ArchitectureInfo* arch = nullptr;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
  RopeSpec rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;
  int64_t sliding_window = 0;  // 0: full causal attention
  // Where the decoder's tensors are in the checkpoint ("model." and "lm_head" for a causal LM; a VL checkpoint's
  // text decoder elsewhere, see engine/io/checkpoint_layout.h). Every tensor name the runtime reads comes from it.
  CheckpointLayout layout;

  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }
};

// Resolves `config` (parsed from `config_json`, the file `source`) into a ModelSpec. Fails with a message
// naming `source` when the architecture is not supported, a dimension is missing or inconsistent (heads not
// divisible by kv heads, odd head_dim), the activation is not SiLU, or the rope type is one llmc does not
// implement.
absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelConfig& config, const nlohmann::json& config_json,
                                           absl::string_view source);

// Resolves the text decoder of the checkpoint `dir` (a causal LM, or the text part of a vision-language
// checkpoint; ResolveCheckpointLayout) into a ModelSpec with its layout. A VL checkpoint whose text decoder's
// family the runtime does not run fails naming the VL architecture, the text architecture and text_config's
// model_type, and listing the supported ones.
absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelDir& dir);

}  // namespace llmc
