// The collectives of the ranks that share one job (DESIGN.md, Distribution): every rank calibrates on its slice of
// the samples, statistics are reduced before any solve (sum of Hessians, max of ranges), and the rank that owns a
// module broadcasts its solved weights so every rank can propagate its slice.
//
// SingleRank is the one-process implementation. NCCL (GPUs) and Gloo (CPU ranks) implementations plug in behind
// the same interface.
#pragma once

#include <cstdint>
#include <string>

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
  virtual absl::Status Broadcast(absl::Span<uint8_t> data, int root) = 0;
  // Whether the collectives also take device memory (NCCL: GPU buffers reduce in place; host buffers are staged
  // through the device). Host memory works with every communicator.
  virtual bool device_memory() const { return false; }
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
  absl::Status Broadcast(absl::Span<uint8_t> data, int root) override;
};

// What a job's collectives cost, as a MeteredCommunicator counts them.
struct CommStats {
  int64_t calls = 0;
  int64_t bytes = 0;       // payload bytes of this rank's buffers
  double seconds = 0;      // wall time inside collectives (waiting for slower ranks included)
};

// Forwards to another communicator and counts calls, bytes and time (compression_report.json's "communication").
class MeteredCommunicator final : public Communicator {
 public:
  explicit MeteredCommunicator(Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::Status AllReduceSum(absl::Span<float> data) override;
  absl::Status AllReduceSum(absl::Span<double> data) override;
  absl::Status AllReduceMax(absl::Span<float> data) override;
  absl::Status Broadcast(absl::Span<float> data, int root) override;
  absl::Status Broadcast(absl::Span<uint8_t> data, int root) override;
  bool device_memory() const override { return inner_->device_memory(); }
  const CommStats& stats() const { return stats_; }

 private:
  template <typename F>
  absl::Status Count(size_t bytes, F&& f);
  Communicator* inner_;
  CommStats stats_;
};

// From `root` to all, a byte string of any length (its size first): every rank's `*data` becomes root's.
// Refuses (DATA_LOSS) a size above `max_bytes`, so a broken peer cannot make a rank allocate without bound.
absl::Status BroadcastString(Communicator* comm, std::string* data, int root, int64_t max_bytes = int64_t{1} << 40);
// From `root` to all: one integer.
absl::Status BroadcastInt(Communicator* comm, int64_t* value, int root);

}  // namespace llmc
