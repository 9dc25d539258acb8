#include "worker/device_stats.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/temp_dir.h"

namespace llmc::worker {
namespace {

void WriteProc(const testing::TempDir& dir, const std::string& meminfo, const std::string& stat) {
  std::ofstream(dir / "meminfo") << meminfo;
  std::ofstream(dir / "stat") << stat;
}

TEST(DeviceStatsTest, CpuMemoryAndUtilizationFromProc) {
  testing::TempDir dir;
  WriteProc(dir, "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    4000000 kB\n",
            "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n");
  auto s = MakeCpuStatsSampler(dir.path());
  DeviceSample a = s->Sample();
  ASSERT_TRUE(a.valid) << a.why;
  EXPECT_EQ(a.memory_total_bytes, 16000000ull * 1024);
  EXPECT_EQ(a.memory_used_bytes, 12000000ull * 1024);  // MemTotal - MemAvailable
  EXPECT_LT(a.utilization, 0);                         // no earlier sample: not known
  // 1000 more ticks of which 600 busy (user 300 + system 300), 300 idle and 100 iowait.
  WriteProc(dir, "MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n", "cpu  400 0 400 1000 200 0 0 0 0 0\n");
  DeviceSample b = s->Sample();
  ASSERT_TRUE(b.valid);
  EXPECT_EQ(b.memory_used_bytes, 8000000ull * 1024);
  EXPECT_DOUBLE_EQ(b.utilization, 0.6);
}

TEST(DeviceStatsTest, CpuWithoutMeminfoIsInvalidAndSaysWhy) {
  testing::TempDir dir;
  WriteProc(dir, "MemTotal: 100 kB\n", "cpu  1 1 1 1 1 0 0 0\n");
  DeviceSample s = MakeCpuStatsSampler(dir.path())->Sample();
  EXPECT_FALSE(s.valid);
  EXPECT_NE(s.why.find("MemAvailable"), std::string::npos) << s.why;
}

TEST(DeviceStatsTest, TheRealHostIsSampled) {
  auto s = MakeDeviceStatsSampler("cpu");
  DeviceSample a = s->Sample();
  ASSERT_TRUE(a.valid) << a.why;
  EXPECT_GT(a.memory_total_bytes, 0u);
  EXPECT_LE(a.memory_used_bytes, a.memory_total_bytes);
}

TEST(DeviceStatsTest, NvmlRefusesAMigInstanceNamingIt) {
  DeviceSample s = MakeNvmlStatsSampler("MIG-1234")->Sample();
  EXPECT_FALSE(s.valid);
  EXPECT_FALSE(s.why.empty());  // no NVML here, or the MIG entry named
}

}  // namespace
}  // namespace llmc::worker
