// The decoder architectures the CPU runtime can run, as one registry, and the hyperparameters of one model
// resolved from its config.json against that registry.
//
// Adding an architecture whose block is a variation of the Llama block (pre-norm attention + SwiGLU MLP) is
// one entry in the table in architecture.cc. Everything here is immutable and thread-safe.
#pragma once

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/io/checkpoint_layout.h"
#include "engine/io/model_dir.h"
#include "engine/model/moe.h"
#include "engine/tensor/dtype.h"

namespace llmc {

// How an architecture treats the `sliding_window` config keys. An explicit `layer_types` list
// ("full_attention" / "sliding_attention" per layer) overrides the rule's per-layer default wherever the
// architecture has sliding windows at all.
enum class SlidingWindowRule {
  kNone,    // no sliding window attention
  kAlways,  // every layer uses `sliding_window` when it is set (Mistral)
  kOptIn,   // only with `use_sliding_window: true` (Qwen2/Qwen3): layers >= max_window_layers slide
  kEveryOtherLayer,  // even layers slide, odd layers are global (Gemma 2)
  kPattern,          // every `sliding_window_pattern`-th layer is global, the rest slide (Gemma 3, default 6)
};

// The activation of the gated MLP: down(act(gate(x)) * up(x)).
enum class Activation {
  kSilu,      // SwiGLU: "silu"
  kGeluTanh,  // GeGLU with the tanh approximation: "gelu_pytorch_tanh"
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
  // Mixture-of-experts MLP (moe.h), and whether it has a Qwen2-MoE shared expert.
  MoeStyle moe = MoeStyle::kNone;
  bool moe_shared_expert = false;
  // Gemma-style blocks (fields with defaults, so Llama-like entries leave them out):
  Activation activation = Activation::kSilu;  // default when config.json names none
  bool gemma = false;  // (1 + w) RMSNorms, embeddings * sqrt(hidden), four norms per block,
                       // query_pre_attn_scalar and the attention / final logit softcaps
  bool local_rope = false;  // sliding layers have a rope of their own (Gemma 3)
  // Phi-3: one fused qkv_proj [q + 2 kv, hidden] and gate_up_proj [2 intermediate, hidden] per block, and
  // `partial_rotary_factor` (rotary on the first head_dim * factor dimensions of each head).
  bool fused_projections = false;
  // Llama 4 text: interleaved rotary pairs, no-rope layers (no_rope_layers) with attention temperature tuning,
  // an L2 norm on q and k of the rope layers (use_qk_norm), chunked attention (attention_chunk_size), MoE layers
  // chosen by moe_layers / interleave_moe_layer_step, and the MLP under `feed_forward.`.
  bool llama4 = false;
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
  enum class Type { kDefault, kLinear, kLlama3, kLongrope };
  Type type = Type::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                              // linear, llama3
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3, longrope
  // longrope: per-frequency divisors [rotary_dim / 2]; long_factor when the sequence is longer than
  // original_max_position_embeddings, else short_factor; cos and sin are multiplied by attention_factor.
  std::vector<double> short_factor, long_factor;
  double attention_factor = 1.0;

