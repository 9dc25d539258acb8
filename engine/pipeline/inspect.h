// `llmc inspect`: what a checkpoint contains (schemes, per-module formats, sizes).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace llmc {

// Reads config.json and the safetensors headers of CHECKPOINT (original or compressed-tensors) and returns
// {"path", "architecture", "quantization": {...} | null, "format", "shards": [...], "total_bytes",
//  "tensors", "modules": [{"name", "format", "group", "tensors": {suffix: {dtype, shape}}, "bytes"}],
//  "formats": {format: module count}}.
absl::StatusOr<nlohmann::json> InspectCheckpoint(const std::string& path);

// Human-readable rendering of InspectCheckpoint's result.
std::string RenderInspect(const nlohmann::json& report, bool verbose);

}  // namespace llmc
