// Pruning one Linear of a block with the recipe's SparseGPT or Wanda settings (engine/algo does the math).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/algo/hessian.h"
#include "engine/format/algorithms.h"
#include "engine/model/linear_hooks.h"

namespace llmc {

struct PruneResult {
  std::vector<uint8_t> mask;  // 1 = kept, 0 = pruned, [out, in]
  double loss = 0;            // SparseGPT's loss (0 for Wanda)
  double sparsity = 0;        // fraction of zeros after pruning
};

// Checks the recipe's pruning settings before a run (mask structure, sparsity range).
absl::Status CheckSparsity(const SparsityParams& sp);

// Whether the recipe prunes the Linear `name`: a target names it and no ignore entry does. The class target
// "Linear" names every Linear except the mixture-of-experts routers (mlp.gate, block_sparse_moe.gate,
// shared_expert_gate, ...: IsMoeRouter), which stay dense as they stay unquantized: a router is pruned only when
// a name or "re:" target matches it.
bool SparsityTargets(const SparsityParams& sp, const std::string& name);

// Prunes `w` in place (zeros stored dense, values rounded to the model dtype by the caller). SparseGPT needs
// `hessian`, Wanda `row_norm`. Errors name the module.
absl::StatusOr<PruneResult> PruneModule(const SparsityParams& sp, LinearWeight* w, const HessianAccumulator* hessian,
                                        const RowNormAccumulator* row_norm, int threads);

}  // namespace llmc