  // Whether a sequence of seq_len tokens uses long_factor.
  bool UsesLongFactors(int64_t seq_len) const {
    return type == Type::kLongrope && seq_len > original_max_position_embeddings;
  }
};

// What a layer's self-attention sees.
enum class AttentionKind {
  kFull,
  kSliding,
  kChunked,  // Llama 4: token i sees tokens j <= i of its own chunk of attention_chunk tokens (j / chunk == i / chunk)
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
  int64_t sliding_window = 0;  // the window of sliding layers; 0: every layer is full causal attention
  // Per layer (num_layers entries): whether it uses sliding_window. Empty means every layer does (when
  // sliding_window > 0).
  std::vector<AttentionKind> layer_attention;
  Activation activation = Activation::kSilu;
  // Norms scale by (norm_offset + weight): 0, or 1 for Gemma. Loaded blocks hold the effective scale
  // (weight + norm_offset); the offset is taken off again where a norm is written back to a checkpoint.
  float norm_offset = 0.0f;
  // Gemma's block: post_attention_layernorm on the attention output before the residual add, and
  // pre_feedforward_layernorm / post_feedforward_layernorm around the MLP.
  bool sandwich_norms = false;
  float embedding_scale = 1.0f;  // embeddings are multiplied by it (Gemma: sqrt(hidden) in the model dtype)
  float attention_scale = 0.0f;  // softmax scale of q.k; 0: 1 / sqrt(head_dim)
  float attention_softcap = 0.0f;  // > 0: scores become softcap * tanh(scores / softcap) (Gemma 2)
  float final_softcap = 0.0f;      // > 0: the same on the logits
  bool local_rope = false;         // sliding layers use rope_local instead of rope (Gemma 3)
  RopeSpec rope_local;
  bool fused_projections = false;  // qkv_proj and gate_up_proj (Phi-3)
  int64_t rotary_dims = 0;         // dimensions of each head that rotate (even); 0: head_dim
  MoeSpec moe;
  // Where the decoder's tensors are in the checkpoint ("model." and "lm_head" for a causal LM; a VL checkpoint's
  // text decoder elsewhere, see engine/io/checkpoint_layout.h). Every tensor name the runtime reads comes from it.
  CheckpointLayout layout;  // num_experts == 0: dense MLP in every layer
  // Llama 4 (ArchitectureInfo::llama4):
  bool rope_interleaved = false;  // dimension 2i pairs with 2i + 1 (complex rotation), not i with i + r/2
  std::vector<bool> rope_layers;  // [num_layers]: whether the layer rotates q and k; empty: every layer does
  bool l2_qk_norm = false;        // q and k of rope layers divided by their RMS over head_dim after the rotation
  int64_t attention_chunk = 0;    // the chunk of kChunked layers
  // No-rope layers scale q of position p by log1p(floor((p + 1) / floor_scale)) * attn_scale + 1 when
  // attn_scale > 0 (attn_temperature_tuning).
  double temperature_attn_scale = 0.0, temperature_floor_scale = 0.0;
  std::string mlp_prefix = "mlp.";  // the dense MLP's module ("feed_forward." for Llama 4)

  int64_t window(int64_t layer) const {
    if (sliding_window <= 0) return 0;
    if (layer_attention.empty()) return sliding_window;
    return layer_attention[layer] == AttentionKind::kSliding ? sliding_window : 0;
  }
  int64_t chunk(int64_t layer) const {
    return !layer_attention.empty() && layer_attention[layer] == AttentionKind::kChunked ? attention_chunk : 0;
  }
  bool uses_rope(int64_t layer) const { return rope_layers.empty() || rope_layers[layer]; }
  // The q scale of no-rope layer `layer` at position `pos` (1 where there is none).
  float query_temperature(int64_t layer, int64_t pos) const {
    if (uses_rope(layer) || !(temperature_attn_scale > 0)) return 1.0f;
    const float p = static_cast<float>(pos);
    return std::log1p(std::floor((p + 1.0f) / static_cast<float>(temperature_floor_scale))) *
               static_cast<float>(temperature_attn_scale) +
           1.0f;
  }
  const RopeSpec& rope_for(int64_t layer) const {
    return local_rope && !layer_attention.empty() && layer_attention[layer] == AttentionKind::kSliding ? rope_local
                                                                                                        : rope;
  }
  float softmax_scale() const {
    return attention_scale > 0 ? attention_scale : static_cast<float>(1.0 / std::sqrt(double(head_dim)));
  }
  int64_t rotary_dim() const { return rotary_dims > 0 ? rotary_dims : head_dim; }
  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }
};

// Resolves `config` (parsed from `config_json`, the file `source`) into a ModelSpec. Fails with a message
// naming `source` when the architecture is not supported, a dimension is missing or inconsistent (heads not
// divisible by kv heads, odd head_dim), the activation is not one llmc implements, the rope type is one
// llmc does not implement, or a key of the family that llmc does not implement is set (the error names it).
absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelConfig& config, const nlohmann::json& config_json,
                                           absl::string_view source);

// Resolves the text decoder of the checkpoint `dir` (a causal LM, or the text part of a vision-language
// checkpoint; ResolveCheckpointLayout) into a ModelSpec with its layout. A VL checkpoint whose text decoder's
// family the runtime does not run fails naming the VL architecture, the text architecture and text_config's
// model_type, and listing the supported ones.
absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelDir& dir);

}  // namespace llmc
