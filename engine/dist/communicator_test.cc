#include "engine/dist/communicator.h"

#include <gtest/gtest.h>

#include <vector>

namespace llmc {
namespace {

TEST(SingleRankTest, IsRankZeroOfOne) {
  SingleRank comm;
  const Communicator& c = comm;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
}

// With one rank, the sum, the max and the broadcast of a buffer are the buffer itself.
TEST(SingleRankTest, CollectivesLeaveTheDataAsItIs) {
  SingleRank comm;
  Communicator& c = comm;
  std::vector<float> f = {1.5f, -2.0f, 0.0f, 3.25f};
  std::vector<double> d = {1e300, -0.5, 7.0};
  const std::vector<float> f0 = f;
  const std::vector<double> d0 = d;
  ASSERT_TRUE(c.AllReduceSum(absl::MakeSpan(f)).ok());
  EXPECT_EQ(f, f0);
  ASSERT_TRUE(c.AllReduceSum(absl::MakeSpan(d)).ok());
  EXPECT_EQ(d, d0);
  ASSERT_TRUE(c.AllReduceMax(absl::MakeSpan(f)).ok());
  EXPECT_EQ(f, f0);
  ASSERT_TRUE(c.Broadcast(absl::MakeSpan(f), 0).ok());
  EXPECT_EQ(f, f0);
  ASSERT_TRUE(c.AllReduceSum(absl::Span<float>()).ok());
}

}  // namespace
}  // namespace llmc
