// The collectives of the ranks that share one job (DESIGN.md, Distribution): every rank calibrates on its slice of
// the samples, statistics are reduced before any solve (sum of Hessians, max of ranges), and the rank that owns a
// module broadcasts its solved weights so every rank can propagate its slice.
//
// SingleRank is the one-process implementation. NCCL (GPUs) and Gloo (CPU ranks) implementations plug in behind
// the same interface.
#pragma once

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace llmc {

// Collective operations of the ranks that share one job. Every rank calls the same collectives in the same order
// with buffers of the same size; a call returns once this rank's buffer holds the result. A non-OK status means
// the communicator is unusable (a rank failed or left): the job aborts and is resumed by re-forming the ranks.
// Not thread-safe: one thread of each rank drives it.
class Communicator {
 public:
  virtual ~Communicator() = default;
  // This rank, in [0, size()).
  virtual int rank() const = 0;
  // The number of ranks.
  virtual int size() const = 0;
  // In place over all ranks: every element becomes the sum (or max) of that element on every rank.
  virtual absl::Status AllReduceSum(absl::Span<float> data) = 0;
  virtual absl::Status AllReduceSum(absl::Span<double> data) = 0;
  virtual absl::Status AllReduceMax(absl::Span<float> data) = 0;
  // From rank `root` to all: every rank's `data` becomes root's.
  virtual absl::Status Broadcast(absl::Span<float> data, int root) = 0;
};

// One process holding every sample: rank 0 of 1, and the collectives leave the data as it is.
class SingleRank : public Communicator {
 public:
  int rank() const override;
  int size() const override;
  absl::Status AllReduceSum(absl::Span<float> data) override;
  absl::Status AllReduceSum(absl::Span<double> data) override;
  absl::Status AllReduceMax(absl::Span<float> data) override;
  absl::Status Broadcast(absl::Span<float> data, int root) override;
};

}  // namespace llmc
