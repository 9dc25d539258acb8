// Where the ranks of one job find each other before their communicator exists: a small key-value store. Rank 0
// publishes what the others need (Gloo ranks publish their listening addresses; NCCL's rank 0 its unique id), the
// others wait for it. On one host a shared directory does (`llmc compress --ranks N`); across hosts the
// coordinator relays the keys over the worker streams (it is the only address anyone needs).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace llmc {

// Keys are 1-200 characters of [A-Za-z0-9._-], not starting with '.' (common/util.h IsPortableName).
inline constexpr size_t kMaxRendezvousKeyLength = 200;

// Thread-safe. Keys are short ASCII names chosen by the communicators; values are bytes.
class RendezvousStore {
 public:
  virtual ~RendezvousStore() = default;
  // Publishes `value` under `key` (a key is set once; setting it again replaces it).
  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;
  // The value of `key`, waiting until some rank sets it. DEADLINE_EXCEEDED naming the key after `timeout`.
  virtual absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) = 0;
};

// A directory every rank can see (one host, or a shared filesystem). Values are written to a temporary file and
// renamed into place, so a reader never sees half a value. `dir` is created if missing.
absl::StatusOr<std::unique_ptr<RendezvousStore>> NewDirectoryStore(const std::string& dir);

// In one process (ranks as threads, in tests).
std::unique_ptr<RendezvousStore> NewMemoryStore();

}  // namespace llmc
