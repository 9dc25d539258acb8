// RunCompress on synthetic checkpoints: sharding, determinism, atomic output, mixed precision, bad input.
#include "engine/pipeline/compress_job.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "tests/support/synthetic_model.h"
#include "engine/format/recipe.h"
#include "engine/io/model_dir.h"
#include "tests/support/test_paths.h"
#include "tests/support/temp_dir.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::TempDir;

using ::llmc::testing::ReadAll;

class CompressJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SyntheticLlamaShape shape;  // hidden 256, intermediate 512, 2 layers
    ASSERT_TRUE(WriteSyntheticLlama(tmp_ / "model", shape, DType::kBF16, 7, 1u << 20).ok());
  }
  absl::StatusOr<CompressSummary> Compress(const std::string& scheme, const std::string& out, int threads = 2,
                                           uint64_t shard = 5'000'000'000ull, bool overwrite = false) {
    auto cfg = PresetConfig(scheme, {"Linear"}, {"lm_head"});
    if (!cfg.ok()) return cfg.status();
    CompressOptions o;
    o.model_path = tmp_ / "model";
    o.output_path = out;
    o.threads = threads;
    o.max_shard_size = shard;
    o.overwrite = overwrite;
    return RunCompress(o, *cfg);
  }
  bool NoStagingLeft() {
    for (const auto& e : fs::directory_iterator(tmp_.path()))
      if (e.path().filename().string().find("llmc-staging") != std::string::npos) return false;
    return true;
  }
  TempDir tmp_;
};

