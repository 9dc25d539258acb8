#include "engine/algo/sparsegpt.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/column_walk.h"
#include "engine/algo/inverse_hessian.h"
#include "engine/algo/mask_structure.h"
#include "engine/algo/obs_common.h"

namespace llmc {
namespace {

// SparseGPT's part of the column walk: the mask of each block (unstructured: a threshold over the whole block at its
// start; N:M: per window of M columns when the walk reaches it), pruned weights quantized to 0; with a preserved
// mask, masked weights take no trailing update.
class SparseGptPolicy {
 public:
  // `base` [rows, cols] (1 = zero at the start, stays pruned) or null; `u` the factor [cols, cols].
  SparseGptPolicy(const MaskStructure& ms, double sparsity, const uint8_t* base, const float* u, int64_t rows,
                  int64_t cols, int64_t block_size)
      : ms_(ms), sparsity_(sparsity), base_(base), u_(u), rows_(rows), cols_(cols),
        mblk_(static_cast<size_t>(block_size * rows)), row_pruned_(rows, 0) {}

  void StartBlock(int64_t i1, int64_t count, const float* blk) {
    block_count_ = count;
    const bool preserve = base_ != nullptr;
    for (int64_t r = 0; r < rows_; ++r)
      for (int64_t i = 0; i < count; ++i) mblk_[i * rows_ + r] = preserve ? base_[r * cols_ + i1 + i] : 0;
    if (ms_.structured()) return;
    const int64_t numel = rows_ * count;
    const int64_t k = static_cast<int64_t>(static_cast<double>(numel) * sparsity_);
    int64_t already = 0;
    if (preserve)
      for (size_t i = 0; i < static_cast<size_t>(numel); ++i) already += mblk_[i];
    if (preserve && k <= already) return;
    metric_.resize(static_cast<size_t>(numel));
    for (int64_t i = 0; i < count; ++i) {
      const float d = u_[(i1 + i) * cols_ + i1 + i];
      for (int64_t r = 0; r < rows_; ++r) {
        const float x = blk[i * rows_ + r];
        float m = x * x / (d * d);
        if (preserve && mblk_[i * rows_ + r]) m = 0.0f;  // (~mask) * w^2 / d^2
        metric_[i * rows_ + r] = m;
      }
    }
    std::vector<float> sorted = metric_;
    std::nth_element(sorted.begin(), sorted.begin() + k, sorted.end());
    const float thresh = sorted[k];
    for (size_t i = 0; i < static_cast<size_t>(numel); ++i) mblk_[i] = metric_[i] <= thresh;
  }

  // N:M: the N weights of smallest metric among the next M columns of each row are pruned.
  void StartColumn(int64_t i, int64_t c, const float* blk, int64_t r0, int64_t r1) {
    if (!ms_.structured() || i % ms_.m != 0) return;
    const int64_t count = block_count_;
    const int64_t width = std::min<int64_t>(ms_.m, count - i);  // >= ms.n, checked up front
    std::vector<float> mt(width);
    std::vector<int> idx(width);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < width; ++j) {
        const float x = blk[(i + j) * rows_ + r];
        const float dj = u_[(c + j) * cols_ + c + j];
        float m = x * x / (dj * dj);
        if (base_ && base_[r * cols_ + c + j]) m = 0.0f;
        mt[j] = m;
        idx[j] = static_cast<int>(j);
      }
      std::partial_sort(idx.begin(), idx.begin() + ms_.n, idx.begin() + width,
                        [&](int a, int b) { return mt[a] < mt[b] || (mt[a] == mt[b] && a < b); });
      for (int j = 0; j < ms_.n; ++j) mblk_[(i + idx[j]) * rows_ + r] = 1;
    }
  }

  // Pruned weights become 0 (counted per row), the others stay.
  auto Column(int64_t i, int64_t) {
    const uint8_t* mc = mblk_.data() + i * rows_;
    int64_t* pruned = row_pruned_.data();
    return [mc, pruned](float x, int64_t r) {
      pruned[r] += mc[r];
      return mc[r] ? 0.0f : x;
    };
  }
  const float* BlockKeep(int64_t) const { return nullptr; }
  bool masks_trailing() const { return base_ != nullptr; }
  void SubtractTrailing(int64_t r, int64_t i2, int64_t n, const float* t, float* dst) const {
    const uint8_t* b = base_ + r * cols_ + i2;
    for (int64_t c = 0; c < n; ++c) dst[c] -= b[c] ? 0.0f : t[c];
  }

