// Compressing vision-language checkpoints (the tiny Qwen2.5-VL, Mistral 3 and Gemma 3 of engine/model/testdata):
// only the text decoder's Linears are quantized, data-free and with GPTQ calibrated on text; the vision tower and
// projector come out bit for bit, every tensor keeps its name, config.json keeps every key and gains a top-level
// quantization_config whose ignore list keeps the vision parts unquantized, the processor files are copied, and
// `llmc eval` / `llmc inspect` run on the result.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/io/checkpoint_layout.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/model_test_util.h"
#include "engine/model/vl_test_util.h"
#include "engine/pipeline/run_job.h"
#include "tests/support/temp_dir.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;
using llmc::testing::ReadAll;
using llmc::testing::TempDir;

// The processor files a VL checkpoint carries (contents are arbitrary: they are copied, not read).
const char* const kProcessorFiles[] = {"preprocessor_config.json", "processor_config.json", "chat_template.json",
                                       "chat_template.jinja", "video_preprocessor_config.json",
                                       "tokenizer_config.json"};

constexpr char kGroup16[] =
    "config_groups: {group_0: {targets: [Linear], weights: {num_bits: 4, type: int, symmetric: true, "
    "strategy: group, group_size: 16}}}";

struct Result {
  int code = -1;
  std::string out, err;
};

Result Llmc(const std::string& args) {
  TempDir t;
  std::string cmd = std::string(LLMC_BINARY_DIR) + "/bin/llmc " + args + " >" + (t / "out") + " 2>" + (t / "err") +
                    " </dev/null";
  int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ReadAll(t / "out"), ReadAll(t / "err")};
}

class VlCompressTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    name_ = GetParam();
    model_ = tmp_ / "model";
    auto rename = absl::EndsWith(name_, "-t5") ? testing_util::ToTransformers5Layout
                                               : std::function<std::string(const std::string&)>();
    const std::string src = testing_util::TestDataDir() + "/" + Source();
    ASSERT_TRUE(testing_util::CopyCheckpoint(src, model_, rename).ok());
    for (const char* f : kProcessorFiles) tmp_.Write(absl::StrCat("model/", f), absl::StrCat("{\"file\": \"", f, "\"}\n"));
    tmp_.Write("model/tokenizer.json", testing_util::TinyTokenizerJson());
    dataset_ = tmp_.Write("calib.txt", testing_util::WordsText(1, 2000));
    eval_text_ = tmp_.Write("eval.txt", testing_util::WordsText(2, 600));
  }

  // The checkpoint under test: "tiny-qwen25vl", or "tiny-qwen25vl-t5" for its weights under transformers 5 names.
  std::string Source() const { return absl::EndsWith(name_, "-t5") ? name_.substr(0, name_.size() - 3) : name_; }

  absl::StatusOr<CompressSummary> Compress(const std::string& out, const std::string& recipe) {
    JobSpec spec;
    spec.model_path = model_;
    spec.output_path = tmp_ / out;
    spec.recipe_yaml = recipe;
    spec.dataset = dataset_;
    spec.num_samples = 4;
    spec.seq_len = 32;
    spec.threads = 2;
    return RunJob(spec);
  }

  // Checks the output `out` against the input: see the file comment.
  void CheckOutput(const std::string& out, bool expect_g_idx) {
    auto in = ModelDir::Open(model_);
    auto dir = ModelDir::Open(tmp_ / out);
    ASSERT_TRUE(in.ok()) << in.status();
    ASSERT_TRUE(dir.ok()) << dir.status();
    auto layout = ResolveCheckpointLayout(**in);
    ASSERT_TRUE(layout.ok()) << layout.status();
    ASSERT_TRUE(layout->multimodal);
    int vision = 0, quantized = 0;
    for (const auto& t : (*in)->tensors()) {
      const std::string& n = t.info->name;
      if (!layout->IsTextTensor(n)) {
        // Vision tower and projector: same name, dtype, shape and bytes.
        const ModelTensor* o = (*dir)->Find(n);
        ASSERT_NE(o, nullptr) << n;
        EXPECT_EQ(o->info->dtype, t.info->dtype) << n;
        EXPECT_EQ(o->info->shape, t.info->shape) << n;
        auto a = t.file->Data(*t.info), b = o->file->Data(*o->info);
        EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << n << " changed";
        ++vision;
        continue;
      }
      const bool linear = absl::StartsWith(n, layout->LayersPrefix()) && absl::EndsWith(n, "_proj.weight");
      if (!linear) {
        EXPECT_NE((*dir)->Find(n), nullptr) << n;  // norms, embeddings, biases, lm_head (ignored)
        continue;
      }
      const std::string m = n.substr(0, n.size() - 7);
      const int64_t rows = t.info->shape[0], cols = t.info->shape[1];
      EXPECT_EQ((*dir)->Find(n), nullptr) << n << " left dense";
      const ModelTensor* packed = (*dir)->Find(m + ".weight_packed");
      const ModelTensor* scale = (*dir)->Find(m + ".weight_scale");
      const ModelTensor* shape = (*dir)->Find(m + ".weight_shape");
      ASSERT_NE(packed, nullptr) << m;
      ASSERT_NE(scale, nullptr) << m;
      ASSERT_NE(shape, nullptr) << m;
      EXPECT_EQ(packed->info->dtype, DType::kI32);
      EXPECT_EQ(packed->info->shape, (std::vector<int64_t>{rows, cols / 8})) << m;
      EXPECT_EQ(scale->info->shape, (std::vector<int64_t>{rows, cols / 16})) << m;
      EXPECT_EQ(scale->info->dtype, DType::kBF16);
      EXPECT_EQ(shape->info->shape, (std::vector<int64_t>{2}));
      EXPECT_EQ((*dir)->Find(m + ".weight_g_idx") != nullptr, expect_g_idx) << m;
      ++quantized;
    }
    EXPECT_GT(vision, 4);
    EXPECT_EQ(quantized, 2 * 7);
    // config.json: the input's keys unchanged, quantization_config at the top level.
    json cin = (*in)->config_json(), cout = (*dir)->config_json();
    ASSERT_TRUE(cout.contains("quantization_config"));
    json qc = cout["quantization_config"];
    cout.erase("quantization_config");
    EXPECT_EQ(cout, cin);
    EXPECT_EQ(qc["quant_method"], "compressed-tensors");
    std::vector<std::string> ignore = qc["ignore"].get<std::vector<std::string>>();
    for (const auto& p : layout->other_parts) EXPECT_THAT(ignore, Contains(absl::StrCat("re:.*", p, ".*")));
    EXPECT_THAT(ignore, Contains("re:.*lm_head"));
    for (const auto& i : ignore) EXPECT_TRUE(absl::StartsWith(i, "re:")) << i << ": vision modules are not listed one by one";
    // Processor and tokenizer files, as they were.
    for (const char* f : kProcessorFiles) EXPECT_EQ(ReadAll(tmp_ / (out + "/" + f)), ReadAll(model_ + "/" + f)) << f;
    EXPECT_EQ(ReadAll(tmp_ / (out + "/tokenizer.json")), ReadAll(model_ + "/tokenizer.json"));
  }

  // ||logits' - logits|| / ||logits|| of the output `out` against the input on `ids`.
  double LogitsChange(const std::string& out, const std::vector<int32_t>& ids) {
    auto a = CausalLm::Open(model_, {.threads = 2});
    auto b = CausalLm::Open(tmp_ / out, {.threads = 2});
    EXPECT_TRUE(a.ok()) << a.status();
    EXPECT_TRUE(b.ok()) << b.status();
    if (!a.ok() || !b.ok()) return -1;
    auto la = (*a)->Forward(ids, 1, ids.size());
    auto lb = (*b)->Forward(ids, 1, ids.size());
    EXPECT_TRUE(la.ok() && lb.ok());
    if (!la.ok() || !lb.ok()) return -1;
    double num = 0, den = 0;
    for (size_t i = 0; i < la->size(); ++i) {
      num += double((*lb)[i] - (*la)[i]) * ((*lb)[i] - (*la)[i]);
      den += double((*la)[i]) * (*la)[i];
    }
    return std::sqrt(num / den);
  }

  // The compressed text decoder runs, its Linears read as quantized, and it stays the same model on the reference
  // inputs: the logits move (the weights were quantized) but by well under their size (4-bit weights of these
  // random tiny models move them by 7-50%).
  void CheckRuns(const std::string& out) {
    auto b = CausalLm::Open(tmp_ / out, {.threads = 2});
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*b)->loader().StorageOf((*b)->spec().layout.LayerPrefix(0) + "mlp.down_proj"), "pack-quantized");
    EXPECT_EQ((*b)->loader().StorageOf((*b)->spec().layout.lm_head), "dense");
    json ref = testing_util::ReadJson(testing_util::TestDataDir() + "/" + Source() + "/reference.json");
    const double rel = LogitsChange(out, ref["input_ids"][0].get<std::vector<int32_t>>());
    std::printf("%s %s: relative logits change %.4f\n", name_.c_str(), out.c_str(), rel);
    EXPECT_GT(rel, 0.0);
    EXPECT_LT(rel, 0.6);
  }

  TempDir tmp_;
  std::string name_, model_, dataset_, eval_text_;
};

