#include "engine/calib/cpu_block_backend.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmc {
namespace {

class CpuBlockBackend final : public BlockBackend {
 public:
  CpuBlockBackend(CausalLm* lm, std::vector<HiddenStates> batches) : lm_(lm), batches_(std::move(batches)) {}

  absl::Status Calibrate(const DecoderBlock& block, const Wants& wants, CalibHooks* hooks) override {
    for (const HiddenStates& b : batches_) {
      HiddenStates copy = b;
      hooks->set_seq_len(b.seq_len);
      LLMC_RETURN_IF_ERROR(lm_->RunBlock(block, &copy, hooks));
    }
    return absl::OkStatus();
  }

  absl::Status Propagate(const DecoderBlock& block) override {
    for (HiddenStates& b : batches_) LLMC_RETURN_IF_ERROR(lm_->RunBlock(block, &b));
    for (const HiddenStates& b : batches_)
      for (float v : b.data)
        if (!std::isfinite(v))
          return absl::InvalidArgumentError(absl::StrCat("block ", block.layer, " produced NaN or Inf activations with the ",
                                                         "compressed weights; the compression is unstable for this model"));
    return absl::OkStatus();
  }

 private:
  CausalLm* lm_;
  std::vector<HiddenStates> batches_;
};

}  // namespace

std::unique_ptr<BlockBackend> CreateCpuBlockBackend(CausalLm* lm, std::vector<HiddenStates> batches) {
  return std::make_unique<CpuBlockBackend>(lm, std::move(batches));
}

}  // namespace llmc
