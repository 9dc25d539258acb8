// Gloo ranks as threads of one process (memory store) and as separate processes (directory store): the
// collectives' results, their determinism, and what a rank that dies does to the others.
#include "engine/dist/gloo_communicator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/temp_dir.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;

// Runs body(rank, comm) on `size` threads, each with its own communicator.
void RunRanks(int size, const std::function<void(int, Communicator&)>& body, absl::Duration timeout = absl::Seconds(20)) {
  auto store = NewMemoryStore();
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      GlooOptions o;
      o.rank = r;
      o.size = size;
      o.timeout = timeout;
      auto comm = GlooCommunicator::Create(o, store.get());
      ASSERT_TRUE(comm.ok()) << comm.status();
      body(r, **comm);
    });
  }
  for (auto& t : threads) t.join();
}

// Rank r's value of element i.
float Value(int r, size_t i) { return static_cast<float>((r + 1) * 0.37 + (i % 97) * 1.0e-3 - (i % 5)); }

TEST(GlooCommunicatorTest, AllReduceAndBroadcastOnFourRanks) {
  constexpr int kRanks = 4;
  constexpr size_t kN = 100003;  // not a multiple of anything Gloo chunks by
  std::vector<std::vector<float>> sums(kRanks), maxes(kRanks), bcast(kRanks);
  std::vector<std::vector<double>> dsums(kRanks);
  RunRanks(kRanks, [&](int r, Communicator& c) {
    EXPECT_EQ(c.rank(), r);
    EXPECT_EQ(c.size(), kRanks);
    std::vector<float> s(kN), m(kN), b(kN);
    std::vector<double> d(kN);
    for (size_t i = 0; i < kN; ++i) {
      s[i] = m[i] = Value(r, i);
      d[i] = 1e-8 * r + i;
      b[i] = r == 2 ? static_cast<float>(i) * 0.5f : -1.0f;
    }
    ASSERT_TRUE(c.AllReduceSum(absl::MakeSpan(s)).ok());
    ASSERT_TRUE(c.AllReduceMax(absl::MakeSpan(m)).ok());
    ASSERT_TRUE(c.AllReduceSum(absl::MakeSpan(d)).ok());
    ASSERT_TRUE(c.Broadcast(absl::MakeSpan(b), /*root=*/2).ok());
    sums[r] = s;
    maxes[r] = m;
    dsums[r] = d;
    bcast[r] = b;
  });
  for (size_t i = 0; i < kN; i += 997) {
    double expect = 0;
    float mx = Value(0, i);
    for (int r = 0; r < kRanks; ++r) {
      expect += Value(r, i);
      mx = std::max(mx, Value(r, i));
    }
    EXPECT_NEAR(sums[0][i], expect, 1e-5 * (1 + std::abs(expect))) << i;
    EXPECT_EQ(maxes[0][i], mx) << i;
    EXPECT_NEAR(dsums[0][i], 4.0 * i + 6e-8, 1e-9 * (1 + i)) << i;
    EXPECT_EQ(bcast[0][i], static_cast<float>(i) * 0.5f) << i;
  }
  // Every rank ends with the same bits.
  for (int r = 1; r < kRanks; ++r) {
    EXPECT_EQ(0, std::memcmp(sums[r].data(), sums[0].data(), kN * sizeof(float))) << "rank " << r;
    EXPECT_EQ(maxes[r], maxes[0]);
    EXPECT_EQ(0, std::memcmp(dsums[r].data(), dsums[0].data(), kN * sizeof(double))) << "rank " << r;
    EXPECT_EQ(bcast[r], bcast[0]);
  }
}

// The same ranks and sizes give the same bits run after run (the reduction order is fixed).
TEST(GlooCommunicatorTest, RepeatRunsAreBitIdentical) {
  constexpr int kRanks = 3;
  constexpr size_t kN = 50000;
  std::vector<float> first, second;
  for (auto* out : {&first, &second}) {
    RunRanks(kRanks, [&](int r, Communicator& c) {
      std::vector<float> s(kN);
      for (size_t i = 0; i < kN; ++i) s[i] = Value(r, i) * 1e-3f + 1e3f * (i % 3);
      ASSERT_TRUE(c.AllReduceSum(absl::MakeSpan(s)).ok());
      if (r == 0) *out = s;
    });
  }
  ASSERT_EQ(first.size(), kN);
  EXPECT_EQ(0, std::memcmp(first.data(), second.data(), kN * sizeof(float)));
}

TEST(GlooCommunicatorTest, RefusesBadRanksAndRoots) {
  auto store = NewMemoryStore();
  GlooOptions o;
  o.rank = 2;
  o.size = 2;
  EXPECT_EQ(GlooCommunicator::Create(o, store.get()).status().code(), absl::StatusCode::kInvalidArgument);
  o.rank = 0;
  o.size = 1;
  auto one = GlooCommunicator::Create(o, store.get());
  ASSERT_TRUE(one.ok()) << one.status();
  std::vector<float> v = {1, 2};
  EXPECT_TRUE((*one)->AllReduceSum(absl::MakeSpan(v)).ok());
  EXPECT_EQ(v, (std::vector<float>{1, 2}));
  EXPECT_EQ((*one)->Broadcast(absl::MakeSpan(v), 1).code(), absl::StatusCode::kInvalidArgument);
}

