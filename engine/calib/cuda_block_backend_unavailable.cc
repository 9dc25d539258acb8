// CreateCudaBlockBackend in builds without the CUDA backend.
#include "engine/calib/cuda_block_backend.h"

namespace llmc {

absl::StatusOr<std::unique_ptr<BlockBackend>> CreateCudaBlockBackend(const BlockBackendOptions&, CausalLm*,
                                                                     CalibBatches) {
  return absl::FailedPreconditionError("device cuda: this build of llmc has no CUDA support; use --device cpu");
}

}  // namespace llmc
