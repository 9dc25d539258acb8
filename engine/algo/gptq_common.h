// The steps of GPTQ that the CPU solver (GptqQuantize, gptq.cc) and the GPU solver (CudaGptqQuantize,
// cuda_gptq.cc) share, so both run the same validation, column order, zero-preservation rule, fallback and result
// by construction (the contract is gptq.h's).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/algo/gptq.h"
#include "engine/format/quant_scheme.h"
#include "engine/quant/group_quantizer.h"

namespace llmc {

// llm-compressor's SPARSITY_THRESHOLD (modifiers/utils/constants.py): GPTQ preserves zeros from this fraction on.
inline constexpr float kGptqSparsityThreshold = 0.05f;

// GptqQuantize's argument checks, in its order: a quantizer, the weight and Hessian pointers, the shape against the
// quantizer's, block_size, num_samples (FAILED_PRECONDITION when 0: no calibration data reached the module) and
// the keep mask's size. `hessian` may be a device pointer (only its presence is checked).
absl::Status ValidateGptqArgs(absl::string_view module, const float* weight, int64_t rows, int64_t cols,
                              const float* hessian, int64_t num_samples, const GroupQuantizer* quantizer,
                              const GptqOptions& options);

// INVALID_ARGUMENT naming the first column whose H_jj (at diag[j * stride]) is NaN or Inf.
absl::Status CheckHessianDiagonal(absl::string_view module, const float* diag, int64_t stride, int64_t cols);

// The order GPTQ solves the columns in (gptq.h): the strategy (the scheme's, or inferred from the quantizer's
// parameters without weight_args), the resolved activation ordering (kNone unless the strategy is grouped) and
// the permutation, a stable argsort of diag(H) descending (empty for kNone).
struct GptqColumnOrder {
  Strategy strategy = Strategy::kTensor;
  bool grouped = false;  // group or tensor_group: scales per group of columns
  ActOrder order = ActOrder::kNone;
  std::vector<int64_t> perm;  // solve-order column j is original column perm[j]

  int64_t source_column(int64_t j) const { return perm.empty() ? j : perm[j]; }
  // The quantization group of each solve-order column (all 0 unless grouped): with kWeight the groups of the
  // original columns, otherwise consecutive solve-order columns.
  std::vector<int32_t> ColumnGroups(int64_t cols, int64_t group_cols) const;
};
// `diag` holds H_jj at diag[j * stride].
absl::StatusOr<GptqColumnOrder> PlanGptqColumns(absl::string_view module, const GptqOptions& options,
                                                const WeightQParams& params, const float* diag, int64_t stride,
                                                int64_t cols);

// The automatic rule without a keep mask: zeros are preserved when at least kGptqSparsityThreshold of the n
// weights are exactly zero.
bool GptqPreservesZeros(int64_t zeros, int64_t n);

// Marks `result` as round-to-nearest because the factorization failed (`failure`), with the logged warning.
void MarkRtnFallback(absl::string_view module, absl::string_view failure, double dampening_frac, GptqResult* result);

// A vector of n floats for GptqResult::weight: options.result_storage's buffer (moved out) when given, else a new
// one. Values are unspecified where the storage had some.
std::vector<float> TakeGptqResultStorage(const GptqOptions& options, size_t n);

// The end of a solve: result->loss from the per-row losses, the quantizer's g_idx (activation ordering "group":
// original column -> group) and result->params.
void FinishGptqResult(const std::vector<double>& row_loss, const GptqColumnOrder& plan,
                      const std::vector<int32_t>& col_group, GroupQuantizer* quantizer, GptqResult* result);

}  // namespace llmc
