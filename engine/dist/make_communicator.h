// The communicator of one rank of a job, by backend name: "gloo" (CPU ranks, TCP) or "nccl" (GPU ranks; builds with
// CUDA only). Used by `llmc compress --ranks N` and by the service's workers.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/dist/communicator.h"
#include "engine/dist/rendezvous.h"

namespace llmc {

struct CommOptions {
  std::string backend = "gloo";              // "gloo" or "nccl"
  int rank = 0;
  int size = 1;
  std::string hostname = "127.0.0.1";        // gloo: this rank's listening address, reachable by the others
  int device = 0;                            // nccl: this rank's GPU
  std::string prefix = "comm";               // rendezvous key prefix (the job and its attempt)
  absl::Duration timeout = absl::Seconds(300);  // forming, and each collective
};

// The default backend for a device: nccl for "cuda", gloo otherwise.
std::string DefaultCommBackend(const std::string& device);

// Forms the communicator with the other ranks through `store`. INVALID_ARGUMENT for an unknown backend (naming the
// ones this build has), FAILED_PRECONDITION for nccl in a build without CUDA; the backends' errors otherwise.
absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const CommOptions& options, RendezvousStore* store);

// The nccl part of MakeCommunicator (make_nccl.cc in CUDA builds; make_nccl_unavailable.cc otherwise).
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const CommOptions& options, RendezvousStore* store);

}  // namespace llmc
