#include "engine/calib/block_backend.h"

#include <memory>

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

CalibBatches CalibBatches::FromHiddenStates(std::vector<HiddenStates> batches) {
  CalibBatches c;
  for (const HiddenStates& h : batches) c.shapes.emplace_back(h.num_seqs, h.seq_len);
  auto held = std::make_shared<std::vector<HiddenStates>>(std::move(batches));
  c.embed = [held](size_t b, int64_t first, int64_t n) -> absl::StatusOr<HiddenStates> {
    const HiddenStates& h = (*held)[b];
    if (first < 0 || n < 0 || first + n > h.num_seqs)
      return absl::InternalError(absl::StrCat("sequences [", first, ", ", first + n, ") of a batch of ", h.num_seqs));
    HiddenStates out;
    out.num_seqs = n;
    out.seq_len = h.seq_len;
    out.hidden = h.hidden;
    const int64_t row = h.seq_len * h.hidden;
    out.data.assign(h.data.begin() + first * row, h.data.begin() + (first + n) * row);
    return out;
  };
  return c;
}

absl::StatusOr<std::vector<HiddenStates>> CalibBatches::EmbedAll() const {
  std::vector<HiddenStates> all;
  for (size_t b = 0; b < shapes.size(); ++b) {
    absl::StatusOr<HiddenStates> h = embed(b, 0, shapes[b].first);
    if (!h.ok()) return h.status();
    all.push_back(std::move(*h));
  }
  return all;
}

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                 CalibBatches batches) {
  if (options.device == "cuda") return CreateCudaBlockBackend(options, lm, std::move(batches));
  if (options.device != "cpu")
    return absl::InvalidArgumentError(absl::StrCat("device '", options.device, "': use cpu or cuda"));
  if (!options.activations.empty() && options.activations != "fp32")
    return absl::InvalidArgumentError(absl::StrCat("calibration activations '", options.activations,
                                                   "': the cpu keeps them in fp32; bf16 and host apply to --device cuda"));
  std::vector<HiddenStates> all;
  if (!batches.shapes.empty()) {
    absl::StatusOr<std::vector<HiddenStates>> a = batches.EmbedAll();
    if (!a.ok()) return a.status();
    all = std::move(*a);
  }
  return CreateCpuBlockBackend(lm, std::move(all));
}

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateBlockBackend(const BlockBackendOptions& options, CausalLm* lm,
                                                                 std::vector<HiddenStates> batches) {
  return CreateBlockBackend(options, lm, CalibBatches::FromHiddenStates(std::move(batches)));
}

}  // namespace llmc
