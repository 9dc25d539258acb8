// Gloo over TCP: the communicator of CPU ranks (Debian's libgloo-dev), so the whole distributed path runs on
// machines without GPUs, in CI and on CPU-only clusters.
//
// Every rank opens a TCP device on `hostname` (an address the other ranks can reach), publishes it through the
// rendezvous store and connects to every other rank (a full mesh). Collectives run Gloo's algorithms (ring
// all-reduce, one-to-all broadcast) on the caller's host buffers. The reduction order depends only on the
// number of ranks and the buffer size, so a job run twice with the same ranks gets the same bits, and every
// rank ends with the same bits.
//
// Failure: every collective has a deadline (`timeout`); a rank that died or stops answering ends the collective
// on every other rank with ABORTED (a closed connection at once, a silent peer at the deadline), never a hang.
// After a failure the communicator is unusable: every later call returns ABORTED too.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/dist/communicator.h"
#include "engine/dist/rendezvous.h"

namespace gloo {
class Context;
}

namespace llmc {

struct GlooOptions {
  int rank = 0;
  int size = 1;
  std::string hostname = "127.0.0.1";        // this rank's listening address, reachable by the other ranks
  std::string prefix = "gloo";               // rendezvous key prefix (e.g. the job id and attempt)
  absl::Duration timeout = absl::Seconds(60);  // connecting, and each collective
};

class GlooCommunicator final : public Communicator {
 public:
  // Connects to the other ranks. `store` is used during the call only. INVALID_ARGUMENT for a bad rank/size,
  // UNAVAILABLE when the ranks could not connect within the timeout (naming the address and the cause).
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(const GlooOptions& options, RendezvousStore* store);
  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(absl::Span<float> data) override;
  absl::Status AllReduceSum(absl::Span<double> data) override;
  absl::Status AllReduceMax(absl::Span<float> data) override;
  absl::Status Broadcast(absl::Span<float> data, int root) override;
  absl::Status Broadcast(absl::Span<uint8_t> data, int root) override;

 private:
  template <typename T>
  absl::Status BroadcastT(absl::Span<T> data, int root);
  GlooCommunicator(int rank, int size, std::chrono::milliseconds timeout, std::shared_ptr<gloo::Context> context);
  template <typename T>
  absl::Status AllReduce(absl::Span<T> data, void (*fn)(void*, const void*, const void*, size_t), const char* what);
  absl::Status Failed(const char* what, const std::string& cause);

  const int rank_, size_;
  const std::chrono::milliseconds timeout_;
  std::shared_ptr<gloo::Context> context_;
  uint32_t tag_ = 0;      // each collective its own tag, so a late message cannot be taken for the next one
  std::string broken_;    // the first failure; non-empty: unusable
};

}  // namespace llmc
