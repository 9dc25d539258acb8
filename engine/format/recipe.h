// llm-compressor recipes (YAML): stages of modifiers. Data-free compression runs `QuantizationModifier`;
// every other modifier is reported with what is supported.
#pragma once

#include "absl/strings/string_view.h"
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/format/quant_config.h"

namespace llmc {

// Limits on a recipe, checked before any work: its size in bytes, and the values (scalars, sequences, mappings)
// it holds once aliases are expanded, which bounds the memory of nested aliases ("billion laughs").
inline constexpr size_t kMaxRecipeBytes = 256 * 1024;
inline constexpr int64_t kMaxRecipeNodes = 100000;

// Converts YAML text to JSON (plain scalars typed as YAML 1.2 core: bool, null, int, float, string).
// Errors name `source` and the line, or the limit exceeded (INVALID_ARGUMENT).
absl::StatusOr<nlohmann::json> YamlToJson(absl::string_view yaml_text, absl::string_view source);

// Builds the QuantConfig of a recipe. `default_ignore` applies when the recipe gives no ignore list.
absl::StatusOr<QuantConfig> ParseRecipe(absl::string_view yaml_text, absl::string_view source);

// Builds the QuantConfig of a preset scheme (`--scheme W4A16`) applied to `targets` with `ignore`.
absl::StatusOr<QuantConfig> PresetConfig(absl::string_view scheme, std::vector<std::string> targets,
                                         std::vector<std::string> ignore);

}  // namespace llmc
