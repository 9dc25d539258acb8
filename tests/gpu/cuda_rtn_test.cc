// CUDA RTN kernel against the CPU reference (bit-exact). Label `gpu`: skips visibly without a device.
#include <gtest/gtest.h>

#include <random>

#include "engine/backend/cuda/rtn_kernels.h"
#include "engine/quant/weight_quantizer.h"

namespace llmc {
namespace {

class CudaRtnTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int, bool>> {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda::DeviceCount(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

TEST_P(CudaRtnTest, MatchesCpuReferenceBitForBit) {
  auto [rows, cols, group, bits, sym] = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(rows * 31 + cols + bits));
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<uint16_t> w(rows * cols);
  for (auto& x : w) x = FloatToBF16(nd(rng));
  w[5] = FloatToBF16(0.0f);
  QuantArgs a;
  a.num_bits = bits;
  a.symmetric = sym;
  a.group_size = group == cols ? std::nullopt : std::optional<int>(static_cast<int>(group));
  a.strategy = group == cols ? Strategy::kChannel : Strategy::kGroup;
  if (!sym) a.zp_dtype = "torch.int8";
  auto cpu = QuantizeWeight({"w", w.data(), DType::kBF16, rows, cols}, a, "int-quantized");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  std::vector<int8_t> q(rows * cols), zp(rows * (cols / group));
  std::vector<uint16_t> s(rows * (cols / group));
  float ms = 0;
  std::string err = cuda::QuantizeIntGroupBF16(w.data(), rows, cols, group, bits, sym, q.data(), s.data(), zp.data(), &ms);
  ASSERT_EQ(err, "");
  EXPECT_EQ(0, std::memcmp(q.data(), (*cpu)[0].data(), q.size())) << "quantized values differ";
  EXPECT_EQ(0, std::memcmp(s.data(), (*cpu)[1].data(), s.size() * 2)) << "scales differ";
  if (!sym) {
    EXPECT_EQ(0, std::memcmp(zp.data(), (*cpu)[2].data(), zp.size())) << "zero points differ";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaRtnTest,
                         ::testing::Values(std::make_tuple(17, 128, 128, 4, true), std::make_tuple(1025, 256, 128, 4, false),
                                           std::make_tuple(64, 8192, 128, 8, true), std::make_tuple(33, 384, 384, 8, true),
                                           std::make_tuple(4096, 4096, 128, 4, true)));

TEST(CudaDeviceTest, ReportsDevice) {
  std::string why;
  int n = cuda::DeviceCount(&why);
  if (n == 0) GTEST_SKIP() << "no CUDA device: " << why;
  EXPECT_NE(cuda::DeviceName(), "unknown");
  std::printf("device: %s\n", cuda::DeviceName().c_str());
}

}  // namespace
}  // namespace llmc
