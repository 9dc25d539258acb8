#include "engine/algo/wanda.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/mask_structure.h"
#include "engine/algo/obs_common.h"

namespace llmc {

absl::StatusOr<WandaResult> WandaPrune(absl::string_view module, const float* weight, int64_t rows, int64_t cols,
                                       const double* sum_sq_per_column, int64_t num_samples,
                                       const WandaOptions& options) {
  if (weight == nullptr || sum_sq_per_column == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(module, ": Wanda needs the weight and its activation norms"));
  if (rows <= 0 || cols <= 0)
    return absl::InvalidArgumentError(absl::StrCat(module, ": invalid weight shape [", rows, ", ", cols, "]"));
  if (num_samples <= 0)
    return absl::FailedPreconditionError(absl::StrCat(
        module, ": no calibration samples reached this module, so Wanda has no activation norms; check the "
                "calibration data and that the module is used in the forward pass, or add it to ignore"));
  LLMC_ASSIGN_OR_RETURN(MaskStructure ms, ParseMaskStructure(module, options.mask_structure));
  if (!ms.structured() && !(options.sparsity >= 0.0 && options.sparsity <= 1.0))
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": sparsity must be in [0, 1], got ", options.sparsity));
  if (ms.structured() && cols % ms.m != 0 && cols % ms.m < ms.n)
    return absl::InvalidArgumentError(absl::StrCat(module, ": in_features ", cols, " leaves a last window of ",
                                                   cols % ms.m, " columns for mask_structure ",
                                                   options.mask_structure, "; it must be a multiple of ", ms.m));
  std::vector<float> root(cols);  // sqrt(row_scalars), fp32 as the library holds them
  for (int64_t c = 0; c < cols; ++c) {
    const double s = sum_sq_per_column[c];
    if (!(s >= 0) || !std::isfinite(s))
      return absl::InvalidArgumentError(absl::StrCat(module, ": activation sum of squares at column ", c, " is ", s,
                                                     "; the calibration activations overflowed or contain NaN"));
    root[c] = std::sqrt(static_cast<float>(s / static_cast<double>(num_samples)));
  }
  LLMC_RETURN_IF_ERROR(CheckWeightFinite(module, weight, rows, cols));

  WandaResult result;
  result.weight.assign(weight, weight + rows * cols);
  std::vector<float> metric(cols);
  std::vector<int64_t> idx(cols);
  const int64_t k = static_cast<int64_t>(static_cast<double>(cols) * options.sparsity);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = result.weight.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) metric[c] = std::fabs(row[c]) * root[c];
    auto less = [&](int64_t a, int64_t b) { return metric[a] < metric[b] || (metric[a] == metric[b] && a < b); };
    if (ms.structured()) {
      for (int64_t c0 = 0; c0 < cols; c0 += ms.m) {
        const int64_t width = std::min<int64_t>(ms.m, cols - c0);
        std::iota(idx.begin(), idx.begin() + width, c0);
        std::partial_sort(idx.begin(), idx.begin() + ms.n, idx.begin() + width, less);
        for (int j = 0; j < ms.n; ++j) row[idx[j]] = 0.0f;
        result.pruned += ms.n;
      }
    } else {
      std::iota(idx.begin(), idx.end(), int64_t{0});
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), less);
      for (int64_t j = 0; j < k; ++j) row[idx[j]] = 0.0f;
      result.pruned += k;
    }
  }
  return result;
}

}  // namespace llmc
