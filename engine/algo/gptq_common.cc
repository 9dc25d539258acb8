#include "engine/algo/gptq_common.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/obs_common.h"

namespace llmc {
namespace {

Strategy InferStrategy(const WeightQParams& p) {
  if (!p.per_row) return Strategy::kTensor;
  if (p.global_scale != 0.0f) return Strategy::kTensorGroup;
  if (p.group_cols < p.cols) return Strategy::kGroup;
  return Strategy::kChannel;
}

}  // namespace

absl::Status ValidateGptqArgs(absl::string_view module, const float* weight, int64_t rows, int64_t cols,
                              const float* hessian, int64_t num_samples, const GroupQuantizer* quantizer,
                              const GptqOptions& options) {
  if (quantizer == nullptr) return absl::InvalidArgumentError(absl::StrCat(module, ": GPTQ needs a quantizer"));
  if (weight == nullptr || hessian == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(module, ": GPTQ needs the weight and its Hessian"));
  if (rows <= 0 || cols <= 0 || quantizer->rows() != rows || quantizer->cols() != cols)
    return absl::InvalidArgumentError(absl::StrCat(module, ": weight [", rows, ", ", cols,
                                                   "] does not match the quantizer's [", quantizer->rows(), ", ",
                                                   quantizer->cols(), "]"));
  LLMC_RETURN_IF_ERROR(CheckBlockSize(module, options.block_size));
  if (num_samples <= 0)
    return absl::FailedPreconditionError(absl::StrCat(
        module, ": no calibration samples reached this module, so GPTQ has no Hessian; check the calibration data "
                "and that the module is used in the forward pass, or add it to ignore"));
  if (options.keep_mask != nullptr && static_cast<int64_t>(options.keep_mask->size()) != rows * cols)
    return absl::InvalidArgumentError(absl::StrCat(module, ": keep_mask has ", options.keep_mask->size(),
                                                   " entries for a weight of ", rows * cols));
  return absl::OkStatus();
}

absl::Status CheckHessianDiagonal(absl::string_view module, const float* diag, int64_t stride, int64_t cols) {
  for (int64_t i = 0; i < cols; ++i)
    if (!std::isfinite(diag[i * stride]))
      return absl::InvalidArgumentError(absl::StrCat(
          module, ": the Hessian has a NaN or Inf on its diagonal at column ", i,
          "; the calibration activations of this module overflowed or contain NaN"));
  return absl::OkStatus();
}

std::vector<int32_t> GptqColumnOrder::ColumnGroups(int64_t cols, int64_t group_cols) const {
  std::vector<int32_t> col_group(cols, 0);
  if (grouped)
    for (int64_t j = 0; j < cols; ++j)
      col_group[j] = static_cast<int32_t>((order == ActOrder::kWeight ? perm[j] : j) / group_cols);
  return col_group;
}

absl::StatusOr<GptqColumnOrder> PlanGptqColumns(absl::string_view module, const GptqOptions& options,
                                                const WeightQParams& params, const float* diag, int64_t stride,
                                                int64_t cols) {
  GptqColumnOrder plan;
  plan.strategy = options.weight_args ? options.weight_args->strategy : InferStrategy(params);
  plan.grouped = plan.strategy == Strategy::kGroup || plan.strategy == Strategy::kTensorGroup;
  if (options.weight_args) {
    LLMC_ASSIGN_OR_RETURN(ResolvedActOrder res, ResolveActOrder(module, options.actorder, *options.weight_args));
    plan.order = res.order;
  } else {
    LLMC_ASSIGN_OR_RETURN(plan.order, ParseActOrder(options.actorder));
    if (plan.strategy != Strategy::kGroup) plan.order = ActOrder::kNone;
  }
  if (!plan.grouped) plan.order = ActOrder::kNone;
  if (plan.order != ActOrder::kNone) {
    plan.perm.resize(cols);
    std::iota(plan.perm.begin(), plan.perm.end(), int64_t{0});
    // torch.argsort(diag(H), descending=True); stable here so ties (dead columns) keep their order.
    std::stable_sort(plan.perm.begin(), plan.perm.end(),
                     [&](int64_t a, int64_t b) { return diag[a * stride] > diag[b * stride]; });
  }
  return plan;
}

bool GptqPreservesZeros(int64_t zeros, int64_t n) {
  const float sparsity = static_cast<float>(zeros) / static_cast<float>(n);
  return sparsity >= kGptqSparsityThreshold;
}

void MarkRtnFallback(absl::string_view module, absl::string_view failure, double dampening_frac, GptqResult* result) {
  result->fell_back_to_rtn = true;
  result->warning = FactorFailureWarning(module, failure, dampening_frac, "falling back to round-to-nearest");
}

std::vector<float> TakeGptqResultStorage(const GptqOptions& options, size_t n) {
  std::vector<float> v;
  if (options.result_storage != nullptr) v.swap(*options.result_storage);
  v.resize(n);
  return v;
}

void FinishGptqResult(const std::vector<double>& row_loss, const GptqColumnOrder& plan,
                      const std::vector<int32_t>& col_group, GroupQuantizer* quantizer, GptqResult* result) {
  result->loss = HalfTotalLoss(row_loss);
  if (plan.order == ActOrder::kGroup) {
    std::vector<int32_t>& g_idx = quantizer->mutable_params().g_idx;
    g_idx.assign(col_group.size(), 0);
    for (size_t j = 0; j < col_group.size(); ++j) g_idx[plan.perm[j]] = col_group[j];
  }
  result->params = quantizer->params();
}

}  // namespace llmc
