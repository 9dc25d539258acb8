#include "engine/dist/make_communicator.h"

namespace llmc {

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const CommOptions&, RendezvousStore*) {
  return absl::FailedPreconditionError("nccl: this build has no CUDA support; use the gloo backend (CPU ranks)");
}

}  // namespace llmc
