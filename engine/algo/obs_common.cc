#include "engine/algo/obs_common.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"

namespace llmc {

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

int ColumnWalkThreads(int requested, int64_t rows) {
  return static_cast<int>(std::min<int64_t>(ResolveThreads(requested), std::max<int64_t>(1, rows / 64)));
}

absl::Status CheckBlockSize(absl::string_view module, int block_size) {
  if (block_size <= 0)
    return absl::InvalidArgumentError(absl::StrCat(module, ": block_size must be positive, got ", block_size));
  return absl::OkStatus();
}

absl::Status CheckWeightFinite(absl::string_view module, const float* weight, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(weight[i])) return WeightNotFiniteError(module, i, cols);
  return absl::OkStatus();
}

absl::Status WeightNotFiniteError(absl::string_view module, int64_t index, int64_t cols) {
  return absl::InvalidArgumentError(absl::StrCat(module, ": the weight has a NaN or Inf at [", index / cols, ", ",
                                                 index % cols, "]; check the model checkpoint"));
}

absl::Status HessianNotFiniteError(absl::string_view module, int64_t index, int64_t n) {
  return absl::InvalidArgumentError(absl::StrCat(
      module, ": the Hessian has a NaN or Inf at [", index / n, ", ", index % n,
      "]; the calibration activations of this module overflowed or contain NaN (check the model's dtype and "
      "the calibration data)"));
}

absl::Status CheckDampeningFrac(absl::string_view module, double dampening_frac) {
  if (!(dampening_frac >= 0) || !std::isfinite(dampening_frac))
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": dampening_frac must be a finite non-negative number, got ", dampening_frac));
  return absl::OkStatus();
}

Dampening DeadColumnsAndDamping(const float* diag, int64_t stride, int64_t cols, const int64_t* perm,
                                double dampening_frac) {
  Dampening d;
  d.dead.assign(cols, 0);
  double diag_sum = 0;
  for (int64_t i = 0; i < cols; ++i) {
    double h = diag[(perm ? perm[i] : i) * stride];
    if (h == 0) {
      h = 1;
      d.dead[i] = 1;
      ++d.num_dead;
    }
    diag_sum += h;
  }
  d.damp = dampening_frac * (diag_sum / static_cast<double>(cols));
  return d;
}

void ZeroDeadColumns(const std::vector<uint8_t>& dead, int64_t rows, int64_t cols, float* w) {
  for (int64_t j = 0; j < cols; ++j)
    if (dead[j])
      for (int64_t r = 0; r < rows; ++r) w[r * cols + j] = 0.0f;
}

std::string FactorFailureWarning(absl::string_view module, absl::string_view failure, double dampening_frac,
                                 absl::string_view consequence) {
  std::string w = absl::StrCat(module, ": ", failure, " (dampening_frac ", dampening_frac, "); ", consequence,
                               " for this module. Consider increasing dampening_frac, using more calibration "
                               "samples, or shuffling the calibration dataset");
  spdlog::warn("{}", w);
  return w;
}

double HalfTotalLoss(const std::vector<double>& row_loss) {
  double loss = 0;
  for (double l : row_loss) loss += l;
  return loss / 2;
}

}  // namespace llmc