// A rank that never shows up: the others fail to connect within the timeout, naming the cause.
TEST(GlooCommunicatorTest, AMissingRankFailsTheRendezvousInTime) {
  auto store = NewMemoryStore();
  GlooOptions o;
  o.rank = 0;
  o.size = 2;
  o.timeout = absl::Milliseconds(800);
  const auto t0 = std::chrono::steady_clock::now();
  auto c = GlooCommunicator::Create(o, store.get());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("rank 0 of 2"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

// Ranks as processes through a directory (as `llmc compress --ranks N` runs them). One rank is killed with
// SIGKILL before a collective: the others end it with ABORTED within the timeout, and stay unusable.
TEST(GlooCommunicatorTest, AKilledRankEndsTheCollectiveOnTheOthers) {
  llmc::testing::TempDir tmp;
  constexpr int kRanks = 3;
  std::vector<pid_t> pids;
  for (int r = 0; r < kRanks; ++r) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: exit codes say what happened (gtest assertions do not cross fork). SIGPIPE ignored, as llmc's
      // binaries do (common/signals.cc): a write to the killed rank's socket is an error, not the end.
      signal(SIGPIPE, SIG_IGN);
      auto store = NewDirectoryStore(tmp.path() + "/rdv");
      if (!store.ok()) _exit(10);
      GlooOptions o;
      o.rank = r;
      o.size = kRanks;
      o.timeout = absl::Seconds(5);
      auto comm = GlooCommunicator::Create(o, store->get());
      if (!comm.ok()) _exit(11);
      std::vector<float> v(1000, 1.0f);
      if (!(*comm)->AllReduceSum(absl::MakeSpan(v)).ok() || v[0] != kRanks) _exit(12);
      if (r == 1) {
        raise(SIGKILL);  // dies between two collectives, as a worker killed mid-job does
      }
      const auto t0 = std::chrono::steady_clock::now();
      absl::Status s = (*comm)->AllReduceSum(absl::MakeSpan(v));
      const auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s.ok()) _exit(13);
      if (s.code() != absl::StatusCode::kAborted) _exit(14);
      if (secs > 8) _exit(15);
      if ((*comm)->Broadcast(absl::MakeSpan(v), 0).code() != absl::StatusCode::kAborted) _exit(16);
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (int r = 0; r < kRanks; ++r) {
    int status = 0;
    ASSERT_EQ(waitpid(pids[r], &status, 0), pids[r]);
    if (r == 1) {
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "rank 1 status " << status;
    } else {
      EXPECT_TRUE(WIFEXITED(status)) << "rank " << r;
      EXPECT_EQ(WEXITSTATUS(status), 0) << "rank " << r << " (10-16: see the child's checks)";
    }
  }
}

// A rank that is alive but stops answering (a hung worker): the collective ends at the deadline, not never.
TEST(GlooCommunicatorTest, ASilentRankEndsTheCollectiveAtTheDeadline) {
  std::atomic<bool> done{false};
  std::chrono::duration<double> waited{0};
  absl::Status status;
  RunRanks(
      2,
      [&](int r, Communicator& c) {
        std::vector<float> v(64, 1.0f);
        if (r == 0) {
          const auto t0 = std::chrono::steady_clock::now();
          status = c.AllReduceSum(absl::MakeSpan(v));
          waited = std::chrono::steady_clock::now() - t0;
          done = true;
        } else {
          while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // never joins the collective
        }
      },
      /*timeout=*/absl::Seconds(1));
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_GE(waited.count(), 0.9);
  EXPECT_LT(waited.count(), 10.0);
}

TEST(RendezvousTest, DirectoryStoreWaitsForAKeyAndRefusesPathsAsKeys) {
  llmc::testing::TempDir tmp;
  auto store = NewDirectoryStore(tmp.path() + "/s");
  ASSERT_TRUE(store.ok()) << store.status();
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE((*store)->Set("job1.rank0", std::string("a\0b", 3)).ok());
  });
  auto v = (*store)->Get("job1.rank0", absl::Seconds(5));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, std::string("a\0b", 3));
  EXPECT_EQ((*store)->Get("never", absl::Milliseconds(50)).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ((*store)->Set("../escape", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->Set("a/b", "x").code(), absl::StatusCode::kInvalidArgument);
  auto mem = NewMemoryStore();
  EXPECT_EQ(mem->Get("k", absl::Milliseconds(20)).status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(mem->Set("k", "v").ok());
  EXPECT_EQ(*mem->Get("k", absl::Milliseconds(20)), "v");
}

}  // namespace
}  // namespace llmc
