// SparseGPT (https://arxiv.org/abs/2301.00774) pruning of one Linear weight, as llm-compressor's
// SparseGPTModifier runs it (src/llmcompressor/modifiers/pruning/sparsegpt/sgpt_sparsify.py `sparsify_weight`,
// base.py, sgpt_base.py):
//
//  * dead columns (H_ii == 0) are zeroed, dampening and the inverse-Hessian factor U are InverseHessianFactor's
//    (the fallback to U = identity on a factorization failure is flagged, not an error);
//  * columns are processed in blocks of block_size with the lazy OBS update (in-block per column, one GEMM for
//    the trailing columns);
//  * unstructured ("0:0"): at the start of each block, metric = w^2 / U_jj^2 over the whole [rows, block] slice;
//    thresh = the k-th smallest metric, k = int(rows * block * sparsity); every weight with metric <= thresh is
//    pruned -- so each block prunes at least k + 1 weights (more on ties), slightly above `sparsity`, exactly as
//    the library does;
//  * N:M (e.g. "2:4"): when the solve reaches a column i with i % M == 0 (i counted inside the block), the N
//    weights of smallest metric among the next M columns of each row (with the weights already updated) are
//    pruned (ties: the lower column first); windows never cross a block, so block_size should be a multiple of M;
//  * preserve_sparsity_mask: weights that are zero at the start (after dead columns) stay pruned; unstructured
//    blocks extend the mask only when they are below the target; trailing updates skip masked weights. (The
//    library indexes the preserved mask with the in-block column for N:M windows; llmc uses the global column.)
//  * the loss it logs: sum of (w - q)^2 / U_ii^2 / 2 with q = 0 for pruned weights, else w.
//
// llm-compressor's SparseGPT does not quantize. A recipe that prunes and quantizes runs GPTQ afterwards (a
// separate modifier on the same calibration pass), and GPTQ keeps the pruned weights at zero: automatically when
// >= 5% of the weight is zero, or explicitly through GptqOptions::keep_mask (SparseGptResult::KeepMask()).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc {

struct SparseGptOptions {
  double sparsity = 0.5;               // fraction to prune (unstructured); ignored by N:M
  std::string mask_structure = "0:0";  // "0:0" unstructured, or "N:M" such as "2:4"
  int block_size = 128;
  double dampening_frac = 0.01;
  bool preserve_sparsity_mask = false;
  bool double_precision_inverse = true;  // factor H in fp64 (default) or fp32 as the library does
  int num_threads = 0;                   // per-column work inside a block; 0 = hardware concurrency
};

struct SparseGptResult {
  std::vector<float> weight;  // [rows, cols] fp32, pruned weights exactly 0 (stored dense); the library then
                              // rounds the result to the model dtype
  double loss = 0;
  int64_t pruned = 0;        // weights set to zero by the mask (not counting dead columns)
  int64_t dead_columns = 0;  // columns with H_ii == 0 (zeroed)
  bool fell_back = false;    // H could not be factored: no error compensation (see warning)
  std::string warning;

  // 1 where the weight is kept (non-zero), 0 where it is zero: GptqOptions::keep_mask for a later GPTQ pass.
  std::vector<uint8_t> KeepMask() const;
};

// Prunes `weight` [rows, cols] (row-major fp32; not modified) with `hessian` [cols, cols] (H = 2/N X^T X; not
// modified). Fails with INVALID_ARGUMENT naming `module` on bad shapes or options (sparsity outside [0, 1) for
// unstructured, an N:M window narrower than N, preserve_sparsity_mask with a weight already sparser than the
// target), or NaN/Inf in the weight or Hessian. Thread-compatible.
absl::StatusOr<SparseGptResult> SparseGptPrune(absl::string_view module, const float* weight, int64_t rows,
                                               int64_t cols, const float* hessian,
                                               const SparseGptOptions& options = {});

}  // namespace llmc