TEST_F(CompressJobTest, ShardsAndIndex) {
  auto s = Compress("W4A16", tmp_ / "out", 2, 300'000);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT(s->shards, 2);
  auto index = nlohmann::json::parse(ReadAll(tmp_ / "out/model.safetensors.index.json"));
  auto m = ModelDir::Open(tmp_ / "out");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(index["weight_map"].size(), (*m)->tensors().size());
  uint64_t total = 0;
  for (const auto& t : (*m)->tensors()) total += t.info->nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  // A module's tensors share a shard.
  const auto& wm = index["weight_map"];
  EXPECT_EQ(wm["model.layers.1.mlp.down_proj.weight_packed"], wm["model.layers.1.mlp.down_proj.weight_scale"]);
  // Every shard keeps to the limit (plus its header) unless it holds a single tensor larger than the limit.
  std::map<std::string, int> per_shard;
  for (auto it = wm.begin(); it != wm.end(); ++it) per_shard[it.value().get<std::string>()]++;
  for (const auto& f : (*m)->shard_files()) {
    if (per_shard[f] > 1) {
      EXPECT_LE(fs::file_size(tmp_ / ("out/" + f)), 300'000u + 20'000u) << f;
    }
  }
}

TEST_F(CompressJobTest, SameBytesForAnyThreadCount) {
  ASSERT_TRUE(Compress("NVFP4A16", tmp_ / "a", 1).ok());
  ASSERT_TRUE(Compress("NVFP4A16", tmp_ / "b", 4).ok());
  EXPECT_EQ(ReadAll(tmp_ / "a/model.safetensors"), ReadAll(tmp_ / "b/model.safetensors"));
  EXPECT_EQ(ReadAll(tmp_ / "a/config.json"), ReadAll(tmp_ / "b/config.json"));
}

TEST_F(CompressJobTest, SameBytesForAnyPieceSize) {
  // Quantizing modules in row pieces (small pieces here) gives the same bytes as whole modules, for every
  // data-free preset (block, asymmetric packed zero points, NVFP4 global scales included).
  for (const auto& p : Presets()) {
    if (p.needs_calibration) continue;
    auto cfg = PresetConfig(p.name, {"Linear"}, {"lm_head"});
    ASSERT_TRUE(cfg.ok());
    std::string bytes[2];
    for (int k = 0; k < 2; ++k) {
      CompressOptions o;
      o.model_path = tmp_ / "model";
      o.output_path = tmp_ / ("piece_" + p.name + std::to_string(k));
      o.piece_bytes = k == 0 ? (64u << 20) : 3000;
      ASSERT_TRUE(RunCompress(o, *cfg).ok()) << p.name;
      bytes[k] = ReadAll(o.output_path + "/model.safetensors");
    }
    EXPECT_EQ(bytes[0], bytes[1]) << p.name;
  }
}

TEST_F(CompressJobTest, NvFp4GlobalScaleSharedByFusedModules) {
  ASSERT_TRUE(Compress("NVFP4A16", tmp_ / "out").ok());
  auto m = ModelDir::Open(tmp_ / "out");
  ASSERT_TRUE(m.ok());
  auto g = [&](const std::string& n) {
    const ModelTensor* t = (*m)->Find(n + ".weight_global_scale");
    float v;
    std::memcpy(&v, t->file->Data(*t->info).data(), 4);
    return v;
  };
  EXPECT_EQ(g("model.layers.0.self_attn.q_proj"), g("model.layers.0.self_attn.k_proj"));
  EXPECT_EQ(g("model.layers.0.self_attn.q_proj"), g("model.layers.0.self_attn.v_proj"));
  EXPECT_EQ(g("model.layers.0.mlp.gate_proj"), g("model.layers.0.mlp.up_proj"));
  EXPECT_GT(g("model.layers.0.self_attn.o_proj"), 0.0f);
}

TEST_F(CompressJobTest, EveryDataFreePresetLoadsBack) {
  for (const auto& p : Presets()) {
    if (p.needs_calibration) continue;
    std::string out = tmp_ / ("out_" + p.name);
    auto s = Compress(p.name, out);
    ASSERT_TRUE(s.ok()) << p.name << ": " << s.status();
    auto m = ModelDir::Open(out);
    ASSERT_TRUE(m.ok()) << p.name;
    EXPECT_TRUE((*m)->config().has_quantization_config);
    EXPECT_EQ(s->modules_quantized, 14) << p.name;
    EXPECT_TRUE(fs::exists(out + "/recipe.yaml"));
    EXPECT_TRUE(fs::exists(out + "/generation_config.json"));
  }
}

TEST_F(CompressJobTest, RefusesExistingOutputUnlessOverwrite) {
  fs::create_directories(tmp_ / "out");
  std::ofstream(tmp_ / "out/keep.txt") << "old";
  auto s = Compress("W4A16", tmp_ / "out");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("--overwrite"));
  EXPECT_TRUE(fs::exists(tmp_ / "out/keep.txt"));
  ASSERT_TRUE(Compress("W4A16", tmp_ / "out", 2, 5'000'000'000ull, true).ok());
  EXPECT_FALSE(fs::exists(tmp_ / "out/keep.txt"));
  EXPECT_TRUE(fs::exists(tmp_ / "out/model.safetensors"));
  EXPECT_TRUE(NoStagingLeft());
}

TEST_F(CompressJobTest, FailedJobKeepsOldOutputAndLeavesNoStaging) {
  ASSERT_TRUE(Compress("W4A16", tmp_ / "out").ok());
  std::string before = ReadAll(tmp_ / "out/model.safetensors");
  // Non-divisible group size for every module: 256 % 96 != 0.
  std::string recipe = R"(
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: [lm_head]
      config_groups:
        group_0:
          targets: [Linear]
          weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 96}
)";
  auto cfg = ParseRecipe(recipe, "recipe.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  CompressOptions o;
  o.model_path = tmp_ / "model";
  o.output_path = tmp_ / "out";
  o.overwrite = true;
  auto s = RunCompress(o, *cfg);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("model.layers.0.self_attn.q_proj"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("not divisible by group_size 96"));
  EXPECT_EQ(ReadAll(tmp_ / "out/model.safetensors"), before);
  EXPECT_TRUE(NoStagingLeft());
}

TEST_F(CompressJobTest, MixedPrecisionRecipe) {
  std::string recipe = R"(
default_stage:
  default_modifiers:
    QuantizationModifier:
      ignore: [lm_head, "re:.*layers\\.1\\.mlp\\.down_proj$"]
      config_groups:
        attn:
          targets: ["re:.*self_attn.*"]
          weights: {num_bits: 8, type: float, strategy: channel, symmetric: true}
          input_activations: {num_bits: 8, type: float, strategy: token, dynamic: true, symmetric: true}
        mlp:
          targets: [Linear]
          weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 128}
)";
  auto cfg = ParseRecipe(recipe, "mixed.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  CompressOptions o;
  o.model_path = tmp_ / "model";
  o.output_path = tmp_ / "out";
  auto s = RunCompress(o, *cfg);
  ASSERT_TRUE(s.ok()) << s.status();
  auto m = ModelDir::Open(tmp_ / "out");
  ASSERT_TRUE(m.ok());
  const auto& qc = (*m)->config_json()["quantization_config"];
  EXPECT_EQ(qc["format"], "mixed-precision");
  EXPECT_EQ(qc["config_groups"]["attn"]["format"], "float-quantized");
  EXPECT_EQ(qc["config_groups"]["mlp"]["format"], "pack-quantized");
  EXPECT_EQ(qc["ignore"], nlohmann::json({"model.layers.1.mlp.down_proj", "lm_head"}));
  EXPECT_NE((*m)->Find("model.layers.0.self_attn.q_proj.weight"), nullptr);  // fp8 keeps the name
  EXPECT_EQ((*m)->Find("model.layers.0.self_attn.q_proj.weight")->info->dtype, DType::kF8E4M3);
  EXPECT_NE((*m)->Find("model.layers.0.mlp.up_proj.weight_packed"), nullptr);
  EXPECT_EQ((*m)->Find("model.layers.1.mlp.down_proj.weight")->info->dtype, DType::kBF16);
}

