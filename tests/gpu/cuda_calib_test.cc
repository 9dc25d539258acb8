// The calibrated pipeline on the GPU (activations, Hessians and GPTQ on the device) against the CPU pipeline on
// the fixture: the same checkpoint layout and nearly the same codes (TF32 block GEMMs and Hessians differ from the
// CPU's fp32 in the last bits), and the same perplexity within 0.5%.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/pipeline/run_job.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/support/char_tokenizer.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_paths.h"

namespace llmc {
namespace {

bool HaveDevice() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

double Perplexity(const std::string& dir, const std::string& tok_dir) {
  auto lm = CausalLm::Open(dir);
  EXPECT_TRUE(lm.ok()) << lm.status();
  auto tok = Tokenizer::FromModelDir(tok_dir);
  auto text = ReadTextFile(testing::Shared("data/eval.txt"), 1 << 30);
  auto ids = (*tok)->Encode(text->substr(0, 300000), false);
  PerplexityOptions po;
  po.max_windows = 16;
  auto r = ComputePerplexity(**lm, *ids, po);
  EXPECT_TRUE(r.ok()) << r.status();
  return r->perplexity;
}

// GPTQ W4A16 of the fixture with 32 x 512 calibration tokens, on the CPU until a test sets the device.
JobSpec FixtureGptqSpec() {
  JobSpec spec;
  spec.model_path = testing::Shared("models/llmc-fixture-llama");
  spec.scheme = "W4A16";
  spec.algorithm = "gptq";
  spec.dataset = testing::Shared("data/calibration.txt");
  spec.num_samples = 32;
  spec.seq_len = 512;
  return spec;
}

TEST(CudaCalibTest, GptqOnTheGpuMatchesTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "needs ../shared";
  testing::TempDir tmp;
  JobSpec spec = FixtureGptqSpec();
  spec.output_path = tmp.path() + "/cpu";
  auto cpu = RunJob(spec);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  spec.device = "cuda";
  spec.output_path = tmp.path() + "/gpu";
  auto gpu = RunJob(spec);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(gpu->solver_report["device"], "cuda");
  EXPECT_GT(gpu->solver_report["peak_device_used_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(gpu->solver_report["embedding"], "device");  // the tokens were embedded on the GPU

  auto a = ModelDir::Open(tmp.path() + "/cpu");
  auto b = ModelDir::Open(tmp.path() + "/gpu");
  ASSERT_TRUE(a.ok() && b.ok());
  int64_t words = 0, diff = 0;
  for (const auto& t : (*a)->tensors()) {
    const ModelTensor* u = (*b)->Find(t.info->name);
    ASSERT_NE(u, nullptr) << t.info->name;
    ASSERT_EQ(u->info->shape, t.info->shape);
    if (t.info->name.find("weight_packed") == std::string::npos) continue;
    auto x = t.file->Data(*t.info), y = u->file->Data(*u->info);
    for (size_t i = 0; i + 4 <= x.size(); i += 4, ++words) diff += std::memcmp(x.data() + i, y.data() + i, 4) != 0;
  }
  ASSERT_GT(words, 0);
  // One int32 word holds 8 codes: a word differs when any of its codes does. TF32 block GEMMs and Hessians move
  // some codes across rounding boundaries; GPTQ then propagates those choices along the row, so the codes agree
  // only in part. The perplexity below is what must agree.
  const double frac = static_cast<double>(diff) / words;
  std::printf("packed words differing GPU vs CPU: %lld of %lld (%.3f)\n", static_cast<long long>(diff),
              static_cast<long long>(words), frac);
  EXPECT_LT(frac, 0.9);
  const std::string fixture = spec.model_path;
  double pc = Perplexity(tmp.path() + "/cpu", fixture), pg = Perplexity(tmp.path() + "/gpu", fixture);
  std::printf("perplexity CPU %.4f GPU %.4f\n", pc, pg);
  EXPECT_NEAR(pg / pc, 1.0, 0.005) << "cpu " << pc << " gpu " << pg;
}

// The calibration activations kept in bf16 between blocks, on the device or in pinned host memory: the same
// numerics either way (byte-identical checkpoints), and the perplexity of the fp32 path within 0.5%.
TEST(CudaCalibTest, Bf16AndHostActivationsHoldAccuracy) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "needs ../shared";
  testing::TempDir tmp;
  JobSpec spec = FixtureGptqSpec();
  spec.device = "cuda";
  double ppl[3];
  const char* modes[3] = {"fp32", "bf16", "host"};
  for (int i = 0; i < 3; ++i) {
    spec.calib_activations = modes[i];
    spec.output_path = tmp.path() + "/" + modes[i];
    auto r = RunJob(spec);
    ASSERT_TRUE(r.ok()) << modes[i] << ": " << r.status();
    EXPECT_EQ(r->solver_report["calibration_activations"], modes[i]);
    ppl[i] = Perplexity(spec.output_path, spec.model_path);
    std::printf("calibration activations %s: perplexity %.4f, peak device bytes %llu\n", modes[i], ppl[i],
                static_cast<unsigned long long>(r->solver_report["peak_device_used_bytes"].get<uint64_t>()));
  }
  EXPECT_NEAR(ppl[1] / ppl[0], 1.0, 0.005);
  auto a = ModelDir::Open(tmp.path() + "/bf16");
  auto b = ModelDir::Open(tmp.path() + "/host");
  ASSERT_TRUE(a.ok() && b.ok());
  int64_t compared = 0;
  for (const auto& t : (*a)->tensors()) {
    const ModelTensor* u = (*b)->Find(t.info->name);
    ASSERT_NE(u, nullptr) << t.info->name;
    auto x = t.file->Data(*t.info), y = u->file->Data(*u->info);
    ASSERT_EQ(x.size(), y.size()) << t.info->name;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0) << t.info->name << " differs between bf16 and host";
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

// The device propagation checks its output as the CPU does: a block whose output overflows with the compressed
// weights (an ignored down_proj whose first row is the largest finite bf16 value) fails the job naming the block,
// in every activation storage, and nothing is written.
TEST(CudaCalibTest, NonFiniteBlockOutputFailsNamingTheBlock) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "needs ../shared";
  testing::TempDir tmp;
  JobSpec spec = FixtureGptqSpec();
  const std::string model = tmp.path() + "/model";
  std::filesystem::copy(spec.model_path, model, std::filesystem::copy_options::recursive);
  auto lm = CausalLm::Open(model);
  ASSERT_TRUE(lm.ok()) << lm.status();
  const int64_t row = (*lm)->spec().intermediate_size;
  lm->reset();
  ASSERT_TRUE(SetTensorElement(model, "model.layers.2.mlp.down_proj.weight", 0, 3.3e38f, row).ok());
  spec.model_path = model;
  spec.device = "cuda";
  spec.num_samples = 4;
  spec.seq_len = 64;
  spec.ignore = {"lm_head", "re:.*layers\\.2\\.mlp\\.down_proj$"};
  spec.ignore_given = true;
  for (const char* mode : {"fp32", "bf16", "host"}) {
    spec.calib_activations = mode;
    spec.output_path = tmp.path() + "/out_" + mode;
    auto r = RunJob(spec);
    ASSERT_FALSE(r.ok()) << mode;
    EXPECT_NE(std::string(r.status().message()).find("block 2 produced NaN or Inf activations"), std::string::npos)
        << mode << ": " << r.status();
    EXPECT_FALSE(std::filesystem::exists(spec.output_path)) << mode;
  }
}

// --precision: fp32 (IEEE GEMMs and Hessians), tf32 (the default) and bf16 (bf16 GEMM inputs and Hessian
// products) all hold the fixture's GPTQ perplexity within 0.5 % of fp32, and the report names the arithmetic.
TEST(CudaCalibTest, PrecisionsHoldAccuracy) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "needs ../shared";
  testing::TempDir tmp;
  JobSpec spec = FixtureGptqSpec();
  spec.device = "cuda";
  double ppl[3];
  const char* modes[3] = {"fp32", "tf32", "bf16"};
  for (int i = 0; i < 3; ++i) {
    spec.precision = modes[i];
    spec.output_path = tmp.path() + "/" + modes[i];
    auto r = RunJob(spec);
    ASSERT_TRUE(r.ok()) << modes[i] << ": " << r.status();
    EXPECT_EQ(r->solver_report["precision"], modes[i]);
    ppl[i] = Perplexity(spec.output_path, spec.model_path);
    std::printf("precision %s: perplexity %.4f, solve %.2f s\n", modes[i], ppl[i], r->solver_report["seconds"].get<double>());
  }
  EXPECT_NEAR(ppl[1] / ppl[0], 1.0, 0.005);
  EXPECT_NEAR(ppl[2] / ppl[0], 1.0, 0.005);
}

// GPTQ W4A16 of a mixture-of-experts model on the GPU with every expert calibrated: each expert's device Hessian
// sees every calibration token, the checkpoint has the CPU run's tensors, and the runtime reads it back.
// tiny-qwen3moe (4 experts, layer 1 dense) and tiny-llama4text (fused experts run as sliced Linears, 4 experts in
// both layers, sigmoid routing of the inputs), each with a character-level tokenizer over printable ASCII.
TEST(CudaCalibTest, MoeGptqCalibratesEveryExpertOnTheGpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  for (const std::string name : {"tiny-qwen3moe", "tiny-llama4text"}) {
    SCOPED_TRACE(name);
    testing::TempDir tmp;
    const std::string model = tmp.path() + "/model";
    std::filesystem::create_directories(model);
    const std::string src = std::string(LLMC_SOURCE_DIR) + "/engine/model/testdata/" + name;
    for (const char* f : {"config.json", "model.safetensors"})
      std::filesystem::copy_file(src + "/" + f, model + "/" + f);
    testing::WriteCharTokenizer(model);
    std::string text;
    for (int i = 0; i < 8; ++i) text += "Mixture of experts models route every token to a few experts of many. ";
    const std::string data = tmp.Write("calib.txt", text);
    JobSpec spec;
    spec.model_path = model;
    spec.recipe_yaml =
        "GPTQModifier: {ignore: [lm_head, 're:.*mlp\\.gate$', 're:.*feed_forward\\.router$'], config_groups: {g: "
        "{targets: [Linear], weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 8}}}}\n";
    spec.dataset = data;
    spec.num_samples = 4;
    spec.seq_len = 24;
    spec.output_path = tmp.path() + "/cpu";
    auto cpu = RunJob(spec);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    spec.device = "cuda";
    spec.output_path = tmp.path() + "/gpu";
    auto gpu = RunJob(spec);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    const nlohmann::json& rep = gpu->solver_report;
    EXPECT_EQ(rep["device"], "cuda");
    EXPECT_EQ(rep["moe"]["calibrate_all_experts"], true);
    const int64_t tokens = rep["calibration"]["tokens"].get<int64_t>();
    int experts = 0;
    for (const auto& m : rep["modules"]) {
      EXPECT_EQ(m["calibration_tokens"].get<int64_t>(), tokens) << m["name"];
      EXPECT_EQ(m["algorithm"], "gptq") << m["name"];
      experts += m["name"].get<std::string>().find(".experts.") != std::string::npos;
    }
    EXPECT_EQ(experts, 2 * 4 * 3);  // two sparse layers (qwen3moe: 0 and 2), 4 experts, gate/up/down
    auto a = ModelDir::Open(tmp.path() + "/cpu");
    auto b = ModelDir::Open(tmp.path() + "/gpu");
    ASSERT_TRUE(a.ok() && b.ok());
    for (const auto& t : (*a)->tensors()) {
      const ModelTensor* u = (*b)->Find(t.info->name);
      ASSERT_NE(u, nullptr) << t.info->name;
      EXPECT_EQ(u->info->shape, t.info->shape) << t.info->name;
    }
    for (const std::string& dir : {tmp.path() + "/cpu", tmp.path() + "/gpu"}) {
      auto lm = CausalLm::Open(dir);
      ASSERT_TRUE(lm.ok()) << lm.status();
      auto tok = Tokenizer::FromModelDir(dir);
      ASSERT_TRUE(tok.ok()) << tok.status();
      auto ids = (*tok)->Encode(text, false);
      PerplexityOptions po;
      po.seq_len = 32;
      auto r = ComputePerplexity(**lm, *ids, po);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_TRUE(std::isfinite(r->perplexity)) << dir;
      std::printf("%s perplexity %.4f\n", dir.c_str(), r->perplexity);
    }
  }
}

}  // namespace
}  // namespace llmc
