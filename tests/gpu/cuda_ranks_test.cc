// `llmc compress --device cuda` with its calibration shared by ranks, on the GPU machine's one GPU: one rank over
// NCCL through the whole distributed path (it must give exactly the single-process bytes), and two ranks over
// Gloo sharing the GPU (device Hessians summed through the host; within the bound of docs/distributed.md).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/checkpoint_compare.h"

namespace llmc {
namespace {

// `llmc` beside this test binary (the build's bin/, or a bundle carried to the GPU machine).
const std::string kLlmc = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "llmc").string();

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::vector<std::string> Gptq(const std::string& out, std::vector<std::string> extra) {
  std::vector<std::string> a = {kLlmc, "compress", testing::Shared("models/llmc-fixture-llama"), out, "--scheme",
                                "W4A16", "--algorithm", "gptq", "--dataset", testing::Shared("data/calibration.txt"),
                                "--num-samples", "32", "--seq-len", "256", "--device", "cuda", "--no-progress", "--json"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(CudaRanksTest, NcclOneRankAndGlooTwoRanksOnTheGpu) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "../shared/models is not here";
  testing::TempDir tmp;
  std::string out;
  ASSERT_EQ(testing::RunCapture(Gptq(tmp / "one", {}), &out), 0) << out;
  ASSERT_EQ(testing::RunCapture(Gptq(tmp / "nccl1", {"--ranks", "1", "--comm", "nccl"}), &out), 0) << out;
  testing::ExpectSameFiles(tmp / "one", tmp / "nccl1");
  ASSERT_EQ(testing::RunCapture(Gptq(tmp / "gloo2", {"--ranks", "2", "--comm", "gloo"}), &out), 0) << out;
  const double same = testing::SameCodes(tmp / "one", tmp / "gloo2");
  const double p1 = testing::Perplexity(kLlmc, tmp / "one", "cuda");
  const double p2 = testing::Perplexity(kLlmc, tmp / "gloo2", "cuda");
  std::printf("cuda: 2 gloo ranks: %.4f of the codes identical, perplexity %.4f vs %.4f\n", same, p2, p1);
  EXPECT_GE(same, 0.90);
  EXPECT_LT(std::fabs(p2 - p1) / p1, 0.01);
}

}  // namespace
}  // namespace llmc
