#include "common/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>

namespace llmc {
namespace {

TEST(ThreadPoolTest, RunsEveryTaskAndWaits) {
  std::atomic<int> sum{0};
  ThreadPool pool(3);
  for (int i = 1; i <= 100; ++i) pool.Submit([&sum, i] { sum += i; });
  pool.Wait();
  EXPECT_EQ(sum.load(), 5050);
}

}  // namespace
}  // namespace llmc
