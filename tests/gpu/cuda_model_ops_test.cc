// CUDA decoder ops against the CPU reference (engine/model/cpu_ops.h). Label `gpu`: skips visibly without a
// device. Tolerances: RmsNorm 1e-6 relative (same double reduction, one rounding order apart); SwiGlu 2e-6
// relative (CUDA expf and the CPU's FastExp differ by a few ulp).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "engine/backend/cuda/model_kernels.h"
#include "engine/backend/cuda/rtn_kernels.h"
#include "engine/model/cpu_context.h"
#include "engine/model/cpu_ops.h"
#include "engine/tensor/dtype.h"

namespace llmc {
namespace {

class CudaModelOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda::DeviceCount(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  }
  std::vector<float> Random(int64_t n, float scale, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  }
};

TEST_F(CudaModelOpsTest, RmsNormMatchesCpu) {
  CpuContext ctx(2);
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{17, 384}, {5, 1025}, {64, 4096}, {3, 8193}, {1, 1}}) {
    auto x = Random(rows * dim, 1.5f, 1);
    auto w = Random(dim, 1.0f, 2);
    std::vector<float> cpu(rows * dim), gpu(rows * dim);
    RmsNorm(x.data(), rows, dim, w.data(), 1e-5f, cpu.data(), &ctx);
    ASSERT_EQ(cuda::RmsNormHost(x.data(), rows, dim, w.data(), 1e-5f, gpu.data()), "");
    for (int64_t i = 0; i < rows * dim; ++i)
      ASSERT_NEAR(gpu[i], cpu[i], 1e-6f * std::max(1.0f, std::fabs(cpu[i]))) << rows << "x" << dim << " at " << i;
  }
}

TEST_F(CudaModelOpsTest, SwiGluMatchesCpu) {
  CpuContext ctx(2);
  for (int64_t n : {1, 17, 1025, 14336 * 3 + 5}) {
    auto g = Random(n, 4.0f, 3);
    auto u = Random(n, 2.0f, 4);
    g[0] = 80.0f;  // saturation edges
    if (n > 1) g[1] = -80.0f;
    std::vector<float> cpu(n), gpu(n);
    SwiGlu(g.data(), u.data(), n, cpu.data(), &ctx);
    ASSERT_EQ(cuda::SwiGluHost(g.data(), u.data(), n, gpu.data()), "");
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(gpu[i], cpu[i], 2e-6f * std::max(1.0f, std::fabs(cpu[i]))) << "n=" << n << " at " << i;
  }
}

// The device embedding: bf16, f16 and f32 tables, with and without a scale, bit-identical to the host conversion
// and fp32 multiply CausalLm::Embed does (repeated ids, the first and last rows, a row count past one grid block).
TEST_F(CudaModelOpsTest, EmbedRowsMatchesTheHostBitForBit) {
  const int64_t rows = 300, cols = 77;
  const auto values = Random(rows * cols, 0.7f, 11);
  std::vector<int32_t> ids;
  for (int i = 0; i < 513; ++i) ids.push_back((i * 37) % rows);
  ids[0] = 0;
  ids[1] = rows - 1;
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
    std::vector<uint8_t> table(rows * cols * DTypeSize(dt));
    for (int64_t i = 0; i < rows * cols; ++i) {
      if (dt == DType::kBF16) reinterpret_cast<uint16_t*>(table.data())[i] = FloatToBF16(values[i]);
      else if (dt == DType::kF16) reinterpret_cast<uint16_t*>(table.data())[i] = FloatToF16(values[i]);
      else reinterpret_cast<float*>(table.data())[i] = values[i];
    }
    const cuda::TableDType td = dt == DType::kBF16 ? cuda::TableDType::kBF16
                                : dt == DType::kF16 ? cuda::TableDType::kF16
                                                    : cuda::TableDType::kF32;
    for (float scale : {1.0f, std::sqrt(3072.0f), 0.3f}) {
      std::vector<float> gpu(ids.size() * cols);
      ASSERT_EQ(cuda::EmbedRowsHost(table.data(), td, rows, cols, ids.data(), static_cast<int64_t>(ids.size()), scale,
                                    gpu.data()),
                "");
      for (size_t i = 0; i < ids.size(); ++i)
        for (int64_t c = 0; c < cols; ++c) {
          float want = LoadAsFloat(table.data(), dt, static_cast<size_t>(ids[i] * cols + c));
          if (scale != 1.0f) want *= scale;
          ASSERT_EQ(std::bit_cast<uint32_t>(gpu[i * cols + c]), std::bit_cast<uint32_t>(want))
              << DTypeName(dt) << " scale " << scale << " at " << i << "," << c;
        }
    }
  }
}

// The propagation's non-finite check: NaN, +Inf and -Inf anywhere (first, last, past the grid's first stride)
// set the flag; the largest finite values, zeros and denormals do not.
TEST_F(CudaModelOpsTest, FlagNonFiniteFindsNanAndInfOnly) {
  for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{1000}, int64_t{4096 * 256 + 77}}) {
    std::vector<float> x = Random(n, 1.0f, 3);
    x[0] = std::numeric_limits<float>::max();
    x[n - 1] = -std::numeric_limits<float>::max();
    if (n > 2) x[1] = std::numeric_limits<float>::denorm_min();
    bool any = true;
    ASSERT_EQ(cuda::AnyNonFiniteHost(x.data(), n, &any), "");
    EXPECT_FALSE(any) << "n=" << n;
    for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()})
      for (int64_t at : {int64_t{0}, n - 1, n / 2}) {
        std::vector<float> y = x;
        y[at] = bad;
        any = false;
        ASSERT_EQ(cuda::AnyNonFiniteHost(y.data(), n, &any), "");
        EXPECT_TRUE(any) << "n=" << n << " at " << at << " value " << bad;
      }
  }
  bool any = true;
  ASSERT_EQ(cuda::AnyNonFiniteHost(nullptr, 0, &any), "");
  EXPECT_FALSE(any);
}

}  // namespace
}  // namespace llmc
