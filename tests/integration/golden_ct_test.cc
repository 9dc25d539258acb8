// llmc's output must equal the compressed-tensors library's, tensor for tensor and bit for bit, and carry the
// same quantization_config (../shared/golden/ct, made by compressed-tensors 0.18.0).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/format/recipe.h"
#include "engine/io/model_dir.h"
#include "engine/pipeline/compress_job.h"
#include "tests/support/test_paths.h"

namespace llmc {
namespace {

using testing::Shared;
using testing::TempDir;

struct GoldenCase {
  std::string scheme;
  std::string orig;
  std::string ref;
};

class GoldenCtTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenCtTest, SameTensorsAndConfigAsCompressedTensors) {
  const GoldenCase& c = GetParam();
  if (!testing::HaveShared("golden/ct/" + c.ref)) GTEST_SKIP() << "no " << Shared("golden/ct/" + c.ref);
  TempDir tmp;
  auto cfg = PresetConfig(c.scheme, {"Linear"}, {"lm_head"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  CompressOptions opt;
  opt.model_path = Shared("golden/ct/" + c.orig);
  opt.output_path = tmp / "out";
  auto summary = RunCompress(opt, *cfg);
  ASSERT_TRUE(summary.ok()) << summary.status();

  auto ours = ModelDir::Open(tmp / "out");
  auto ref = ModelDir::Open(Shared("golden/ct/" + c.ref));
  ASSERT_TRUE(ours.ok()) << ours.status();
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ((*ours)->tensors().size(), (*ref)->tensors().size());
  int compared = 0;
  for (const auto& rt : (*ref)->tensors()) {
    const ModelTensor* ot = (*ours)->Find(rt.info->name);
    ASSERT_NE(ot, nullptr) << "missing tensor " << rt.info->name;
    EXPECT_EQ(ot->info->dtype, rt.info->dtype) << rt.info->name;
    EXPECT_EQ(ot->info->shape, rt.info->shape) << rt.info->name;
    auto a = ot->file->Data(*ot->info);
    auto b = rt.file->Data(*rt.info);
    ASSERT_EQ(a.size(), b.size()) << rt.info->name;
    size_t diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff += a[i] != b[i];
    EXPECT_EQ(diff, 0u) << rt.info->name << ": " << diff << " of " << a.size() << " bytes differ";
    ++compared;
  }
  EXPECT_GT(compared, 10);
  EXPECT_EQ((*ours)->config_json()["quantization_config"], (*ref)->config_json()["quantization_config"]);
  // Everything else in config.json is carried over unchanged.
  auto oc = (*ours)->config_json();
  auto rc = (*ref)->config_json();
  oc.erase("quantization_config");
  rc.erase("quantization_config");
  EXPECT_EQ(oc, rc);
}

INSTANTIATE_TEST_SUITE_P(
    AllSchemes, GoldenCtTest,
    ::testing::Values(GoldenCase{"W4A16", "orig", "ref_W4A16"}, GoldenCase{"W4A16_ASYM", "orig", "ref_W4A16_ASYM"},
                      GoldenCase{"W8A16", "orig", "ref_W8A16"}, GoldenCase{"W8A8", "orig", "ref_W8A8"},
                      GoldenCase{"FP8_DYNAMIC", "orig", "ref_FP8_DYNAMIC"},
                      GoldenCase{"FP8_BLOCK", "orig", "ref_FP8_BLOCK"},
                      GoldenCase{"NVFP4A16", "orig", "ref_NVFP4A16"},
                      GoldenCase{"MXFP4A16", "orig", "ref_MXFP4A16"},
                      GoldenCase{"W4A16", "orig_tied_sharded", "ref_tied_W4A16"},
                      GoldenCase{"NVFP4A16", "orig_tied_sharded", "ref_tied_NVFP4A16"}),
    [](const ::testing::TestParamInfo<GoldenCase>& info) {
      return info.param.scheme + (info.param.orig == "orig" ? "" : "_tied_sharded");
    });

}  // namespace
}  // namespace llmc
