// The rendezvous store of one assignment's gang, relayed by the coordinator (worker.proto, RendezvousSet and
// RendezvousValue): the ranks of a job on different hosts meet through the one address they all know. Set sends
// the key on this worker's stream; the coordinator relays it to every rank of the attempt (this one included);
// the stream reader hands the relayed values to Deliver; Get waits for them.
//
// Thread-safe: Get from the job's thread (a communicator forming), Deliver and Close from the stream reader.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "engine/dist/rendezvous.h"
#include "llmc/v1/worker.pb.h"

namespace llmc::worker {

class GangStore final : public RendezvousStore {
 public:
  // `send` writes a message on the worker's stream (false: the stream is gone).
  GangStore(std::string job_id, int attempt, std::function<bool(const v1::WorkerMessage&)> send);

  // UNAVAILABLE when the stream is gone, INVALID_ARGUMENT for a key or value the coordinator would drop.
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  // DEADLINE_EXCEEDED after `timeout`; CANCELLED once Close was called.
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;

  // A value relayed by the coordinator; ignored (false) unless it is for this job and attempt.
  bool Deliver(const v1::RendezvousValue& value) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends every Get, now and later (the job was cancelled or the stream closed).
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::string job_id_;
  const int attempt_;
  const std::function<bool(const v1::WorkerMessage&)> send_;
  absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace llmc::worker
