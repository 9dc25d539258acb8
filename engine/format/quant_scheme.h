// Quantization arguments, schemes and presets with the exact JSON shape of compressed-tensors 0.18
// (`QuantizationArgs`, `QuantizationScheme`, `PRESET_SCHEMES`), and the on-disk format each scheme uses.
#pragma once

#include "absl/strings/string_view.h"
#include <array>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace llmc {

enum class QuantType { kInt, kFloat };
enum class Strategy { kTensor, kChannel, kGroup, kBlock, kToken, kTensorGroup, kAttnHead };

absl::string_view StrategyName(Strategy s);

// One QuantizationArgs. `dynamic` is "false", "true" or "local" (kept as the library spells it).
struct QuantArgs {
  int num_bits = 8;
  QuantType type = QuantType::kInt;
  bool symmetric = true;
  std::optional<int> group_size;
  Strategy strategy = Strategy::kTensor;
  std::optional<std::array<int, 2>> block_structure;
  std::string dynamic = "false";
  std::optional<std::string> actorder;
  std::optional<std::string> scale_dtype;
  std::optional<std::string> zp_dtype;
  std::optional<std::string> observer = std::string("memoryless_minmax");
  nlohmann::json observer_kwargs = nlohmann::json::object();

  bool is_fp4() const { return type == QuantType::kFloat && num_bits == 4; }
  // MX formats: group 32 with E8M0 (uint8) scales.
  bool is_mx() const { return scale_dtype && *scale_dtype == "torch.uint8"; }
  bool is_dynamic() const { return dynamic != "false"; }

  // Exactly the keys the library writes, in its JSON shape.
  nlohmann::json ToJson() const;
  // Those keys: the ones FromJson accepts.
  static const std::vector<std::string>& Keys();
  // Parses the library's JSON/YAML shape (dict of keys). Unknown keys are an error naming `where`.
  // Fills defaults and derived fields as pydantic validation does (strategy from group_size, observer, ...).
  static absl::StatusOr<QuantArgs> FromJson(const nlohmann::json& j, absl::string_view where, bool is_weight);
  // Checks the combination is one llmc can produce; error names `where`.
  absl::Status Validate(absl::string_view where) const;
};

// One config group: targets plus the arguments per tensor kind.
struct QuantScheme {
  std::vector<std::string> targets = {"Linear"};
  std::optional<QuantArgs> weights;
  std::optional<QuantArgs> input_activations;
  std::optional<QuantArgs> output_activations;
  std::optional<std::string> format;  // explicit per-group format; inferred when absent

  nlohmann::json ToJson(const std::string& format) const;
  static absl::StatusOr<QuantScheme> FromJson(const nlohmann::json& j, absl::string_view where);
  // The keys FromJson accepts: targets, weights, input_activations, output_activations, format.
  static const std::vector<std::string>& Keys();
};

// The compression format (compressed-tensors CompressionFormat value) for a scheme: "pack-quantized",
// "int-quantized", "float-quantized", "nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp8-quantized",
// or "dense" when nothing is quantized.
absl::StatusOr<std::string> InferFormat(const QuantScheme& scheme);

// A named preset (llm-compressor's `scheme: W4A16`).
struct PresetInfo {
  std::string name;
  std::string description;
  bool needs_calibration;  // static activation scales (FP8, NVFP4) need data
};
const std::vector<PresetInfo>& Presets();
// The arguments of preset `name` (case-insensitive). Error lists the presets.
absl::StatusOr<QuantScheme> PresetScheme(absl::string_view name);

}  // namespace llmc
