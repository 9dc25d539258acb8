#include "server/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace llmc::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<IdleWorker> Idle(int n) {
  std::vector<IdleWorker> w;
  for (int i = 0; i < n; ++i) w.push_back({"w" + std::to_string(i), i});
  return w;
}

TEST(SchedulerTest, PriorityThenFifo) {
  auto r = Schedule({{"a", 0, 1, 1}, {"b", 5, 2, 1}, {"c", 5, 3, 1}, {"d", 0, 4, 1}}, Idle(3), 3);
  ASSERT_EQ(r.placements.size(), 3u);
  EXPECT_EQ(r.placements[0].job_id, "b");
  EXPECT_EQ(r.placements[1].job_id, "c");
  EXPECT_EQ(r.placements[2].job_id, "a");
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_EQ(r.waiting[0].job_id, "d");
}

TEST(SchedulerTest, LongestIdleWorkerFirst) {
  std::vector<IdleWorker> idle = {{"late", 50}, {"early", 10}};
  auto r = Schedule({{"a", 0, 1, 1}}, idle, 2);
  ASSERT_EQ(r.placements.size(), 1u);
  EXPECT_THAT(r.placements[0].worker_ids, ElementsAre("early"));
}

TEST(SchedulerTest, GangGetsAllWorkersWithRanks) {
  auto r = Schedule({{"big", 0, 1, 3}}, Idle(3), 3);
  ASSERT_EQ(r.placements.size(), 1u);
  EXPECT_THAT(r.placements[0].worker_ids, ElementsAre("w0", "w1", "w2"));
}

TEST(SchedulerTest, GangWaitsAndBlocksLaterJobs) {
  // "big" needs 3 but only 2 are idle now (3 live): it waits, and "small" behind it does not jump ahead.
  auto r = Schedule({{"big", 0, 1, 3}, {"small", 0, 2, 1}}, Idle(2), 3);
  EXPECT_TRUE(r.placements.empty());
  ASSERT_EQ(r.waiting.size(), 2u);
  EXPECT_THAT(r.waiting[0].reason, HasSubstr("waiting for 3 idle workers"));
  EXPECT_THAT(r.waiting[1].reason, HasSubstr("queued behind job big"));
}

TEST(SchedulerTest, RetriedGangWaitsForItsPreviousAttemptToStop) {
  // Enough idle workers, but one rank of the previous attempt still runs: the job waits and blocks the one behind.
  QueuedJob retried{"gang", 0, 1, 2};
  retried.stopping = 1;
  auto r = Schedule({retried, {"small", 0, 2, 1}}, Idle(3), 4);
  EXPECT_TRUE(r.placements.empty());
  ASSERT_EQ(r.waiting.size(), 2u);
  EXPECT_THAT(r.waiting[0].reason, HasSubstr("waiting for 1 worker of the previous attempt to stop"));
  EXPECT_THAT(r.waiting[1].reason, HasSubstr("queued behind job gang"));
  retried.stopping = 0;
  r = Schedule({retried}, Idle(3), 4);
  ASSERT_EQ(r.placements.size(), 1u);
  EXPECT_EQ(r.placements[0].worker_ids.size(), 2u);
}

TEST(SchedulerTest, ImpossibleGangIsSkippedWithReason) {
  auto r = Schedule({{"huge", 9, 1, 8}, {"small", 0, 2, 1}}, Idle(2), 2);
  ASSERT_EQ(r.placements.size(), 1u);
  EXPECT_EQ(r.placements[0].job_id, "small");
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_EQ(r.waiting[0].job_id, "huge");
  EXPECT_THAT(r.waiting[0].reason, HasSubstr("needs 8 workers; 2 registered"));
}

TEST(SchedulerTest, AGangAllowedFewerTakesTheLiveWorkers) {
  QueuedJob j{"g", 0, 1, 4};
  j.min_gpus = 2;
  // Three live workers, all idle: it runs on three.
  auto r = Schedule({j}, Idle(3), 3);
  ASSERT_EQ(r.placements.size(), 1u);
  EXPECT_EQ(r.placements[0].worker_ids.size(), 3u);
  // Three live, two idle: it waits for the third.
  r = Schedule({j}, Idle(2), 3);
  EXPECT_TRUE(r.placements.empty());
  // One live: below min_gpus, skipped with the reason.
  r = Schedule({j}, Idle(1), 1);
  EXPECT_TRUE(r.placements.empty());
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_THAT(r.waiting[0].reason, HasSubstr("needs 4 workers"));
  // Enough workers: the full gang.
  r = Schedule({j}, Idle(5), 5);
  ASSERT_EQ(r.placements.size(), 1u);
  EXPECT_EQ(r.placements[0].worker_ids.size(), 4u);
}

TEST(SchedulerTest, ZeroGpusMeansOne) {
  auto r = Schedule({{"a", 0, 1, 0}}, Idle(1), 1);
  ASSERT_EQ(r.placements.size(), 1u);
  EXPECT_EQ(r.placements[0].worker_ids.size(), 1u);
}

TEST(SchedulerTest, NoWorkers) {
  auto r = Schedule({{"a", 0, 1, 1}}, {}, 0);
  EXPECT_TRUE(r.placements.empty());
  ASSERT_EQ(r.waiting.size(), 1u);
  EXPECT_THAT(r.waiting[0].reason, HasSubstr("0 registered"));
}

}  // namespace
}  // namespace llmc::server
