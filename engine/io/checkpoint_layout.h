// Where a checkpoint's text decoder lives: the one place that tells a plain causal LM from a vision-language
// (VL) checkpoint, finds the text decoder's config and tensor-name prefix, and names everything else (vision
// tower, projector) that llmc carries over unchanged.
//
//   architectures[0]                      text decoder            tensors of the text decoder
//   XForCausalLM                          itself                  model.layers.N..., model.embed_tokens, lm_head
//   Qwen2_5_VLForConditionalGeneration,   text_config.model_type  one of three layouts, detected from the names:
//   Qwen2VLForConditionalGeneration,      (or the family the        model.language_model.  + lm_head
//   Mistral3ForConditionalGeneration,      wrapper implies)         language_model.model.  + language_model.lm_head
//   Gemma3ForConditionalGeneration,                                 model.                 + lm_head (Qwen2-VL's own)
//   LlavaForConditionalGeneration
//
// Everything is immutable and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/io/model_dir.h"

namespace llmc {

struct CheckpointLayout {
  std::string architecture;  // architectures[0] as written ("Qwen2_5_VLForConditionalGeneration"), or ""
  bool multimodal = false;   // a VL wrapper: the text decoder is one part of the checkpoint
  // The causal LM the text decoder is ("Qwen2ForCausalLM"); `architecture` itself for a text-only checkpoint.
  std::string text_architecture;
  std::string text_model_type;  // text_config.model_type (or the family the wrapper implies); "" for text-only
  // The decoder's config: config.json itself for a text-only checkpoint; for a VL checkpoint its text_config with
  // `architectures` set to text_architecture, the wrapper's `tie_word_embeddings` (which transformers ties by)
  // and a text-only rope (see ResolveCheckpointLayout).
  nlohmann::json text_config;
  // The decoder's tensors: `<decoder_prefix>embed_tokens.weight`, `<decoder_prefix>layers.N.`,
  // `<decoder_prefix>norm.weight`, and the module `lm_head` (its `.weight`, absent when tied).
  std::string decoder_prefix = "model.";
  std::string lm_head = "lm_head";
  bool tie_word_embeddings = false;
  // VL only: the top-level parts that are not the text decoder ("visual", "vision_tower",
  // "multi_modal_projector"), in checkpoint order; their tensors are copied unchanged.
  std::vector<std::string> other_parts;

  std::string LayerPrefix(int64_t layer) const;  // "<decoder_prefix>layers.<layer>."
  std::string LayersPrefix() const { return decoder_prefix + "layers."; }
  std::string EmbedTensor() const { return decoder_prefix + "embed_tokens.weight"; }
  std::string NormTensor() const { return decoder_prefix + "norm.weight"; }
  // Whether `tensor_name` belongs to the text decoder (its prefix or lm_head). Always true for text-only.
  bool IsTextTensor(absl::string_view tensor_name) const;
  // The quantization_config `ignore` entries that keep the non-text parts and a VL lm_head unquantized under
  // any of the names loaders give them (transformers 4 and 5, vLLM): "re:.*visual.*", ..., and "re:.*lm_head"
  // when `lm_head_ignored`. Empty for text-only checkpoints.
  std::vector<std::string> IgnorePatterns(bool lm_head_ignored) const;
};

// The VL architectures llmc reads, comma separated (for errors and docs).
std::string SupportedMultimodalArchitectureNames();

// Resolves the layout of `dir`. Text-only checkpoints (no `vision_config`) resolve to the plain layout without
// looking further. A VL checkpoint without text_config has the decoder's keys at the top level (Qwen2-VL's configs
// of transformers 4). A VL checkpoint fails with INVALID_ARGUMENT naming config.json when its architecture is not
// one llmc knows (listing those it does), it has neither text_config nor top-level decoder keys, its text
// model_type maps to no known decoder family, the tensors match none of the three layouts, or mrope_section does
// not sum to head_dim / 2. Qwen2-VL's multimodal rope (`mrope_section`, or rope type "mrope") is resolved to the
// plain rope with the same theta: for text-only input its three position streams are equal, so it is exactly
// that. Other rope settings are left to the runtime's checks (ResolveModelSpec).
absl::StatusOr<CheckpointLayout> ResolveCheckpointLayout(const ModelDir& dir);

}  // namespace llmc
