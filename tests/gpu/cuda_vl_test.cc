// The CUDA runtime on the text decoder of vision-language checkpoints (engine/io/checkpoint_layout.h), label `gpu`
// (skips visibly without a device): tiny Qwen2.5-VL (Qwen2 decoder under model., multimodal rope = plain rope on
// text) and Mistral 3 (language_model.model., lm_head tied by the wrapper's flag), also under transformers 5's
// names; and GPTQ with the blocks on the device. Tolerances as cuda_block_test.cc: hidden states and logits vs the CPU
// relative 1e-5 (max abs 1e-4 * max |cpu|); next-token log-probs vs transformers' fp32 forward of the whole VL
// model on input_ids 1e-4; perplexity mean NLL vs the CPU 1e-6 relative (fp32 GEMMs).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/io/checkpoint_layout.h"
#include "engine/model/causal_lm.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/cuda_causal_lm.h"
#include "engine/model/model_test_util.h"
#include "engine/model/perplexity.h"
#include "engine/model/vl_test_util.h"
#include "engine/pipeline/run_job.h"
#include "tests/gpu/cuda_test_util.h"
#include "tests/support/temp_dir.h"

namespace llmc {
namespace {

using gpu_test::MaxAbs;
using gpu_test::MaxAbsDiff;
using gpu_test::RelNorm;
using json = nlohmann::json;

void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  EXPECT_LE(RelNorm(gpu, cpu), 1e-5) << what;
  EXPECT_LE(MaxAbsDiff(gpu, cpu), 1e-4 * MaxAbs(cpu)) << what;
}

class CudaVlTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { LLMC_SKIP_WITHOUT_CUDA(); }

  // Forward of every reference sequence on the CPU and the GPU: hidden states and logits agree, and the GPU's
  // next-token log-probs match transformers.
  void CheckForward(const std::string& dir) {
    auto lm = CausalLm::Open(dir, {.threads = 4});
    ASSERT_TRUE(lm.ok()) << lm.status();
    ASSERT_TRUE((*lm)->spec().layout.multimodal);
    json ref = testing_util::ReadJson(gpu_test::ModelTestData() + "/" + GetParam() + "/reference.json");
    ASSERT_FALSE(ref.is_discarded());
    const int64_t V = (*lm)->spec().vocab_size;
    auto gpu_lm = CudaCausalLm::Create(lm->get());
    ASSERT_TRUE(gpu_lm.ok()) << gpu_lm.status();
    for (size_t s = 0; s < ref["input_ids"].size(); ++s) {
      std::vector<int32_t> ids = ref["input_ids"][s].get<std::vector<int32_t>>();
      const int64_t T = static_cast<int64_t>(ids.size());
      std::map<int, std::vector<float>> cpu_hidden, gpu_hidden;
      auto cpu = (*lm)->Forward(ids, 1, T, [&](int i, const HiddenStates& x) { cpu_hidden[i] = x.data; });
      ASSERT_TRUE(cpu.ok()) << cpu.status();
      auto gpu = (*gpu_lm)->Forward(ids, 1, T, [&](int i, const HiddenStates& x) { gpu_hidden[i] = x.data; });
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      ASSERT_EQ(gpu_hidden.size(), cpu_hidden.size());
      for (auto& [i, h] : cpu_hidden) ExpectClose(gpu_hidden[i], h, absl::StrCat(GetParam(), " seq ", s, " hidden ", i));
      ExpectClose(*gpu, *cpu, absl::StrCat(GetParam(), " seq ", s, " logits"));
      for (int64_t t = 0; t + 1 < T; ++t)
        EXPECT_NEAR(-TokenNll(gpu->data() + t * V, V, ids[t + 1]), ref["next_token_logprobs"][s][t].get<double>(),
                    1e-4)
            << "seq " << s << " t " << t;
    }
  }
};

TEST_P(CudaVlTest, ForwardMatchesCpuAndTransformers) { CheckForward(gpu_test::ModelTestData() + "/" + GetParam()); }

