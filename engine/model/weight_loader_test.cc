// Loading dense and compressed-tensors weights, against the compressed-tensors library's own checkpoints in
// ../shared/golden/ct (a small random Llama quantized by compressed-tensors 0.18).
#include "tests/support/temp_dir.h"
#include "engine/model/weight_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/model/causal_lm.h"
#include "engine/model/model_test_util.h"
#include "engine/quant/weight_quantizer.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing_util::ReadJson;
using testing_util::SharedDir;

std::string GoldenDir() {
  std::string shared = SharedDir();
  std::error_code ec;
  if (shared.empty() || !fs::is_directory(shared + "/golden/ct/orig", ec)) return "";
  return shared + "/golden/ct";
}

#define SKIP_WITHOUT_GOLDEN(dir) \
  std::string dir = GoldenDir(); \
  if (dir.empty()) GTEST_SKIP() << "../shared/golden/ct not found (set LLMC_SHARED_DIR to run)"

// The Linear modules of the golden model (hidden 256, intermediate 512, 2 layers, 4 heads of 64, 2 kv heads).
struct Module {
  std::string name;
  int64_t out, in;
};
std::vector<Module> GoldenModules() {
  std::vector<Module> m;
  for (int l = 0; l < 2; ++l) {
    std::string p = absl::StrCat("model.layers.", l, ".");
    m.push_back({p + "self_attn.q_proj", 256, 256});
    m.push_back({p + "self_attn.k_proj", 128, 256});
    m.push_back({p + "self_attn.v_proj", 128, 256});
    m.push_back({p + "self_attn.o_proj", 256, 256});
    m.push_back({p + "mlp.gate_proj", 512, 256});
    m.push_back({p + "mlp.up_proj", 512, 256});
    m.push_back({p + "mlp.down_proj", 256, 512});
  }
  return m;
}

struct Golden {
  const char* ref;
  const char* format;
  double max_rel_error;  // ||dequant - orig|| / ||orig|| bound for the format
};

TEST(WeightLoaderTest, DequantizesEveryFormatTheEngineWrites) {
  SKIP_WITHOUT_GOLDEN(golden);
  auto orig_dir = ModelDir::Open(golden + "/orig");
  ASSERT_TRUE(orig_dir.ok()) << orig_dir.status();
  auto orig = WeightLoader::Create(orig_dir->get());
  ASSERT_TRUE(orig.ok()) << orig.status();
  EXPECT_FALSE((*orig)->compressed());
  const Golden cases[] = {
      {"ref_W4A16", "pack-quantized", 0.15},          {"ref_W4A16_ASYM", "pack-quantized", 0.15},
      {"ref_W8A16", "pack-quantized", 0.01},          {"ref_W8A8", "int-quantized", 0.01},
      {"ref_FP8_DYNAMIC", "float-quantized", 0.05},   {"ref_FP8_BLOCK", "float-quantized", 0.05},
      {"ref_NVFP4A16", "nvfp4-pack-quantized", 0.15}, {"ref_MXFP4A16", "mxfp4-pack-quantized", 0.2},
  };
  for (const Golden& c : cases) {
    SCOPED_TRACE(c.ref);
    auto dir = ModelDir::Open(golden + "/" + c.ref);
    ASSERT_TRUE(dir.ok()) << dir.status();
    auto loader = WeightLoader::Create(dir->get());
    ASSERT_TRUE(loader.ok()) << loader.status();
    EXPECT_TRUE((*loader)->compressed());
    EXPECT_EQ((*loader)->StorageOf("lm_head"), "dense");  // ignored by the recipe
    // The library's own quantization arguments, to re-quantize the original weights with llmc.
    auto scheme = QuantScheme::FromJson(
        (*dir)->config_json()["quantization_config"]["config_groups"]["group_0"], "group_0");
    ASSERT_TRUE(scheme.ok()) << scheme.status();
    for (const Module& m : GoldenModules()) {
      SCOPED_TRACE(m.name);
      EXPECT_EQ((*loader)->StorageOf(m.name), c.format);
      auto w = (*loader)->LoadLinearWeight(m.name, m.out, m.in);
      ASSERT_TRUE(w.ok()) << w.status();
      auto o = (*orig)->LoadDense(m.name + ".weight", {m.out, m.in});
      ASSERT_TRUE(o.ok()) << o.status();
      double err = 0, norm = 0;
      for (size_t i = 0; i < o->size(); ++i) {
        err += std::pow(double((*w)[i]) - (*o)[i], 2);
        norm += std::pow(double((*o)[i]), 2);
      }
      const double rel = std::sqrt(err / norm);
      EXPECT_LT(rel, c.max_rel_error);
      EXPECT_GT(rel, 0.0);  // really the quantized values, not a dense copy
      // Bit for bit what llmc's quantizer (itself bit-exact with the library) dequantizes to, except NVFP4
      // whose library output shares one global scale across fused q/k/v and gate/up.
      if (std::string(c.format) == "nvfp4-pack-quantized") continue;
      const ModelTensor* t = (*orig_dir)->Find(m.name + ".weight");
      WeightView view{m.name, t->file->Data(*t->info).data(), DType::kBF16, m.out, m.in};
      auto q = QuantizeWeight(view, *scheme->weights, c.format);
      ASSERT_TRUE(q.ok()) << q.status();
      auto dq = DequantizeWeight(m.out, m.in, DType::kBF16, *scheme->weights, c.format, *q);
      ASSERT_TRUE(dq.ok()) << dq.status();
      EXPECT_EQ(*dq, *w);
    }
  }
}

