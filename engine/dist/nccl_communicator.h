// NCCL (from the CUDA toolkit): the communicator of GPU ranks, one per job, one GPU per rank. Built with the CUDA
// backend only.
//
// Buffers are device memory on this rank's GPU (host buffers are staged through it); collectives are enqueued
// on `stream` (the job's stream) and this
// call waits for them, polling NCCL's asynchronous error and the deadline: a rank that died or stops answering
// ends the collective with ABORTED after at most `timeout` (the communicator is aborted with ncclCommAbort and
// stays unusable), never a hang. Rendezvous: rank 0 creates the ncclUniqueId and publishes it through the store
// (the coordinator relays it between hosts); the others wait for it.
//
// NVLink multicast (NVLS) is never enabled: NCCL_NVLS_ENABLE=0 is set before the first communicator unless the
// environment already says otherwise (it can take shared GPUs out of service).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/dist/communicator.h"
#include "engine/dist/rendezvous.h"

namespace llmc {

struct NcclOptions {
  int rank = 0;
  int size = 1;
  int device = 0;                            // this rank's GPU
  void* stream = nullptr;                    // cudaStream_t the collectives run on (nullptr: the default stream)
  std::string prefix = "nccl";               // rendezvous key prefix (e.g. the job id and attempt)
  absl::Duration timeout = absl::Seconds(120);  // forming the communicator, and each collective
};

class NcclCommunicator final : public Communicator {
 public:
  // UNAVAILABLE (naming NCCL's error) when the ranks cannot form within the timeout; INVALID_ARGUMENT for a bad
  // rank, size or device.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const NcclOptions& options, RendezvousStore* store);
  ~NcclCommunicator() override;  // destroys (or, after a failure, has aborted) the NCCL communicator

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // `data` is device memory on this rank's GPU, or host memory (staged through the device).
  absl::Status AllReduceSum(absl::Span<float> data) override;
  absl::Status AllReduceSum(absl::Span<double> data) override;
  absl::Status AllReduceMax(absl::Span<float> data) override;
  absl::Status Broadcast(absl::Span<float> data, int root) override;
  absl::Status Broadcast(absl::Span<uint8_t> data, int root) override;
  bool device_memory() const override { return true; }

 private:
  absl::Status Run(const char* what, void* data, size_t bytes, const std::function<int(void* buf)>& enqueue);
  struct Impl;
  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace llmc
