#include "engine/dist/rendezvous.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/util.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;

// Keys become file names: only [A-Za-z0-9._-], so a key cannot name a path outside the directory.
bool ValidKey(absl::string_view key) { return IsPortableName(key, kMaxRendezvousKeyLength); }

absl::Status BadKey(absl::string_view key) {
  return absl::InvalidArgumentError(absl::StrCat("rendezvous key '", key.substr(0, 64),
                                                 "': use 1-200 characters of [A-Za-z0-9._-], not starting with '.'"));
}

class DirectoryStore final : public RendezvousStore {
 public:
  explicit DirectoryStore(std::string dir) : dir_(std::move(dir)) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    if (!ValidKey(key)) return BadKey(key);
    const std::string path = dir_ + "/" + std::string(key);
    const std::string tmp = absl::StrCat(dir_, "/.", key, ".", getpid(), ".", std::hash<std::thread::id>()(std::this_thread::get_id()));
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(value.data(), static_cast<std::streamsize>(value.size()));
      if (!out.flush()) return absl::InternalError(absl::StrCat("rendezvous: cannot write ", tmp));
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) return absl::InternalError(absl::StrCat("rendezvous: cannot publish ", path, ": ", ec.message()));
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override {
    if (!ValidKey(key)) return BadKey(key);
    const std::string path = dir_ + "/" + std::string(key);
    const absl::Time deadline = absl::Now() + timeout;
    absl::Duration pause = absl::Milliseconds(1);
    while (true) {
      std::ifstream in(path, std::ios::binary);
      if (in) {
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
      }
      if (absl::Now() >= deadline)
        return absl::DeadlineExceededError(absl::StrCat("rendezvous: no rank published '", key, "' in ", dir_,
                                                        " within ", absl::FormatDuration(timeout)));
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Milliseconds(50));
    }
  }

 private:
  const std::string dir_;
};

class MemoryStore final : public RendezvousStore {
 public:
  absl::Status Set(absl::string_view key, absl::string_view value) override {
    if (!ValidKey(key)) return BadKey(key);
    absl::MutexLock l(&mu_);
    values_[std::string(key)] = std::string(value);
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override {
    if (!ValidKey(key)) return BadKey(key);
    const std::string k(key);
    absl::MutexLock l(&mu_);
    auto present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return values_.count(k) > 0; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&present), timeout))
      return absl::DeadlineExceededError(absl::StrCat("rendezvous: no rank published '", key, "' within ",
                                                      absl::FormatDuration(timeout)));
    return values_[k];
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<RendezvousStore>> NewDirectoryStore(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    return absl::PermissionDeniedError(absl::StrCat("rendezvous directory ", dir, ": cannot create it: ", ec.message()));
  return std::unique_ptr<RendezvousStore>(new DirectoryStore(dir));
}

std::unique_ptr<RendezvousStore> NewMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace llmc