  int64_t pruned() const {
    int64_t p = 0;
    for (int64_t v : row_pruned_) p += v;
    return p;
  }

 private:
  const MaskStructure ms_;
  const double sparsity_;
  const uint8_t* base_;
  const float* u_;
  const int64_t rows_, cols_;
  int64_t block_count_ = 0;
  std::vector<uint8_t> mblk_;  // [i][r] pruned
  std::vector<float> metric_;
  std::vector<int64_t> row_pruned_;
};

}  // namespace

std::vector<uint8_t> SparseGptResult::KeepMask() const {
  std::vector<uint8_t> m(weight.size());
  for (size_t i = 0; i < weight.size(); ++i) m[i] = weight[i] != 0.0f;
  return m;
}

absl::StatusOr<SparseGptResult> SparseGptPrune(absl::string_view module, const float* weight, int64_t rows,
                                               int64_t cols, const float* hessian, const SparseGptOptions& options) {
  if (weight == nullptr || hessian == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(module, ": SparseGPT needs the weight and its Hessian"));
  if (rows <= 0 || cols <= 0)
    return absl::InvalidArgumentError(absl::StrCat(module, ": invalid weight shape [", rows, ", ", cols, "]"));
  LLMC_RETURN_IF_ERROR(CheckBlockSize(module, options.block_size));
  LLMC_ASSIGN_OR_RETURN(MaskStructure ms, ParseMaskStructure(module, options.mask_structure));
  if (!ms.structured() && !(options.sparsity >= 0.0 && options.sparsity < 1.0))
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": sparsity must be in [0, 1) for unstructured pruning, got ", options.sparsity));
  LLMC_RETURN_IF_ERROR(CheckWeightFinite(module, weight, rows, cols));

  const int64_t B = std::min<int64_t>(options.block_size, cols);
  if (ms.structured()) {
    // N:M windows start at in-block columns i % M == 0; each must hold at least N columns.
    const int64_t tails[2] = {B % ms.m, (cols % B) % ms.m};
    for (int64_t t : tails)
      if (t != 0 && t < ms.n)
        return absl::InvalidArgumentError(absl::StrCat(
            module, ": mask_structure ", options.mask_structure, " with block_size ", options.block_size,
            " and in_features ", cols, " leaves a window of ", t, " columns (fewer than ", ms.n,
            "); use a block_size and in_features that are multiples of ", ms.m));
  }

  LLMC_ASSIGN_OR_RETURN(InverseHessianFactor U, InverseHessianFactor::Compute(module, hessian, cols, nullptr,
                                                                              options.dampening_frac,
                                                                              options.double_precision_inverse));
  SparseGptResult result;
  result.dead_columns = U.num_dead();
  std::vector<float> w(weight, weight + rows * cols);
  ZeroDeadColumns(U.dead(), rows, cols, w.data());
  if (!U.factored()) {
    result.fell_back = true;
    result.warning =
        FactorFailureWarning(module, U.failure(), options.dampening_frac, "pruning without error compensation");
  }

  // The preserved mask (1 = already zero, stays pruned).
  std::vector<uint8_t> base;
  if (options.preserve_sparsity_mask) {
    base.resize(w.size());
    int64_t zeros = 0;
    for (size_t i = 0; i < w.size(); ++i) zeros += (base[i] = w[i] == 0.0f);
    const float current = static_cast<float>(zeros) / static_cast<float>(rows * cols);
    if (current > static_cast<float>(options.sparsity))
      return absl::InvalidArgumentError(absl::StrCat(
          module, ": the weight is already ", current, " sparse, above the target sparsity ", options.sparsity,
          "; turn preserve_sparsity_mask off or raise the sparsity"));
  }

  SparseGptPolicy policy(ms, options.sparsity, base.empty() ? nullptr : base.data(), U.data(), rows, cols, B);
  result.loss = HalfTotalLoss(WalkColumns(w.data(), rows, cols, U.data(), B, options.num_threads, &policy));
  result.pruned = policy.pruned();
  result.weight = std::move(w);
  return result;
}

}  // namespace llmc
