// The `mask_structure` argument of llm-compressor's SparseGPTModifier and WandaModifier (sgpt_base.py
// `_split_mask_structure`): "N:M" prunes N of every M consecutive input columns of each row (e.g. "2:4"); "0:0"
// (the default) is unstructured pruning to the `sparsity` fraction.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc {

struct MaskStructure {
  int n = 0;  // weights pruned per group (0 = unstructured)
  int m = 0;  // group length along the input dimension
  bool structured() const { return n != 0; }
};

// Parses "N:M" (non-negative integers; N <= M, M > 0 unless N == 0). Fails naming `where`.
absl::StatusOr<MaskStructure> ParseMaskStructure(absl::string_view where, absl::string_view text);

}  // namespace llmc
