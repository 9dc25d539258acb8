#include "common/parallel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace llmc {
namespace {

TEST(ParallelForTest, RunsEveryIndexOnceOnSeveralThreads) {
  std::mutex mu;
  std::multiset<int64_t> seen;
  std::set<std::thread::id> threads;
  absl::Status s = ParallelFor(1000, 4, [&](int64_t i) {
    std::lock_guard<std::mutex> l(mu);
    seen.insert(i);
    threads.insert(std::this_thread::get_id());
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(seen.size(), 1000u);
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(seen.count(i), 1u) << i;
  EXPECT_LE(threads.size(), 4u);
}

TEST(ParallelForTest, FirstErrorWinsAndStopsNewWork) {
  std::atomic<int64_t> calls{0};
  // Every other index takes a millisecond, so the two threads that do not hold index 5 would need seconds to run
  // out the range: the failing thread records its error long before, however the machine schedules it.
  absl::Status s = ParallelFor(10000, 3, [&](int64_t i) -> absl::Status {
    ++calls;
    if (i == 5) return absl::DataLossError("index 5");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "index 5");
  EXPECT_LT(calls.load(), 10000);
}

TEST(ParallelForTest, OneThreadRunsInOrderOnTheCaller) {
  std::vector<int64_t> order;
  const auto caller = std::this_thread::get_id();
  absl::Status s = ParallelFor(5, 1, [&](int64_t i) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    order.push_back(i);
    return i == 3 ? absl::InternalError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(ParallelForTest, NothingToDo) {
  EXPECT_TRUE(ParallelFor(0, 8, [](int64_t) { return absl::InternalError("never"); }).ok());
}

// Sizes around the 8 MiB pieces (one piece, a ragged last piece, more pieces than threads) and an empty copy:
// every byte lands where memcpy would put it, and nothing beyond `bytes` is written.
TEST(ParallelCopyTest, CopiesEveryByteOfRaggedSizes) {
  constexpr size_t kMiB = size_t{1} << 20;
  for (size_t bytes : {size_t{0}, size_t{1}, 8 * kMiB - 3, 8 * kMiB, 8 * kMiB + 1, 41 * kMiB + 7}) {
    for (int threads : {0, 1, 3}) {
      std::vector<unsigned char> src(bytes), dst(bytes + 16, 0xEE);
      for (size_t i = 0; i < bytes; ++i) src[i] = static_cast<unsigned char>((i * 131 + i / 4099) & 0xFF);
      ParallelCopy(dst.data(), src.data(), bytes, threads);
      ASSERT_TRUE(std::equal(src.begin(), src.end(), dst.begin())) << bytes << " bytes, " << threads << " threads";
      for (size_t i = bytes; i < dst.size(); ++i) ASSERT_EQ(dst[i], 0xEE) << "wrote past the end at " << i;
    }
  }
}

}  // namespace
}  // namespace llmc
