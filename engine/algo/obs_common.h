// What the Optimal Brain Surgeon solvers share before and after their column walk (column_walk.h): GPTQ
// (gptq.cc), GPTQ on the GPU (cuda_gptq.cc) and SparseGPT (sparsegpt.cc) validate the same way, treat dead
// columns and dampen the Hessian as InverseHessianFactor does (inverse_hessian.h), warn the same way when the
// factorization fails, and total their per-row losses alike. Written once here so the three agree by
// construction.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace llmc {

// The threads a solver uses: `requested`, or the hardware concurrency when it is 0 (at least 1).
int ResolveThreads(int requested);
// The threads for the per-column work of a weight of `rows` rows: ResolveThreads(requested), at most one per 64
// rows (and at least 1).
int ColumnWalkThreads(int requested, int64_t rows);

// INVALID_ARGUMENT naming `module` unless block_size > 0.
absl::Status CheckBlockSize(absl::string_view module, int block_size);
// INVALID_ARGUMENT naming `module` and the first position when `weight` [rows, cols] has a NaN or Inf.
absl::Status CheckWeightFinite(absl::string_view module, const float* weight, int64_t rows, int64_t cols);
// The error CheckWeightFinite returns for flat `index` (for scans done elsewhere, e.g. on the GPU).
absl::Status WeightNotFiniteError(absl::string_view module, int64_t index, int64_t cols);
// The error for a NaN or Inf at flat `index` of an [n, n] Hessian.
absl::Status HessianNotFiniteError(absl::string_view module, int64_t index, int64_t n);
// INVALID_ARGUMENT naming `module` unless dampening_frac is finite and non-negative.
absl::Status CheckDampeningFrac(absl::string_view module, double dampening_frac);

// Dead columns and dampening of a Hessian H [cols, cols], in solve order (column i is the original column perm[i],
// or i without a permutation): column i is dead when H_ii == 0 (its diagonal then counts as 1, and the solver zeroes
// its weights), and damp = dampening_frac * mean of the diagonal so counted. This is llm-compressor's order of
// steps, and its arithmetic: the mean is summed in fp64 in solve order.
struct Dampening {
  std::vector<uint8_t> dead;  // [cols] 1 = dead
  int64_t num_dead = 0;
  double damp = 0;
};
// `diag` holds H_jj at diag[j * stride] (stride cols + 1 for a row-major H, 1 for its diagonal alone).
Dampening DeadColumnsAndDamping(const float* diag, int64_t stride, int64_t cols, const int64_t* perm,
                                double dampening_frac);
// Zeroes the dead columns of `w` [rows, cols] (row-major, solve order).
void ZeroDeadColumns(const std::vector<uint8_t>& dead, int64_t rows, int64_t cols, float* w);

// The warning for a Hessian that could not be factored (U = identity): "<module>: <failure> (dampening_frac f);
// <consequence> for this module. Consider ...". Logged, and returned for the solver's result.
std::string FactorFailureWarning(absl::string_view module, absl::string_view failure, double dampening_frac,
                                 absl::string_view consequence);

// Calls fn(i1, count) for the blocks [i1, i1 + count) of `block` columns covering [0, cols), in order; stops at
// the first non-OK status and returns it. `block` must be positive.
template <typename Fn>
absl::Status ForEachColumnBlock(int64_t cols, int64_t block, Fn&& fn) {
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    absl::Status s = fn(i1, std::min(block, cols - i1));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// The loss the library logs: half the sum of the per-row losses, added in row order.
double HalfTotalLoss(const std::vector<double>& row_loss);

}  // namespace llmc
