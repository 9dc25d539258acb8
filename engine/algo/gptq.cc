#include "engine/algo/gptq.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/column_walk.h"
#include "engine/algo/gptq_common.h"
#include "engine/algo/inverse_hessian.h"
#include "engine/algo/obs_common.h"

namespace llmc {
namespace {

// torch.isclose(w, 0) with the default atol (rtol * |0| adds nothing).
constexpr float kZeroAtol = 1e-8f;

// GPTQ's part of the column walk: fake quantization with each column's group; with zeros preserved, the weights
// that keep their value take no update (in the block and in the trailing columns).
class GptqPolicy {
 public:
  // `keep` [rows, cols] solve order (1 = may be updated), or null.
  GptqPolicy(const GroupQuantizer* quantizer, const int32_t* col_group, const float* keep, int64_t rows,
             int64_t cols, int64_t block_size)
      : quantizer_(quantizer), col_group_(col_group), keep_(keep), rows_(rows), cols_(cols) {
    if (keep_) kblk_.resize(static_cast<size_t>(block_size * rows));
  }
  void StartBlock(int64_t i1, int64_t count, const float*) {
    if (!keep_) return;
    for (int64_t r = 0; r < rows_; ++r) {
      const float* ks = keep_ + r * cols_ + i1;
      for (int64_t i = 0; i < count; ++i) kblk_[i * rows_ + r] = ks[i];
    }
  }
  void StartColumn(int64_t, int64_t, const float*, int64_t, int64_t) {}
  auto Column(int64_t, int64_t c) const {
    const GroupQuantizer* q = quantizer_;
    const int64_t g = col_group_[c];
    return [q, g](float x, int64_t r) { return q->FakeQuant(x, r, g); };
  }
  const float* BlockKeep(int64_t j) const { return keep_ ? kblk_.data() + j * rows_ : nullptr; }
  bool masks_trailing() const { return keep_ != nullptr; }
  void SubtractTrailing(int64_t r, int64_t i2, int64_t n, const float* t, float* dst) const {
    const float* k = keep_ + r * cols_ + i2;
    for (int64_t c = 0; c < n; ++c) dst[c] -= t[c] * k[c];
  }

 private:
  const GroupQuantizer* quantizer_;
  const int32_t* col_group_;
  const float* keep_;
  int64_t rows_, cols_;
  std::vector<float> kblk_;  // [i][r] the block's keep values
};

}  // namespace

absl::StatusOr<GptqResult> GptqQuantize(absl::string_view module, const float* weight, int64_t rows, int64_t cols,
                                        const float* hessian, int64_t num_samples, GroupQuantizer* quantizer,
                                        const GptqOptions& options) {
  // ---- validation ----
  LLMC_RETURN_IF_ERROR(ValidateGptqArgs(module, weight, rows, cols, hessian, num_samples, quantizer, options));
  LLMC_RETURN_IF_ERROR(CheckWeightFinite(module, weight, rows, cols));
  LLMC_RETURN_IF_ERROR(CheckHessianDiagonal(module, hessian, cols + 1, cols));

  // ---- strategy and column order ----
  LLMC_ASSIGN_OR_RETURN(GptqColumnOrder plan,
                        PlanGptqColumns(module, options, quantizer->params(), hessian, cols + 1, cols));
  const std::vector<int64_t>& perm = plan.perm;

  // Working copy in solve order (the result's storage without a permutation).
  std::vector<float> w = perm.empty() ? TakeGptqResultStorage(options, static_cast<size_t>(rows * cols))
                                      : std::vector<float>(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = weight + r * cols;
    float* dst = w.data() + r * cols;
    if (perm.empty()) {
      std::copy(src, src + cols, dst);
    } else {
      for (int64_t j = 0; j < cols; ++j) dst[j] = src[perm[j]];
    }
  }

  // ---- quantization parameters from the unmodified weight, before dead columns are zeroed ----
  if (plan.grouped) {
    const int64_t gs = quantizer->group_cols(), ng = quantizer->num_groups();
    const float* observed = plan.order == ActOrder::kGroup ? w.data() : weight;
    if (plan.order == ActOrder::kGroup) quantizer->PermuteImportance(perm);  // imatrix_mse's columns follow
    for (int64_t g = 0; g < ng; ++g)
      LLMC_RETURN_IF_ERROR(quantizer->Observe(observed, cols, g * gs, std::min(gs, cols - g * gs), g));
  } else {
    LLMC_RETURN_IF_ERROR(quantizer->Observe(weight, cols, 0, cols, 0));
  }
  const std::vector<int32_t> col_group = plan.ColumnGroups(cols, quantizer->group_cols());
  quantizer->mutable_params().g_idx.clear();

  // ---- which weights may change ----
  std::vector<float> keep;  // [rows, cols] solve order, 1 = may be updated, 0 = keeps its value
  if (options.keep_mask != nullptr) {
    keep.resize(w.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j)
        keep[r * cols + j] = (*options.keep_mask)[r * cols + plan.source_column(j)] ? 1.f : 0.f;
  } else {
    int64_t zeros = 0;
    for (float v : w) zeros += v == 0.0f;
    if (GptqPreservesZeros(zeros, rows * cols)) {
      keep.resize(w.size());
      for (size_t i = 0; i < w.size(); ++i) keep[i] = std::fabs(w[i]) <= kZeroAtol ? 0.f : 1.f;
    }
  }
  const bool preserve = !keep.empty();

  // ---- inverse-Hessian factor; dead columns ----
  LLMC_ASSIGN_OR_RETURN(InverseHessianFactor U,
                        InverseHessianFactor::Compute(module, hessian, cols, perm.empty() ? nullptr : perm.data(),
                                                      options.dampening_frac, options.double_precision_inverse));
  ZeroDeadColumns(U.dead(), rows, cols, w.data());

  GptqResult result;
  result.actorder = plan.order;
  result.preserved_zeros = preserve;
  result.dead_columns = U.num_dead();
  if (!U.factored()) MarkRtnFallback(module, U.failure(), options.dampening_frac, &result);

  // ---- the blocked column walk ----
  const int64_t B = std::min<int64_t>(options.block_size, cols);
  GptqPolicy policy(quantizer, col_group.data(), preserve ? keep.data() : nullptr, rows, cols, B);
  const std::vector<double> row_loss = WalkColumns(w.data(), rows, cols, U.data(), B, options.num_threads, &policy);

  // ---- back to the original column order ----
  if (perm.empty()) {
    result.weight = std::move(w);
  } else {
    result.weight = TakeGptqResultStorage(options, w.size());
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = w.data() + r * cols;
      float* dst = result.weight.data() + r * cols;
      for (int64_t j = 0; j < cols; ++j) dst[perm[j]] = src[j];
    }
  }
  FinishGptqResult(row_loss, plan, col_group, quantizer, &result);
  return result;
}

}  // namespace llmc
