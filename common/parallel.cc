#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstring>
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

void ParallelCopy(void* dst, const void* src, size_t bytes, int threads) {
  constexpr size_t kPiece = size_t{8} << 20;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t pieces = static_cast<int64_t>(std::min<size_t>((bytes + kPiece - 1) / kPiece, threads));
  if (pieces <= 1) {
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return;
  }
  const size_t each = (bytes + pieces - 1) / pieces;
  (void)ParallelFor(pieces, threads, [&](int64_t i) {
    const size_t begin = static_cast<size_t>(i) * each, end = std::min(bytes, begin + each);
    if (begin < end) std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, end - begin);
    return absl::OkStatus();
  });
}

}  // namespace llmc