TEST(WeightLoaderTest, DenseLoadChecksNameShapeAndDtype) {
  SKIP_WITHOUT_GOLDEN(golden);
  auto dir = ModelDir::Open(golden + "/orig");
  ASSERT_TRUE(dir.ok());
  auto loader = WeightLoader::Create(dir->get());
  ASSERT_TRUE(loader.ok());
  auto w = (*loader)->LoadDense("model.norm.weight", {256});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->size(), 256u);
  auto missing = (*loader)->LoadDense("model.norm.bias", {256});
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("'model.norm.bias' is missing"));
  auto shape = (*loader)->LoadDense("model.norm.weight", {128});
  EXPECT_THAT(std::string(shape.status().message()),
              HasSubstr("has shape [256] but config.json implies [128]"));
  std::vector<float> rows(2 * 256);
  std::vector<int32_t> ids = {5, 1000};
  auto gather = (*loader)->GatherRows("model.embed_tokens.weight", 1000, 256, ids, rows.data());
  EXPECT_THAT(std::string(gather.message()),
              HasSubstr("token id 1000 at position 1 is outside the vocabulary"));
}

using ::llmc::testing::TempDir;

// Copies checkpoint `src` to `dst` with `edit` applied to each tensor (return false to drop it).
void CopyCheckpoint(const std::string& src, const std::string& dst,
                    const std::function<bool(TensorSpec*, std::vector<uint8_t>*)>& edit) {
  fs::copy_file(src + "/config.json", dst + "/config.json");
  auto in = SafetensorsFile::Open(src + "/model.safetensors");
  ASSERT_TRUE(in.ok()) << in.status();
  std::vector<TensorSpec> specs;
  std::vector<std::vector<uint8_t>> data;
  for (const auto& t : (*in)->tensors()) {
    TensorSpec s{t.name, t.dtype, t.shape};
    auto bytes = (*in)->Data(t);
    std::vector<uint8_t> d(bytes.begin(), bytes.end());
    if (!edit(&s, &d)) continue;
    specs.push_back(s);
    data.push_back(std::move(d));
  }
  auto w = SafetensorsWriter::Create(dst + "/model.safetensors", specs);
  ASSERT_TRUE(w.ok()) << w.status();
  for (size_t i = 0; i < specs.size(); ++i) ASSERT_TRUE((*w)->Write(static_cast<int>(i), 0, data[i]).ok());
  ASSERT_TRUE((*w)->Close().ok());
}

TEST(WeightLoaderTest, BrokenCompressedCheckpointsNameTheTensor) {
  SKIP_WITHOUT_GOLDEN(golden);
  const std::string kScale = "model.layers.0.self_attn.k_proj.weight_scale";
  {
    TempDir tmp;
    CopyCheckpoint(golden + "/ref_W4A16", tmp.path(),
                   [&](TensorSpec* s, std::vector<uint8_t>*) { return s->name != kScale; });
    auto lm = CausalLm::Open(tmp.path(), {.threads = 1});
    ASSERT_TRUE(lm.ok()) << lm.status();
    auto block = (*lm)->LoadBlock(0);
    ASSERT_FALSE(block.ok());
    EXPECT_THAT(std::string(block.status().message()), HasSubstr("'" + kScale + "' is missing"));
    EXPECT_THAT(std::string(block.status().message()), HasSubstr("pack-quantized"));
    EXPECT_TRUE((*lm)->LoadBlock(1).ok());
  }
  {
    TempDir tmp;
    CopyCheckpoint(golden + "/ref_W4A16", tmp.path(), [&](TensorSpec* s, std::vector<uint8_t>* d) {
      if (s->name == kScale) {
        s->shape = {64, 4};  // same bytes, wrong shape
      }
      return true;
    });
    auto lm = CausalLm::Open(tmp.path(), {.threads = 1});
    ASSERT_TRUE(lm.ok()) << lm.status();
    auto block = (*lm)->LoadBlock(0);
    ASSERT_FALSE(block.ok());
    EXPECT_THAT(std::string(block.status().message()), HasSubstr(kScale + "' is BF16 [64, 4]"));
    EXPECT_THAT(std::string(block.status().message()), HasSubstr("needs BF16 [128, 2]"));
  }
}

TEST(WeightLoaderTest, RejectsUnreadableQuantizationConfig) {
  SKIP_WITHOUT_GOLDEN(golden);
  TempDir tmp;
  CopyCheckpoint(golden + "/ref_W4A16", tmp.path(), [](TensorSpec*, std::vector<uint8_t>*) { return true; });
  auto cfg = ReadJson(tmp.path() + "/config.json");
  cfg["quantization_config"]["sparsity_config"] = {{"format", "sparse-24-bitmask"}};
  std::ofstream(tmp.path() + "/config.json", std::ios::trunc) << cfg.dump();
  auto lm = CausalLm::Open(tmp.path(), {.threads = 1});
  ASSERT_FALSE(lm.ok());
  EXPECT_THAT(std::string(lm.status().message()),
              HasSubstr("sparsity format 'sparse-24-bitmask' is not supported"));
}

}  // namespace
}  // namespace llmc
