// Threads for the CPU model runtime: a pool for data-parallel loops and the OpenBLAS thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "common/thread_pool.h"

namespace llmc {

// Owns `threads` worker threads and sets OpenBLAS to use as many for each GEMM (OpenBLAS's thread count is
// process-wide: the last CpuContext created wins). Not thread-safe: one caller at a time runs work on it.
class CpuContext {
 public:
  // threads <= 0: one per hardware thread.
  explicit CpuContext(int threads);
  ~CpuContext();
  CpuContext(const CpuContext&) = delete;
  CpuContext& operator=(const CpuContext&) = delete;

  int threads() const { return threads_; }

  // Runs fn(begin, end) over [0, n) in ranges of `grain` items (the last may be shorter) on up to threads()
  // threads, the calling one included, and blocks until all are done. fn must not throw.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

  // Like ParallelFor, with OpenBLAS limited to one thread inside fn, so each range may call BLAS itself
  // (attention: many small GEMMs run side by side instead of each one being split across threads).
  void ParallelForSerialBlas(int64_t n, int64_t grain,
                             const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  int threads_;
  std::unique_ptr<ThreadPool> pool_;  // null when threads_ == 1
};

}  // namespace llmc
