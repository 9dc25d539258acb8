// Column-group quantization for solvers that choose the quantized values themselves (GPTQ, SparseGPT with
// quantization): the solver asks for the parameters of one group of columns from the *current* (updated)
// weights, quantize-dequantizes columns with them, and at the end hands the fake-quantized weight and the
// parameters to EncodeQuantizedWeight, which writes the same tensors QuantizeWeight would (compressed-tensors
// compresses a GPTQ'd module the same way: quantize(weight, weight_scale, weight_zero_point, g_idx)).
//
// The arithmetic is exactly the RTN path's (scales rounded to the model dtype, clamp then round half to even,
// fp8/fp4/e8m0 scale rules of FORMAT.md), so a solver that observes every group on the unmodified weight and
// never updates reproduces QuantizeWeight bit for bit (tested).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/format/quant_scheme.h"
#include "engine/tensor/dtype.h"

namespace llmc {

// The quantization parameters of one weight [rows, cols].
struct WeightQParams {
  int64_t rows = 0, cols = 0;
  int64_t group_cols = 0;  // columns per group (cols for channel and tensor strategies)
  int64_t num_groups = 0;  // column groups (1 for channel and tensor)
  bool per_row = true;     // false for the tensor strategy (one scale for all rows)
  // scale[r * num_groups + g] (or scale[g] when !per_row): the dequantization scale as stored, i.e. already
  // rounded to the model dtype (int, fp8), an fp8 e4m3 value (NVFP4 local scale) or 2^(e-127) (MX).
  std::vector<float> scale;
  std::vector<float> zero_point;  // same layout as scale; asymmetric int only, else empty
  float global_scale = 0;         // NVFP4 only: the fp32 global scale (stored as a divisor)
  // Column -> group of that column when columns are not in group order (actorder "group"); empty means
  // column c is in group c / group_cols.
  std::vector<int32_t> g_idx;
};

class GroupQuantizer {
 public:
  // For a weight [rows, cols] of `dtype` under `args` stored in `format`. `global_scale` is required for NVFP4
  // (the fused group's, see NvFp4GlobalScale) and ignored otherwise. Fails naming `module` for shapes or
  // schemes the format cannot store, and for the block strategy (not supported by column solvers).
  static absl::StatusOr<GroupQuantizer> Create(absl::string_view module, int64_t rows, int64_t cols, DType dtype,
                                               const QuantArgs& args, const std::string& format,
                                               std::optional<float> global_scale = std::nullopt);

  int64_t rows() const { return p_.rows; }
  int64_t cols() const { return p_.cols; }
  int64_t group_cols() const { return p_.group_cols; }
  int64_t num_groups() const { return p_.num_groups; }

  // Observes group `g` from n columns of the fp32 matrix `w` (rows x ld, row-major) starting at column c0: the
  // values are first rounded to the model dtype, as the library's observer sees them. For channel and tensor
  // strategies g = 0 and the columns are all of them. Fails on NaN/Inf naming the module.
  absl::Status Observe(const float* w, int64_t ld, int64_t c0, int64_t n, int64_t g);

  // Quantize-dequantize of x (rounded to the model dtype first) in row r with group g's parameters, as the
  // library's fake quantization computes it.
  float FakeQuant(float x, int64_t r, int64_t g) const;

  const WeightQParams& params() const { return p_; }
  WeightQParams& mutable_params() { return p_; }

  // imatrix_mse: the importance of each column of the matrices Observe sees ([cols], E[x^2] over its mean;
  // mse_grid.h). Required by that observer before the first Observe.
  void SetImportance(std::vector<float> importance) { importance_ = std::move(importance); }
  // Reorders the importance as Observe's columns are reordered: column j becomes old column perm[j].
  void PermuteImportance(const std::vector<int64_t>& perm);

 private:
  GroupQuantizer() = default;
  std::string module_;
  DType dtype_ = DType::kBF16;
  QuantArgs args_;
  std::string format_;
  int kind_ = 0;  // arithmetic family (int, fp8, nvfp4, mx), set by Create
  float qmin_ = 0, qmax_ = 0;
  WeightQParams p_;
  std::vector<float> importance_;
};

// Encodes the fake-quantized weight q [rows, cols] (fp32, values produced by FakeQuant with `p`) into the
// tensors of `format`, in PlanQuantizedWeight's order, plus a trailing `weight_g_idx` buffer (int32 [cols]) when
// p.g_idx is non-empty. Fails naming `module` when the shapes do not match the plan. The rows are encoded on up to
// `threads` threads (the output does not depend on it).
absl::StatusOr<std::vector<std::vector<uint8_t>>> EncodeQuantizedWeight(absl::string_view module, const float* q,
                                                                        DType dtype, const QuantArgs& args,
                                                                        const std::string& format,
                                                                        const WeightQParams& p, int threads = 1);

}  // namespace llmc