TEST_P(CudaVlTest, Transformers5NamesMatchToo) {
  llmc::testing::TempDir tmp;
  ASSERT_TRUE(testing_util::CopyCheckpoint(gpu_test::ModelTestData() + "/" + GetParam(), tmp.path() + "/m",
                                           testing_util::ToTransformers5Layout)
                  .ok());
  CheckForward(tmp.path() + "/m");
}

TEST_P(CudaVlTest, PerplexityMatchesCpu) {
  auto lm = CausalLm::Open(gpu_test::ModelTestData() + "/" + GetParam(), {.threads = 4});
  ASSERT_TRUE(lm.ok()) << lm.status();
  std::vector<int32_t> ids(32 * 4 + 5);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % 118);
  PerplexityOptions po;
  po.seq_len = 32;
  po.max_windows = 4;
  po.windows_per_pass = 2;
  auto cpu = ComputePerplexity(**lm, ids, po);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto gpu = ComputePerplexityCuda(**lm, ids, po);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(gpu->windows, 4);
  EXPECT_NEAR(gpu->mean_nll, cpu->mean_nll, 1e-6 * cpu->mean_nll);
}

// GPTQ with the blocks on the GPU (--device cuda) compresses the text decoder as on the CPU: vision tensors copied
// bit for bit, every decoder Linear packed, and the result runs.
TEST_P(CudaVlTest, GptqOnTheDeviceCompressesTheTextDecoder) {
  llmc::testing::TempDir tmp;
  const std::string model = tmp.path() + "/model";
  ASSERT_TRUE(testing_util::CopyCheckpoint(gpu_test::ModelTestData() + "/" + GetParam(), model, nullptr).ok());
  tmp.Write("model/tokenizer.json", testing_util::TinyTokenizerJson());
  JobSpec spec;
  spec.model_path = model;
  spec.recipe_yaml =
      "GPTQModifier: {ignore: [lm_head], config_groups: {group_0: {targets: [Linear], weights: {num_bits: 4, "
      "type: int, symmetric: true, strategy: group, group_size: 16}}}}\n";
  spec.dataset = tmp.Write("calib.txt", testing_util::WordsText(1, 2000));
  spec.num_samples = 4;
  spec.seq_len = 32;
  spec.threads = 4;
  spec.device = "cuda";
  spec.output_path = tmp.path() + "/out";
  auto s = RunJob(spec);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->modules_quantized, 14);
  auto in = ModelDir::Open(model);
  auto out = ModelDir::Open(spec.output_path);
  ASSERT_TRUE(in.ok() && out.ok());
  auto layout = ResolveCheckpointLayout(**in);
  ASSERT_TRUE(layout.ok()) << layout.status();
  int vision = 0;
  for (const auto& t : (*in)->tensors()) {
    if (layout->IsTextTensor(t.info->name)) continue;
    const ModelTensor* o = (*out)->Find(t.info->name);
    ASSERT_NE(o, nullptr) << t.info->name;
    auto a = t.file->Data(*t.info), b = o->file->Data(*o->info);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << t.info->name;
    ++vision;
  }
  EXPECT_GT(vision, 4);
  for (int l = 0; l < 2; ++l)
    EXPECT_NE((*out)->Find(layout->LayerPrefix(l) + "mlp.down_proj.weight_packed"), nullptr) << l;
  auto lm = CausalLm::Open(spec.output_path, {.threads = 4});
  ASSERT_TRUE(lm.ok()) << lm.status();
  std::vector<int32_t> ids = {3, 7, 1, 0, 25, 4, 9, 12};
  auto logits = (*lm)->Forward(ids, 1, static_cast<int64_t>(ids.size()));
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (float v : *logits) ASSERT_TRUE(std::isfinite(v));
}

INSTANTIATE_TEST_SUITE_P(VisionLanguage, CudaVlTest,
                         ::testing::Values("tiny-qwen25vl", "tiny-mistral3", "tiny-gemma3vl"),
                         [](const auto& info) { return info.param.substr(5); });

}  // namespace
}  // namespace llmc
