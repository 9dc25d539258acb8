#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace llmc {

absl::Status ParallelFor(int64_t n, int threads, const std::function<absl::Status(int64_t i)>& fn) {
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  struct FirstError {
    absl::Mutex mu;
    absl::Status status ABSL_GUARDED_BY(mu);
  } first;
  auto worker = [&] {
    for (int64_t i = next++; i < n && !failed.load(); i = next++) {
      absl::Status s = fn(i);
      if (!s.ok()) {
        absl::MutexLock lock(&first.mu);
        if (first.status.ok()) first.status = std::move(s);
        failed = true;
        return;
      }
    }
  };
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(threads, n));
  if (count == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(count);
    for (int64_t t = 0; t < count; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  absl::MutexLock lock(&first.mu);
  return first.status;
}

}  // namespace llmc