TEST_P(VlCompressTest, DataFreeW4A16QuantizesOnlyTheTextDecoder) {
  auto s = Compress("out", absl::StrCat("QuantizationModifier: {ignore: [lm_head], ", kGroup16, "}\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->modules_quantized, 14);
  CheckOutput("out", false);
  CheckRuns("out");
}

TEST_P(VlCompressTest, GptqCalibratesTheTextDecoderOnText) {
  auto s = Compress("out", absl::StrCat("GPTQModifier: {ignore: [lm_head], actorder: group, ", kGroup16,
                                        ", kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, "
                                        "dynamic: false, symmetric: true}}\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->solver_report["modules"].size(), 14u);
  CheckOutput("out", true);
  CheckRuns("out");
  // Calibrated on text of the letters' tokens (ids 0..25), GPTQ keeps the decoder closer to the original than RTN
  // of the same scheme on such text.
  auto r = Compress("rtn", absl::StrCat("QuantizationModifier: {ignore: [lm_head], ", kGroup16, "}\n"));
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<int32_t> letters;
  for (char c : testing_util::WordsText(9, 30))
    if (c >= 'a' && c <= 'z') letters.push_back(c - 'a');
  const double gptq = LogitsChange("out", letters), rtn = LogitsChange("rtn", letters);
  std::printf("%s on calibration-like text: relative logits change GPTQ %.4f, RTN %.4f\n", name_.c_str(), gptq, rtn);
  EXPECT_LT(gptq, rtn);
  // The kv cache scales sit in the text decoder's layers.
  auto dir = ModelDir::Open(tmp_ / "out");
  ASSERT_TRUE(dir.ok());
  auto layout = ResolveCheckpointLayout(**dir);
  ASSERT_TRUE(layout.ok());
  for (int l = 0; l < 2; ++l)
    EXPECT_NE((*dir)->Find(layout->LayerPrefix(l) + "self_attn.k_scale"), nullptr) << l;
}

TEST_P(VlCompressTest, EvalAndInspectRunOnTheOutput) {
  auto s = Compress("out", absl::StrCat("QuantizationModifier: {ignore: [lm_head], ", kGroup16, "}\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  Result e = Llmc(absl::StrCat("eval ", tmp_ / "out", " --text ", eval_text_, " --seq-len 32 --max-windows 4 --threads 2 --json"));
  ASSERT_EQ(e.code, 0) << e.err;
  json j = json::parse(e.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << e.out;
  EXPECT_EQ(j["windows"], 4);
  EXPECT_TRUE(std::isfinite(j["perplexity"].get<double>()));
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  EXPECT_EQ(j["weights"], "pack-quantized");
  EXPECT_THAT(j["architecture"].get<std::string>(), HasSubstr("ForConditionalGeneration"));
  Result i = Llmc(absl::StrCat("inspect ", tmp_ / "out", " --json"));
  ASSERT_EQ(i.code, 0) << i.err;
  json r = json::parse(i.out, nullptr, false);
  ASSERT_FALSE(r.is_discarded()) << i.out;
  EXPECT_EQ(r["num_hidden_layers"], 2);
  EXPECT_EQ(r["hidden_size"], 64);
  EXPECT_TRUE(r.contains("text_architecture"));
  EXPECT_GT(r["formats"]["pack-quantized"].get<int>(), 0);
}

INSTANTIATE_TEST_SUITE_P(VisionLanguage, VlCompressTest,
                         ::testing::Values("tiny-qwen25vl", "tiny-mistral3", "tiny-gemma3vl", "tiny-qwen25vl-t5",
                                           "tiny-mistral3-t5", "tiny-gemma3vl-t5"),
                         [](const auto& info) {
                           std::string n = info.param.substr(5);
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// A recipe that only targets the vision tower quantizes nothing: refused, whatever the text decoder.
TEST(VlCompressRefusalTest, RecipeTargetingOnlyTheVisionTowerIsRefused) {
  TempDir tmp;
  const std::string model = tmp / "model";
  ASSERT_TRUE(testing_util::CopyCheckpoint(testing_util::TestDataDir() + "/tiny-gemma3vl", model, nullptr).ok());
  tmp.Write("model/tokenizer.json", testing_util::TinyTokenizerJson());
  JobSpec spec;
  spec.model_path = model;
  spec.output_path = tmp / "vision";
  spec.threads = 2;
  spec.recipe_yaml = "QuantizationModifier: {config_groups: {g: {targets: ['re:.*vision_tower.*'], weights: "
                     "{num_bits: 8, type: int, symmetric: true, strategy: channel}}}}\n";
  auto v = RunJob(spec);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.status().message(), HasSubstr("quantizes no module"));
  EXPECT_THAT(v.status().message(), HasSubstr("vision tower and projector of a vision-language checkpoint are never "
                                              "quantized"));
  EXPECT_FALSE(fs::exists(tmp / "vision"));
}

}  // namespace
}  // namespace llmc
