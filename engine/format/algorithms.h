// The compression algorithms llmc runs, in one registry (name, arguments with defaults, whether they need
// calibration data, the statistics they collect), and the parsed form of a whole llm-compressor recipe.
//
// The registry drives recipe validation (unknown modifiers or arguments are errors that list what is
// supported), `llmc algorithms`, the CLI's --algorithm and the API.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/format/quant_config.h"

namespace llmc {

struct AlgorithmArg {
  AlgorithmArg(std::string n, std::string t, nlohmann::json d, std::string h, std::string ne = "")
      : name(std::move(n)), type(std::move(t)), default_value(std::move(d)), help(std::move(h)), no_effect(std::move(ne)) {}
  std::string name;
  std::string type;  // "int", "float", "string", "bool", "list", "mapping", "scheme"
  nlohmann::json default_value;
  std::string help;
  // Empty for an argument that changes what llmc writes. Otherwise the argument is accepted for compatibility
  // but cannot change the output, and this says why (a memory-placement hint, or a key llm-compressor itself
  // deprecates or does not use); tests/integration/recipe_keys_test.cc checks that it indeed changes nothing.
  std::string no_effect;
};

struct AlgorithmInfo {
  std::string modifier;  // llm-compressor modifier name, e.g. "GPTQModifier"
  std::string name;      // CLI name, e.g. "gptq"
  std::string summary;
  bool needs_calibration = false;
  std::string statistics;  // what calibration collects for it
  std::vector<AlgorithmArg> args;
};

// Every algorithm, in a fixed order.
const std::vector<AlgorithmInfo>& Algorithms();
// The arguments every modifier accepts besides its own: llm-compressor's lifecycle fields (index, group, start,
// end, update), none of which changes a one-shot run.
const std::vector<AlgorithmArg>& CommonModifierArgs();
// By modifier name or CLI name (case-insensitive); nullptr if unknown.
const AlgorithmInfo* FindAlgorithm(absl::string_view name);

struct GptqParams {
  int block_size = 128;
  double dampening_frac = 0.01;
  std::string actorder = "static";  // none, static, group, weight
};

// One smoothing mapping: the balance Linears (whose inputs are the smooth module's output) and the smooth
// module (an RMSNorm or a Linear) whose output channels absorb 1/s. Patterns are target strings (exact or re:).
struct SmoothMapping {
  std::vector<std::string> balance;
  std::string smooth;
};

struct SmoothQuantParams {
  double smoothing_strength = 0.5;
  std::vector<SmoothMapping> mappings;  // defaults for Llama-style blocks when the recipe gives none
  std::vector<std::string> ignore;
};

struct AwqParams {
  bool duo_scaling = true;
  bool duo_scaling_both = false;  // duo_scaling: both (half the grid without duo scaling, half with)
  int n_grid = 20;
  std::vector<SmoothMapping> mappings;
  std::vector<std::string> ignore;
};

struct SparsityParams {
  std::string method;  // "sparsegpt" or "wanda"
  double sparsity = 0.5;
  std::string mask_structure = "0:0";  // "N:M" or "0:0" (unstructured)
  int block_size = 128;
  double dampening_frac = 0.01;
  std::vector<std::string> targets = {"Linear"};
  std::vector<std::string> ignore;
};

// A recipe resolved: what to quantize (config groups, ignore, kv cache) and which algorithms run.
struct CompressionRecipe {
  std::optional<QuantConfig> quant;  // absent for a pruning-only recipe
  std::optional<GptqParams> gptq;
  std::optional<SmoothQuantParams> smoothquant;
  std::optional<AwqParams> awq;
  std::optional<SparsityParams> sparsity;
  std::string yaml;  // recipe.yaml written beside the checkpoint

  // Whether any part needs calibration data (an algorithm, static activations, kv cache scales).
  bool NeedsCalibration() const;
  // "GPTQ W4A16", "SmoothQuant + GPTQ W8A8", "RTN FP8_DYNAMIC", ... for summaries.
  std::string Describe() const;
};

// Parses an llm-compressor recipe (stages, *_modifiers groups, the six modifiers). Every key is either applied or
// refused: unknown modifiers, arguments and keys, and settings llmc does not implement (see
// engine/format/recipe_support.h and docs/formats.md), fail with INVALID_ARGUMENT naming `source`, the key's path
// (e.g. "GPTQModifier.config_groups.group_0.weights.observer") and what is supported. Observer overrides of a
// quantizing modifier (weight_observer, input_observer, output_observer, observer) are applied to its own groups.
absl::StatusOr<CompressionRecipe> ParseCompressionRecipe(absl::string_view yaml_text, absl::string_view source);

// The recipe of a preset run: `--scheme NAME --algorithm ALGO` with targets and ignore. ALGO: rtn, gptq, awq,
// smoothquant+gptq (SmoothQuant strength 0.8, then GPTQ; alias smoothquant-gptq), sparsegpt or wanda (50% 2:4
// pruning, then the scheme by RTN).
absl::StatusOr<CompressionRecipe> PresetRecipe(absl::string_view scheme, absl::string_view algorithm,
                                               std::vector<std::string> targets, std::vector<std::string> ignore);

// Default mappings for Llama/Mistral/Qwen blocks.
std::vector<SmoothMapping> DefaultSmoothQuantMappings();
std::vector<SmoothMapping> DefaultAwqMappings();

}  // namespace llmc
