#include "engine/calib/pruning.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/algo/block_view.h"
#include "engine/algo/mask_structure.h"
#include "engine/algo/sparsegpt.h"
#include "engine/algo/wanda.h"
#include "engine/model/moe.h"

namespace llmc {

absl::Status CheckSparsity(const SparsityParams& sp) {
  LLMC_RETURN_IF_ERROR(ParseMaskStructure("mask_structure", sp.mask_structure).status());
  if (!(sp.sparsity >= 0 && sp.sparsity < 1))
    return absl::InvalidArgumentError("sparsity must be in [0, 1)");
  return absl::OkStatus();
}

bool SparsityTargets(const SparsityParams& sp, const std::string& name) {
  bool t = false;
  const bool router = IsMoeRouter(name);
  for (const auto& p : sp.targets) t |= p == "Linear" ? !router : MatchesTarget(p, name);
  for (const auto& p : sp.ignore) t &= !MatchesTarget(p, name);
  return t;
}

absl::StatusOr<PruneResult> PruneModule(const SparsityParams& sp, LinearWeight* w, const HessianAccumulator* hessian,
                                        const RowNormAccumulator* row_norm, int threads) {
  const int64_t rows = w->out_features, cols = w->in_features;
  PruneResult out;
  if (sp.method == "sparsegpt") {
    if (!hessian || hessian->num_samples() == 0)
      return absl::FailedPreconditionError(absl::StrCat(w->name, ": saw no calibration tokens; cannot prune it with SparseGPT"));
    SparseGptOptions o;
    o.sparsity = sp.sparsity;
    o.mask_structure = sp.mask_structure;
    o.block_size = sp.block_size;
    o.dampening_frac = sp.dampening_frac;
    o.num_threads = threads;
    std::vector<float> h = hessian->Hessian();
    LLMC_ASSIGN_OR_RETURN(SparseGptResult r, SparseGptPrune(w->name, w->weight.data(), rows, cols, h.data(), o));
    out.loss = r.loss;
    out.mask = r.KeepMask();
    w->weight = std::move(r.weight);
  } else {
    if (!row_norm || row_norm->num_samples() == 0)
      return absl::FailedPreconditionError(absl::StrCat(w->name, ": saw no calibration tokens; cannot prune it with Wanda"));
    WandaOptions o;
    o.sparsity = sp.sparsity;
    o.mask_structure = sp.mask_structure;
    LLMC_ASSIGN_OR_RETURN(WandaResult r, WandaPrune(w->name, w->weight.data(), rows, cols, row_norm->SumSquares().data(),
                                                    row_norm->num_samples(), o));
    w->weight = std::move(r.weight);
    out.mask.resize(w->weight.size());
    for (size_t i = 0; i < w->weight.size(); ++i) out.mask[i] = w->weight[i] != 0.0f;
  }
  int64_t zeros = 0;
  for (float v : w->weight) zeros += v == 0.0f;
  out.sparsity = static_cast<double>(zeros) / static_cast<double>(w->weight.size());
  return out;
}

}  // namespace llmc
