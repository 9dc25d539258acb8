// Writes synthetic Llama-shaped Hugging Face checkpoints (random weights) for tests and benchmarks.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "engine/tensor/dtype.h"

namespace llmc {

struct SyntheticLlamaShape {
  int64_t hidden = 256;
  int64_t intermediate = 512;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t vocab = 1000;
  bool tie_embeddings = false;
};

// Named shapes: "tiny", "1b" (Llama-3.2-1B), "8b" (Llama-3-8B). Returns false for an unknown name.
bool SyntheticShapeByName(const std::string& name, SyntheticLlamaShape* shape);

// Writes config.json, generation_config.json and safetensors shards (index when more than one) into `dir`
// (created). Weights are N(0, 0.02)-like values from a seeded generator, norms are 1.
absl::Status WriteSyntheticLlama(const std::string& dir, const SyntheticLlamaShape& shape, DType dtype,
                                 uint64_t seed, uint64_t max_shard_bytes);

// Overwrites elements [index, index + count) of tensor `name` in the model directory `dir` (any shard) with
// `value`, in the tensor's dtype (F32 or BF16): NaN, Inf or huge weights for the tests of non-finite inputs and
// activations.
absl::Status SetTensorElement(const std::string& dir, const std::string& name, int64_t index, float value,
                              int64_t count = 1);

}  // namespace llmc
