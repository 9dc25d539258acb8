// NcclCommunicator on the GPUs of this machine: one rank (every GPU machine), and one rank per GPU as threads
// when there are several (the multi-GPU runs of the speed-up and fault measurements use processes).
#include "engine/dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace llmc {
namespace {

int Devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

#define SKIP_WITHOUT_GPUS(n) \
  if (Devices() < (n)) GTEST_SKIP() << "needs " << (n) << " CUDA device(s), found " << Devices()

// Copies `host` to a fresh device buffer on the current device; returns it (freed by the caller).
template <typename T>
T* ToDevice(const std::vector<T>& host) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}
template <typename T>
std::vector<T> ToHost(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(NcclCommunicatorTest, OneRankLeavesTheDataAsItIs) {
  SKIP_WITHOUT_GPUS(1);
  auto store = NewMemoryStore();
  NcclOptions o;
  auto c = NcclCommunicator::Create(o, store.get());
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<float> h = {1.5f, -2.0f, 3.25f};
  std::vector<double> hd = {1e300, -0.5};
  float* d = ToDevice(h);
  double* dd = ToDevice(hd);
  ASSERT_TRUE((*c)->AllReduceSum(absl::MakeSpan(d, h.size())).ok());
  ASSERT_TRUE((*c)->AllReduceMax(absl::MakeSpan(d, h.size())).ok());
  ASSERT_TRUE((*c)->AllReduceSum(absl::MakeSpan(dd, hd.size())).ok());
  ASSERT_TRUE((*c)->Broadcast(absl::MakeSpan(d, h.size()), 0).ok());
  EXPECT_EQ(ToHost(d, h.size()), h);
  EXPECT_EQ(ToHost(dd, hd.size()), hd);
  EXPECT_EQ((*c)->Broadcast(absl::MakeSpan(d, h.size()), 1).code(), absl::StatusCode::kInvalidArgument);
  cudaFree(d);
  cudaFree(dd);
}

// Host buffers go through the device; bytes broadcast as they are.
TEST(NcclCommunicatorTest, HostBuffersAndBytesWithOneRank) {
  SKIP_WITHOUT_GPUS(1);
  auto store = NewMemoryStore();
  NcclOptions o;
  o.prefix = "host";
  auto c = NcclCommunicator::Create(o, store.get());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->device_memory());
  std::vector<float> h = {1.5f, -2.0f, 3.25f};
  const std::vector<float> h0 = h;
  std::vector<double> hd = {1e300, -0.5};
  std::vector<uint8_t> b = {0, 1, 254, 255, 7};
  const std::vector<uint8_t> b0 = b;
  ASSERT_TRUE((*c)->AllReduceSum(absl::MakeSpan(h)).ok());
  ASSERT_TRUE((*c)->AllReduceMax(absl::MakeSpan(h)).ok());
  ASSERT_TRUE((*c)->AllReduceSum(absl::MakeSpan(hd)).ok());
  ASSERT_TRUE((*c)->Broadcast(absl::MakeSpan(b), 0).ok());
  EXPECT_EQ(h, h0);
  EXPECT_EQ(hd, (std::vector<double>{1e300, -0.5}));
  EXPECT_EQ(b, b0);
  std::string s = "a module's tensors";
  ASSERT_TRUE(BroadcastString(c->get(), &s, 0).ok());
  EXPECT_EQ(s, "a module's tensors");
}

TEST(NcclCommunicatorTest, OneRankPerGpuSumsAndBroadcasts) {
  SKIP_WITHOUT_GPUS(2);
  const int ranks = Devices();
  constexpr size_t kN = 1 << 20;
  auto store = NewMemoryStore();
  std::vector<std::vector<float>> sums(ranks), bcast(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(r);
      NcclOptions o;
      o.rank = r;
      o.size = ranks;
      o.device = r;
      auto c = NcclCommunicator::Create(o, store.get());
      ASSERT_TRUE(c.ok()) << c.status();
      std::vector<float> h(kN), b(kN, r == 1 ? 7.0f : 0.0f);
      for (size_t i = 0; i < kN; ++i) h[i] = static_cast<float>(r + 1) + 1e-3f * (i % 13);
      float* d = ToDevice(h);
      float* db = ToDevice(b);
      ASSERT_TRUE((*c)->AllReduceSum(absl::MakeSpan(d, kN)).ok());
      ASSERT_TRUE((*c)->Broadcast(absl::MakeSpan(db, kN), 1).ok());
      sums[r] = ToHost(d, kN);
      bcast[r] = ToHost(db, kN);
      cudaFree(d);
      cudaFree(db);
    });
  }
  for (auto& t : threads) t.join();
  const float base = ranks * (ranks + 1) / 2.0f;
  for (size_t i = 0; i < kN; i += 4099) EXPECT_NEAR(sums[0][i], base + ranks * 1e-3f * (i % 13), 1e-4f) << i;
  for (int r = 1; r < ranks; ++r) {
    EXPECT_EQ(sums[r], sums[0]) << "rank " << r;
    EXPECT_EQ(bcast[r], std::vector<float>(kN, 7.0f)) << "rank " << r;
  }
}

// A rank that never forms the communicator: the others give up within the timeout instead of blocking.
TEST(NcclCommunicatorTest, AMissingRankFailsInTime) {
  SKIP_WITHOUT_GPUS(1);
  auto store = NewMemoryStore();
  NcclOptions o;
  o.rank = 1;
  o.size = 2;
  o.timeout = absl::Seconds(2);
  auto c = NcclCommunicator::Create(o, store.get());  // rank 0 never publishes the id
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
}

}  // namespace
}  // namespace llmc
