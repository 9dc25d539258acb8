#include "engine/model/cpu_context.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <thread>

namespace llmc {

CpuContext::CpuContext(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads_ = threads;
  if (threads_ > 1) pool_ = std::make_unique<ThreadPool>(threads_);
  openblas_set_num_threads(threads_);
}

CpuContext::~CpuContext() = default;

void CpuContext::ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = (n + grain - 1) / grain;
  int64_t workers = std::min<int64_t>(threads_, chunks);
  if (workers <= 1 || pool_ == nullptr) {
    fn(0, n);
    return;
  }
  // Workers take `grain`-sized ranges from a shared counter (balances uneven items such as causal attention
  // rows); the calling thread is one of them.
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (;;) {
      int64_t begin = next.fetch_add(grain);
      if (begin >= n) return;
      fn(begin, std::min(n, begin + grain));
    }
  };
  for (int64_t w = 1; w < workers; ++w) pool_->Submit(work);
  work();
  pool_->Wait();
}

void CpuContext::ParallelForSerialBlas(int64_t n, int64_t grain,
                                       const std::function<void(int64_t, int64_t)>& fn) {
  openblas_set_num_threads(1);
  ParallelFor(n, grain, fn);
  openblas_set_num_threads(threads_);
}

}  // namespace llmc