TEST_F(CompressJobTest, NanWeightFailsNamingTheModule) {
  TempDir t;
  SyntheticLlamaShape shape;
  ASSERT_TRUE(WriteSyntheticLlama(t / "model", shape, DType::kF32, 3, 1u << 30).ok());
  // Poison one element of layer 1's up_proj.
  ASSERT_TRUE(SetTensorElement(t / "model", "model.layers.1.mlp.up_proj.weight", 10, std::nanf("")).ok());
  auto cfg = PresetConfig("W4A16", {"Linear"}, {"lm_head"});
  CompressOptions o;
  o.model_path = t / "model";
  o.output_path = t / "out";
  auto s = RunCompress(o, *cfg);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("model.layers.1.mlp.up_proj"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("NaN or Inf"));
  EXPECT_FALSE(fs::exists(t / "out"));
}

TEST_F(CompressJobTest, FileSizeLimitFailsCleanly) {
  // A write failure (here: RLIMIT_FSIZE, EFBIG) ends the job with an error and no output.
  struct rlimit old;
  getrlimit(RLIMIT_FSIZE, &old);
  auto prev = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 100'000;
  setrlimit(RLIMIT_FSIZE, &lim);
  auto s = Compress("W8A16", tmp_ / "out");
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, prev);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted) << s.status();
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
  EXPECT_TRUE(NoStagingLeft());
}

TEST_F(CompressJobTest, CancelLeavesNothing) {
  std::atomic<bool> cancel{true};
  auto cfg = PresetConfig("W4A16", {"Linear"}, {"lm_head"});
  CompressOptions o;
  o.model_path = tmp_ / "model";
  o.output_path = tmp_ / "out";
  o.cancel = &cancel;
  auto s = RunCompress(o, *cfg);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
  EXPECT_TRUE(NoStagingLeft());
}

TEST_F(CompressJobTest, TiedEmbeddingsListLmHeadAsIgnored) {
  TempDir t;
  SyntheticLlamaShape shape;
  shape.tie_embeddings = true;
  ASSERT_TRUE(WriteSyntheticLlama(t / "model", shape, DType::kBF16, 5, 1u << 30).ok());
  auto cfg = PresetConfig("W4A16", {"Linear"}, {"lm_head"});
  CompressOptions o;
  o.model_path = t / "model";
  o.output_path = t / "out";
  ASSERT_TRUE(RunCompress(o, *cfg).ok());
  auto m = ModelDir::Open(t / "out");
  EXPECT_EQ((*m)->config_json()["quantization_config"]["ignore"], nlohmann::json({"lm_head"}));
  // Quantizing a tied lm_head is refused with advice.
  auto cfg2 = PresetConfig("W4A16", {"Linear"}, {});
  o.output_path = t / "out2";
  auto s = RunCompress(o, *cfg2);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("add lm_head to --ignore"));
}

TEST_F(CompressJobTest, OutputInsideModelIsRefused) {
  auto s = Compress("W4A16", tmp_ / "model/sub");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("inside the model directory"));
}

}  // namespace
}  // namespace llmc
