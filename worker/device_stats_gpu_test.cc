// The NVML sampler on a real GPU (label gpu; skipped where NVML or a GPU is missing).
#include <gtest/gtest.h>

#include <cstdlib>

#include "worker/device_stats.h"

namespace llmc::worker {
namespace {

TEST(DeviceStatsGpuTest, NvmlReportsTheGpusMemoryAndUtilization) {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  auto s = MakeNvmlStatsSampler(v ? v : "");
  DeviceSample a = s->Sample();
  if (!a.valid) GTEST_SKIP() << "no GPU to sample: " << a.why;
  EXPECT_GT(a.memory_total_bytes, 1ull << 30);
  EXPECT_GT(a.memory_used_bytes, 0u);
  EXPECT_LE(a.memory_used_bytes, a.memory_total_bytes);
  EXPECT_GE(a.utilization, 0.0);
  EXPECT_LE(a.utilization, 1.0);
  EXPECT_TRUE(s->Sample().valid);  // the handle is kept
}

}  // namespace
}  // namespace llmc::worker
