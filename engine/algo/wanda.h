// Wanda pruning (https://arxiv.org/abs/2306.11695) of one Linear weight, as llm-compressor's WandaModifier runs
// it (src/llmcompressor/modifiers/pruning/wanda/wanda_sparsify.py `sparsify_weight`):
//
//   metric[r, c] = |W[r, c]| * sqrt(S[c]),  S[c] = sum over calibration tokens of x[c]^2 / N  (fp32)
//
//  * unstructured ("0:0"): in every row, the int(cols * sparsity) weights of smallest metric are pruned (a stable
//    sort: ties prune the lower column first);
//  * N:M (e.g. "2:4"): in every row and every window of M consecutive columns starting at multiples of M, the N
//    weights of smallest metric are pruned (ties: the lower column first).
// No weight update, no dead-column handling (a column never seen has S = 0 and metric 0, so it is pruned first).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc {

struct WandaOptions {
  double sparsity = 0.5;               // unstructured fraction per row; ignored by N:M
  std::string mask_structure = "0:0";  // "0:0" or "N:M"
};

struct WandaResult {
  std::vector<float> weight;  // [rows, cols] fp32, pruned weights exactly 0 (stored dense)
  int64_t pruned = 0;         // weights the mask pruned
};

// Prunes `weight` [rows, cols] (row-major fp32; not modified) using `sum_sq_per_column` [cols] (sum over tokens of
// x^2 per input column, RowNormAccumulator::SumSquares()) and `num_samples` (its N; only the scale of the metric,
// which cannot change the mask beyond float rounding; pass 1 with already normalized values). Fails with
// INVALID_ARGUMENT naming `module` on bad shapes or options (sparsity outside [0, 1], cols not a multiple of M),
// negative or non-finite statistics, NaN/Inf weights, and FAILED_PRECONDITION when num_samples <= 0.
// Thread-safe (no shared state).
absl::StatusOr<WandaResult> WandaPrune(absl::string_view module, const float* weight, int64_t rows, int64_t cols,
                                       const double* sum_sq_per_column, int64_t num_samples,
                                       const WandaOptions& options = {});

}  // namespace llmc
