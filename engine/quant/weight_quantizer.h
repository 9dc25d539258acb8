// Round-to-nearest (RTN) quantization of one Linear weight into the tensors of its compressed-tensors format,
// reproducing the compressed-tensors library bit for bit (arithmetic in the weight's dtype, see FORMAT.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/quant_scheme.h"
#include "engine/tensor/dtype.h"

namespace llmc {

// A read-only 2-D weight [rows = out_features, cols = in_features] in row-major order.
struct WeightView {
  absl::string_view module;  // for error messages
  const void* data;
  DType dtype;  // BF16, F16 or F32
  int64_t rows;
  int64_t cols;
  // imatrix_mse: [cols] importance of each input channel (E[x^2] over the mean; mse_grid.h), required by that
  // observer and unused by the others.
  const float* importance = nullptr;
};

// One tensor a quantized module writes, named `<module>.<suffix>`.
struct OutputTensor {
  std::string suffix;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// The tensors `format` writes for a weight of this shape and dtype, in a fixed order. Fails with a message
// naming the module when a group or block size does not divide the shape or the combination is unsupported.
absl::StatusOr<std::vector<OutputTensor>> PlanQuantizedWeight(absl::string_view module, int64_t rows, int64_t cols,
                                                              DType dtype, const QuantArgs& args,
                                                              const std::string& format);

// max |w| over the whole weight; fails (naming the module) on NaN or Inf.
absl::StatusOr<float> WeightAbsMax(const WeightView& w);

// NVFP4 global scale for a tensor (or fused group) whose max |w| is `amax`: 448*6 / amax computed in the
// weight dtype, returned as float32 (stored as a divisor).
float NvFp4GlobalScale(float amax, DType dtype);

// Quantizes `w`. Returns one byte buffer per planned OutputTensor, in plan order. `global_scale` overrides the
// per-tensor NVFP4 global scale (fused q/k/v, gate/up). Thread-safe (no shared state).
absl::StatusOr<std::vector<std::vector<uint8_t>>> QuantizeWeight(const WeightView& w, const QuantArgs& args,
                                                                 const std::string& format,
                                                                 std::optional<float> global_scale = std::nullopt);

// Dequantizes the planned tensors back to float [rows * cols] (used by tests and evaluation).
// `g_idx` (optional, [cols]): the group of each column when columns are not in group order (GPTQ's
// activation ordering "group", stored as weight_g_idx); out-of-range entries are an error.
absl::StatusOr<std::vector<float>> DequantizeWeight(int64_t rows, int64_t cols, DType dtype, const QuantArgs& args,
                                                    const std::string& format,
                                                    const std::vector<std::vector<uint8_t>>& tensors,
                                                    const int32_t* g_idx = nullptr);

// Packs signed integers q (num_bits wide, in [-2^(b-1), 2^(b-1)-1]) of a row-major [rows, cols] matrix into
// int32 words along `dim` (1 = last dim, 0 = first), as compressed-tensors' pack_to_int32 does:
// floor(32 / b) values per word, value i of a word at bits [i*b, i*b+b), zero-padded.
std::vector<int32_t> PackInt32(const int8_t* q, int64_t rows, int64_t cols, int num_bits, int dim);
// The inverse of PackInt32.
std::vector<int8_t> UnpackInt32(const int32_t* packed, int64_t rows, int64_t cols, int num_bits, int dim);

}  // namespace llmc
