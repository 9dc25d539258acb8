#include "worker/gang_store.h"

#include "absl/strings/str_cat.h"
#include "common/util.h"
#include "proto/channel.h"

namespace llmc::worker {

GangStore::GangStore(std::string job_id, int attempt, std::function<bool(const v1::WorkerMessage&)> send)
    : job_id_(std::move(job_id)), attempt_(attempt), send_(std::move(send)) {}

absl::Status GangStore::Set(absl::string_view key, absl::string_view value) {
  if (!IsPortableName(key, rpc::kMaxRendezvousKeyLength))
    return absl::InvalidArgumentError(absl::StrCat("rendezvous key '", key.substr(0, 64),
                                                   "': use 1-200 characters of [A-Za-z0-9._-], not starting with '.'"));
  if (value.size() > rpc::kMaxRendezvousValueBytes)
    return absl::InvalidArgumentError(absl::StrCat("rendezvous value of ", value.size(), " bytes: at most 64 KiB"));
  v1::WorkerMessage m;
  auto* s = m.mutable_rendezvous_set();
  s->set_job_id(job_id_);
  s->set_attempt(attempt_);
  s->set_key(std::string(key));
  s->set_value(std::string(value));
  if (!send_(m)) return absl::UnavailableError("rendezvous: the connection to the coordinator is gone");
  return absl::OkStatus();
}

absl::StatusOr<std::string> GangStore::Get(absl::string_view key, absl::Duration timeout) {
  const std::string k(key);
  absl::MutexLock l(&mu_);
  auto ready = [this, &k]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || values_.count(k) > 0; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout))
    return absl::DeadlineExceededError(absl::StrCat("rendezvous: no rank of job ", job_id_, " attempt ", attempt_,
                                                    " published '", key, "' within ", absl::FormatDuration(timeout)));
  if (closed_) return absl::CancelledError(absl::StrCat("rendezvous of job ", job_id_, " ended"));
  return values_[k];
}

bool GangStore::Deliver(const v1::RendezvousValue& value) {
  if (value.job_id() != job_id_ || value.attempt() != attempt_) return false;
  absl::MutexLock l(&mu_);
  values_[value.key()] = value.value();
  return true;
}

void GangStore::Close() {
  absl::MutexLock l(&mu_);
  closed_ = true;
}

}  // namespace llmc::worker
