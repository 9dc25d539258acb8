#include "engine/calib/block_backend.h"

#include "absl/strings/str_cat.h"
#include "engine/calib/cpu_block_backend.h"
#include "engine/calib/cuda_block_backend.h"

namespace llmc {

absl::StatusOr<GptqResult> BlockBackend::Gptq(const std::string& module, const float* weight, int64_t rows,
                                              int64_t cols, const GroupStats* st, GroupQuantizer* quantizer,
                                              const GptqOptions& options) {
  if (!st || !st->hessian) return absl::InternalError(absl::StrCat(module, ": no Hessian"));
  std::vector<float> h = st->hessian->Hessian();
  return GptqQuantize(module, weight, rows, cols, h.data(), st->hessian->num_samples(), quantizer, options);
}

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                 std::vector<HiddenStates> batches) {
  if (options.device == "cuda") return CreateCudaBlockBackend(options, lm, std::move(batches));
  if (options.device != "cpu")
    return absl::InvalidArgumentError(absl::StrCat("device '", options.device, "': use cpu or cuda"));
  return CreateCpuBlockBackend(lm, std::move(batches));
}

}  // namespace llmc
