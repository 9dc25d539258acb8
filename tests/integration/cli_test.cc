// End-to-end tests of the `llmc` binary: real processes, real files, exit codes and one-line errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "engine/io/model_dir.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/test_paths.h"
#include "tests/support/temp_dir.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::TempDir;

struct Result {
  int code;
  std::string out;
  std::string err;
};

using ::llmc::testing::ReadAll;

// Runs `llmc ARGS` and captures exit status, stdout and stderr.
Result Llmc(const std::string& args) {
  TempDir t;
  std::string cmd = std::string(LLMC_BINARY_DIR) + "/bin/llmc " + args + " >" + (t / "out") + " 2>" + (t / "err") + " </dev/null";
  int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ReadAll(t / "out"), ReadAll(t / "err")};
}

// An error is one line on stderr that starts with "llmc: error:".
void ExpectOneLineError(const Result& r, const std::string& needle) {
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("llmc: error:"));
  EXPECT_THAT(r.err, HasSubstr(needle));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteSyntheticLlama(tmp_ / "model", SyntheticLlamaShape{}, DType::kBF16, 11, 1u << 20).ok());
  }
  TempDir tmp_;
};

TEST_F(CliTest, CompressPrintsSummaryAndJson) {
  Result r = Llmc("compress " + (tmp_ / "model") + " " + (tmp_ / "out") + " --scheme W4A16");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("smaller"));
  EXPECT_THAT(r.out, HasSubstr("MB/s"));
  r = Llmc("compress " + (tmp_ / "model") + " " + (tmp_ / "out2") + " --scheme FP8_DYNAMIC --json --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["scheme"], "FP8_DYNAMIC");
  EXPECT_EQ(j["modules_quantized"], 14);
  EXPECT_GT(j["compression_ratio"].get<double>(), 1.5);
  EXPECT_EQ(j["threads"], 1);
}

TEST_F(CliTest, InspectDescribesTheCheckpoint) {
  ASSERT_EQ(Llmc("compress " + (tmp_ / "model") + " " + (tmp_ / "out") + " --scheme NVFP4A16 --max-shard-size 400KB").code, 0);
  Result r = Llmc("inspect " + (tmp_ / "out") + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(j["formats"]["nvfp4-pack-quantized"], 14);
  EXPECT_GT(j["shards"].size(), 1u);
  r = Llmc("inspect " + (tmp_ / "out"));
  ASSERT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("nvfp4-pack-quantized: 14"));
  r = Llmc("inspect " + (tmp_ / "model") + " --json");
  ASSERT_EQ(r.code, 0);
  EXPECT_EQ(nlohmann::json::parse(r.out)["format"], "dense");
}

TEST_F(CliTest, RecipeAndIgnore) {
  std::ofstream(tmp_ / "r.yaml") << "default_stage:\n  default_modifiers:\n    QuantizationModifier:\n"
                                    "      targets: [Linear]\n      scheme: W8A8\n      ignore: [lm_head]\n";
  Result r = Llmc("compress " + (tmp_ / "model") + " " + (tmp_ / "out") + " --recipe " + (tmp_ / "r.yaml") +
                  " --ignore 're:.*down_proj'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto cfg = nlohmann::json::parse(ReadAll(tmp_ / "out/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["format"], "int-quantized");
  EXPECT_EQ(cfg["quantization_config"]["ignore"],
            nlohmann::json({"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj", "lm_head"}));
  EXPECT_THAT(ReadAll(tmp_ / "out/recipe.yaml"), HasSubstr("QuantizationModifier"));
}

TEST_F(CliTest, FixtureCompressesWithEveryDataFreePreset) {
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "no ../shared/models/llmc-fixture-llama";
  std::string model = testing::Shared("models/llmc-fixture-llama");
  for (const char* s : {"W4A16", "W4A16_ASYM", "W8A16", "W8A8", "W4AFP8", "FP8_DYNAMIC", "FP8_BLOCK", "NVFP4A16",
                        "MXFP4A16", "MXFP8A16", "W4A8", "W2A16", "W3A16", "W6A16", "MXFP4", "MXFP8"}) {
    std::string out = tmp_ / (std::string("fx_") + s);
    Result r = Llmc("compress " + model + " " + out + " --scheme " + s + " --json");
    ASSERT_EQ(r.code, 0) << s << ": " << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["modules_quantized"], 42) << s;
    EXPECT_TRUE(fs::exists(out + "/tokenizer.json")) << s;
    Result i = Llmc("inspect " + out + " --json");
    ASSERT_EQ(i.code, 0) << s << ": " << i.err;
  }
}

TEST_F(CliTest, BadInputsEndInOneLineErrors) {
  std::string m = tmp_ / "model";
  // Unknown scheme lists the known ones.
  Result r = Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W5A5");
  ExpectOneLineError(r, "unknown scheme 'W5A5'");
  EXPECT_THAT(r.err, HasSubstr("W4A16"));
  // Missing model directory / config.
  ExpectOneLineError(Llmc("compress " + (tmp_ / "nope") + " " + (tmp_ / "o") + " --scheme W4A16"), "no such model directory");
  TempDir bad;
  fs::create_directories(bad / "m");
  ExpectOneLineError(Llmc("compress " + (bad / "m") + " " + (tmp_ / "o") + " --scheme W4A16"), "config.json: not found");
  // Malformed config.json.
  fs::copy(m, bad / "m2", fs::copy_options::recursive);
  std::ofstream(bad / "m2/config.json") << "{\"hidden_size\": 12,,}";
  ExpectOneLineError(Llmc("compress " + (bad / "m2") + " " + (tmp_ / "o") + " --scheme W4A16"), "config.json: not valid JSON");
  // Truncated shard.
  fs::copy(m, bad / "m3", fs::copy_options::recursive);
  auto shards = [](const std::string& dir) {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") v.push_back(e.path().string());
    std::sort(v.begin(), v.end());
    return v;
  };
  ASSERT_GE(shards(bad / "m3").size(), 2u);
  std::string shard = shards(bad / "m3").back();
  fs::resize_file(shard, fs::file_size(shard) / 2);
  ExpectOneLineError(Llmc("compress " + (bad / "m3") + " " + (tmp_ / "o") + " --scheme W4A16"), "truncated");
  // Corrupt header.
  fs::copy(m, bad / "m4", fs::copy_options::recursive);
  {
    std::fstream f(shards(bad / "m4").front(), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(8);
    f.write("}}garbage", 9);
  }
  ExpectOneLineError(Llmc("compress " + (bad / "m4") + " " + (tmp_ / "o") + " --scheme W4A16"), "not valid JSON");
  // Group size that does not divide.
  std::ofstream(bad / "g.yaml") << "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n"
                                   "      weights: {num_bits: 4, type: int, strategy: group, group_size: 100}\n";
  r = Llmc("compress " + m + " " + (tmp_ / "o") + " --recipe " + (bad / "g.yaml"));
  ExpectOneLineError(r, "is not divisible by group_size 100");
  EXPECT_THAT(r.err, HasSubstr("add the module to ignore"));
  // Unknown modifier.
  std::ofstream(bad / "u.yaml") << "stage:\n  mods:\n    FooModifier: {}\n";
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --recipe " + (bad / "u.yaml")), "unknown modifier");
  // Invalid YAML.
  std::ofstream(bad / "y.yaml") << "a: [1, 2\n";
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --recipe " + (bad / "y.yaml")), "invalid YAML");
  // None of the failures left an output.
  EXPECT_FALSE(fs::exists(tmp_ / "o"));
  // Calibrated algorithms without data, unknown algorithms, --algorithm with a recipe; a bad device.
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --device tpu"), "use cpu or cuda");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --algorithm gptq"), "pass --dataset");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme FP8"), "calibration data");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --algorithm magic"), "unknown --algorithm");
  std::ofstream(bad / "gptq.yaml") << "GPTQModifier: {scheme: W4A16, blocksize: 64}\n";
  r = Llmc("compress " + m + " " + (tmp_ / "o") + " --recipe " + (bad / "gptq.yaml") + " --dataset x.txt");
  ExpectOneLineError(r, "'blocksize'");
  EXPECT_THAT(r.err, HasSubstr("block_size"));
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --recipe " + (bad / "g.yaml") + " --algorithm gptq"),
                     "--algorithm goes with --scheme");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --algorithm gptq --dataset " +
                          (bad / "missing.txt")),
                     "missing.txt");
  // Where calibration activations stay: a value that is not one, a data-free job, the cpu (fp32 only).
  std::ofstream(bad / "calib.txt") << "A few words of calibration text for the activations option. " << std::string(64, 'x');
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --algorithm gptq --dataset " +
                          (bad / "calib.txt") + " --calib-activations fp16"),
                     "use fp32, bf16 or host");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --calib-activations bf16"),
                     "runs no calibration");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --algorithm gptq --dataset " +
                          (bad / "calib.txt") + " --num-samples 2 --seq-len 8 --calib-activations host"),
                     "apply to --device cuda");
  // The calibration arithmetic: a value that is not one, a data-free job, the cpu (fp32 only); eval the same.
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --algorithm gptq --dataset " +
                          (bad / "calib.txt") + " --precision fp16"),
                     "precision 'fp16': use fp32, tf32 or bf16");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --precision bf16"),
                     "runs no calibration");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --algorithm gptq --dataset " +
                          (bad / "calib.txt") + " --num-samples 2 --seq-len 8 --precision tf32"),
                     "precision tf32: the cpu computes in fp32");
  ExpectOneLineError(Llmc("eval " + m + " --text " + (bad / "calib.txt") + " --precision bf16"),
                     "--precision bf16: the cpu computes in fp32");
  ExpectOneLineError(Llmc("eval " + m + " --text " + (bad / "calib.txt") + " --device cuda --precision half"),
                     "--precision half: use fp32, tf32 or bf16");
  EXPECT_FALSE(fs::exists(tmp_ / "o"));
  // Existing output.
  fs::create_directories(tmp_ / "exists");
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "exists") + " --scheme W4A16"), "--overwrite");
  // Bad shard size.
  ExpectOneLineError(Llmc("compress " + m + " " + (tmp_ / "o") + " --scheme W4A16 --max-shard-size 5XB"), "max-shard-size");
}

// Warnings are logged to stderr: stdout stays the JSON a pipeline parses (a tokenizer_config.json that is not a
// JSON object is warned about and ignored).
TEST_F(CliTest, WarningsGoToStderrAndJsonStaysClean) {
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "no ../shared/models/llmc-fixture-llama";
  const std::string src = testing::Shared("models/llmc-fixture-llama");
  fs::create_directories(tmp_ / "tok");
  fs::copy_file(fs::path(src) / "tokenizer.json", fs::path(tmp_ / "tok") / "tokenizer.json");
  std::ofstream(tmp_ / "tok/tokenizer_config.json") << "[1, 2]";
  Result r = Llmc("tokenize " + (tmp_ / "tok") + " --text 'Hello, world!' --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("not a JSON object"));
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"], nlohmann::json({0, 42, 588, 81, 14, 995, 3})) << r.out;
}

TEST_F(CliTest, TokenizeAndEvalTheFixture) {
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "no ../shared/models/llmc-fixture-llama";
  std::string model = testing::Shared("models/llmc-fixture-llama");
  Result r = Llmc("tokenize " + model + " --text 'Hello, world!' --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"], nlohmann::json({0, 42, 588, 81, 14, 995, 3}));  // goldens.json
  r = Llmc("tokenize " + model + " --text 'Hello, world!' --no-special");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("42 588 81 14 995 3"));
  // Evaluate the original and its W4A16 compression on two windows: the compressed model is a bit worse.
  std::string text = testing::Shared("data/eval.txt");
  r = Llmc("eval " + model + " --text " + text + " --max-windows 2 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto base = nlohmann::json::parse(r.out);
  EXPECT_EQ(base["tokens"], 1024);
  double ppl = base["perplexity"].get<double>();
  EXPECT_GT(ppl, 5.0);
  EXPECT_LT(ppl, 100.0);
  ASSERT_EQ(Llmc("compress " + model + " " + (tmp_ / "w4") + " --scheme W4A16").code, 0);
  r = Llmc("eval " + (tmp_ / "w4") + " --text " + text + " --max-windows 2 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  double ppl4 = nlohmann::json::parse(r.out)["perplexity"].get<double>();
  EXPECT_GT(ppl4, ppl);
  EXPECT_LT(ppl4, ppl * 1.2);
  // W8A8 quantizes activations: `perplexity` runs them quantized, `perplexity_weights_only` in fp32, and the
  // compression report's evaluation has both.
  r = Llmc("compress " + model + " " + (tmp_ / "w8a8") + " --scheme W8A8 --eval-text " + text +
           " --eval-max-windows 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto report = nlohmann::json::parse(ReadAll(tmp_ / "w8a8/compression_report.json"), nullptr, false);
  ASSERT_TRUE(report.contains("eval")) << report.dump();
  EXPECT_EQ(report["eval"]["activations_quantized"], true);
  EXPECT_GT(report["eval"]["perplexity_after"].get<double>(), report["eval"]["perplexity_after_weights_only"].get<double>());
  r = Llmc("eval " + (tmp_ / "w8a8") + " --text " + text + " --max-windows 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto both = nlohmann::json::parse(r.out);
  EXPECT_EQ(both["activations"], "quantized");
  const double after = report["eval"]["perplexity_after"].get<double>();
  const double after_w = report["eval"]["perplexity_after_weights_only"].get<double>();
  EXPECT_NEAR(both["perplexity"].get<double>(), after, 1e-4 * after);  // other thread counts
  EXPECT_NEAR(both["perplexity_weights_only"].get<double>(), after_w, 1e-5 * after_w);
  r = Llmc("eval " + (tmp_ / "w8a8") + " --text " + text + " --max-windows 1 --json --activations weights-only");
  ASSERT_EQ(r.code, 0) << r.err;
  auto wo = nlohmann::json::parse(r.out);
  EXPECT_EQ(wo["activations"], "weights-only");
  EXPECT_DOUBLE_EQ(wo["perplexity"].get<double>(), both["perplexity_weights_only"].get<double>());
  r = Llmc("eval " + (tmp_ / "w8a8") + " --text " + text + " --max-windows 1 --activations quantized");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrFormat("perplexity %.4f on", both["perplexity"].get<double>())));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("weights only")));
  ExpectOneLineError(Llmc("eval " + (tmp_ / "w8a8") + " --text " + text + " --activations some"), "--activations some");
  // Bad inputs.
  ExpectOneLineError(Llmc("eval " + model + " --text " + (tmp_ / "missing.txt")), "missing.txt");
  ExpectOneLineError(Llmc("eval " + (tmp_ / "model") + " --text " + text), "tokenizer");
  ExpectOneLineError(Llmc("tokenize " + (tmp_ / "nope") + " --text hi"), "nope");
}

TEST_F(CliTest, CalibratedGptqOnTheFixture) {
  if (!testing::HaveShared("models/llmc-fixture-llama")) GTEST_SKIP() << "no ../shared/models/llmc-fixture-llama";
  const std::string fixture = testing::Shared("models/llmc-fixture-llama");
  Result r = Llmc("compress " + fixture + " " + (tmp_ / "g") + " --scheme W4A16 --algorithm gptq --dataset " +
                  testing::Shared("data/calibration.txt") + " --num-samples 8 --seq-len 128 --threads 2 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["method"], "GPTQ W4A16");
  EXPECT_EQ(j["solve"]["modules"].size(), 42u);
  EXPECT_EQ(j["solve"]["calibration"]["samples"], 8);
  EXPECT_TRUE(fs::exists(tmp_ / "g/compression_report.json"));
  EXPECT_THAT(ReadAll(tmp_ / "g/recipe.yaml"), HasSubstr("GPTQModifier"));
  // The data-free path notes unused calibration flags and still runs.
  r = Llmc("compress " + fixture + " " + (tmp_ / "r") + " --scheme W4A16 --dataset x.txt --no-progress");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("not used"));
  // The registry is listed.
  r = Llmc("algorithms --json");
  ASSERT_EQ(r.code, 0);
  auto algos = nlohmann::json::parse(r.out);
  ASSERT_EQ(algos.size(), 6u);
  EXPECT_EQ(algos[1]["name"], "gptq");
  EXPECT_EQ(algos[1]["modifier"], "GPTQModifier");
}

// A mixture-of-experts model (tiny-qwen3moe with a character-level tokenizer) through `llmc compress` (GPTQ, every
// expert calibrated) and `llmc eval` of the output; the MoE option's refusals as one-line errors.
TEST_F(CliTest, MoeCompressAndEval) {
  const std::string model = tmp_ / "moe";
  fs::create_directories(model);
  const std::string src = std::string(LLMC_SOURCE_DIR) + "/engine/model/testdata/tiny-qwen3moe";
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src + "/" + f, model + "/" + f);
  nlohmann::json vocab = nlohmann::json::object();
  for (int c = 32; c < 127; ++c) vocab[std::string(1, static_cast<char>(c))] = c - 32;
  vocab["<unk>"] = 95;
  std::ofstream(model + "/tokenizer.json")
      << nlohmann::json({{"version", "1.0"},
                         {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()},
                                    {"unk_token", "<unk>"}}}})
             .dump();
  std::ofstream(model + "/tokenizer_config.json") << "{}";
  std::string text;
  for (int i = 0; i < 8; ++i) text += "Mixture of experts models route every token to a few experts of many. ";
  const std::string data = tmp_.Write("moe.txt", text);
  const std::string recipe = tmp_.Write(
      "moe.yaml",
      "GPTQModifier:\n  ignore: [lm_head, 're:.*mlp\\.gate$']\n  config_groups:\n    g:\n      targets: [Linear]\n"
      "      weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 8}\n");
  Result r = Llmc("compress " + model + " " + (tmp_ / "moe-gptq") + " --recipe " + recipe + " --dataset " + data +
                  " --num-samples 4 --seq-len 24 --threads 2 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["solve"]["moe"]["calibrate_all_experts"], true);
  r = Llmc("eval " + (tmp_ / "moe-gptq") + " --text " + data + " --seq-len 32 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(nlohmann::json::parse(r.out)["perplexity"].get<double>(), 1.0);
  EXPECT_EQ(nlohmann::json::parse(r.out)["weights"], "pack-quantized");
  ExpectOneLineError(Llmc("compress " + model + " " + (tmp_ / "x") + " --recipe " + recipe + " --dataset " + data +
                          " --moe-calibrate-all-experts maybe"),
                     "use true or false");
  ExpectOneLineError(Llmc("compress " + model + " " + (tmp_ / "y") + " --scheme FP8_DYNAMIC --moe-calibrate-all-experts "
                          "false"),
                     "moe_calibrate_all_experts");
}

TEST_F(CliTest, FullDiskFailsCleanly) {
  TempDir mnt;
  if (geteuid() != 0 || mount("tmpfs", mnt.path().c_str(), "tmpfs", 0, "size=256k") != 0)
    GTEST_SKIP() << "needs root to mount a small tmpfs (a full disk)";
  Result r = Llmc("compress " + (tmp_ / "model") + " " + (mnt / "out") + " --scheme W8A16");
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(mnt.path())) left.push_back(e.path().filename());
  umount(mnt.path().c_str());
  ExpectOneLineError(r, "no space left on ");  // common/io_error.h names the filesystem and the free space
  EXPECT_TRUE(left.empty()) << "left behind: " << left.front();
}

// ---------------------------------------------------------------------------------------------------------------
// Round trips of the tiny checkpoints of each family beyond Llama (engine/model/testdata): data-free and GPTQ
// compression write the modules transformers + compressed-tensors expect (the input's Linear names, fused ones
// fused), and `llmc eval` runs the output.

constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz .,";

// A character-level BPE tokenizer over kAlphabet (ids 0..28, inside every tiny model's 128-token vocabulary).
std::string CharTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; kAlphabet[i] != '\0'; ++i) vocab[std::string(1, kAlphabet[i])] = i;
  vocab["\n"] = static_cast<int>(sizeof(kAlphabet) - 1);  // documents are joined by blank lines
  nlohmann::json j = {{"version", "1.0"},      {"truncation", nullptr}, {"padding", nullptr},
                      {"added_tokens", nlohmann::json::array()},        {"normalizer", nullptr},
                      {"pre_tokenizer", nullptr}, {"post_processor", nullptr}, {"decoder", nullptr}};
  j["model"] = {{"type", "BPE"},       {"dropout", nullptr},         {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},              {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},   {"byte_fallback", false},     {"ignore_merges", false},
                {"vocab", vocab},      {"merges", nlohmann::json::array()}};
  return j.dump();
}

// Deterministic text over kAlphabet: `paragraphs` paragraphs separated by blank lines.
std::string AlphabetText(int paragraphs, uint32_t seed) {
  std::string out;
  uint32_t x = seed;
  for (int p = 0; p < paragraphs; ++p) {
    for (int i = 0; i < 300; ++i) {
      x = x * 1664525u + 1013904223u;
      out += kAlphabet[(x >> 8) % (sizeof(kAlphabet) - 1)];
    }
    out += "\n\n";
  }
  return out;
}

class FamilyCompressTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const fs::path src = fs::path(LLMC_SOURCE_DIR) / "engine/model/testdata" / GetParam();
    fs::create_directories(tmp_ / "model");
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, fs::path(tmp_ / "model") / f);
    std::ofstream(tmp_ / "model/tokenizer.json") << CharTokenizerJson();
    std::ofstream(tmp_ / "calib.txt") << AlphabetText(12, 7);
    std::ofstream(tmp_ / "eval.txt") << AlphabetText(1, 99);
  }

  // The output holds, for every Linear of the input but lm_head, the packed int4 weight of that name with its
  // group-16 scales; every other tensor under its own name and shape (norm weights byte for byte).
  void ExpectCompressedLayout(const std::string& out, bool norms_unchanged = true) {
    auto in = ModelDir::Open(tmp_ / "model");
    auto o = ModelDir::Open(out);
    ASSERT_TRUE(in.ok() && o.ok()) << in.status() << " " << o.status();
    int linears = 0;
    for (const ModelTensor& t : (*in)->tensors()) {
      const std::string& n = t.info->name;
      const bool linear = t.info->shape.size() == 2 && n.find("embed_tokens") == std::string::npos &&
                          n.rfind("lm_head", 0) != 0 && EndsWithWeight(n);
      if (!linear) {
        const ModelTensor* c = (*o)->Find(n);
        ASSERT_NE(c, nullptr) << n;
        EXPECT_EQ(c->info->shape, t.info->shape) << n;
        EXPECT_EQ(c->info->dtype, t.info->dtype) << n;
        if (norms_unchanged && t.info->shape.size() == 1) {
          EXPECT_EQ(c->file->Data(*c->info), t.file->Data(*t.info)) << n;
        }
        continue;
      }
      ++linears;
      const std::string base = n.substr(0, n.size() - 7);
      EXPECT_EQ((*o)->Find(n), nullptr) << n << " is still dense";
      const ModelTensor* packed = (*o)->Find(base + ".weight_packed");
      const ModelTensor* scale = (*o)->Find(base + ".weight_scale");
      const ModelTensor* shape = (*o)->Find(base + ".weight_shape");
      ASSERT_TRUE(packed && scale && shape) << base;
      const int64_t rows = t.info->shape[0], cols = t.info->shape[1];
      EXPECT_EQ(packed->info->shape, (std::vector<int64_t>{rows, cols / 8})) << base;
      EXPECT_EQ(scale->info->shape, (std::vector<int64_t>{rows, cols / 16})) << base;
    }
    EXPECT_GT(linears, 0);
    // Nothing beyond those: no new module names (a fused Linear stays one module).
    for (const ModelTensor& t : (*o)->tensors()) {
      std::string n = t.info->name;
      for (const char* suffix : {".weight_packed", ".weight_scale", ".weight_shape", ".weight_zero_point"})
        if (n.size() > strlen(suffix) && n.compare(n.size() - strlen(suffix), strlen(suffix), suffix) == 0)
          n = n.substr(0, n.size() - strlen(suffix)) + ".weight";
      EXPECT_NE((*in)->Find(n), nullptr) << t.info->name << " has no counterpart in the input";
    }
  }

  static bool EndsWithWeight(const std::string& n) {
    return n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0;
  }

  double Eval(const std::string& model) {
    Result r = Llmc("eval " + model + " --text " + (tmp_ / "eval.txt") + " --seq-len 32 --max-windows 4 --threads 2 --json");
    EXPECT_EQ(r.code, 0) << r.err;
    if (r.code != 0) return -1;
    return nlohmann::json::parse(r.out)["perplexity"].get<double>();
  }

  TempDir tmp_;
};

constexpr char kW4G16[] =
    "  ignore: [lm_head]\n  config_groups:\n    g:\n      targets: [Linear]\n"
    "      weights: {num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 16}\n";

TEST_P(FamilyCompressTest, DataFreeAndGptqRoundTrip) {
  std::ofstream(tmp_ / "rtn.yaml") << "QuantizationModifier:\n" << kW4G16;
  std::ofstream(tmp_ / "gptq.yaml") << "GPTQModifier:\n  block_size: 16\n" << kW4G16;
  const double base = Eval(tmp_ / "model");
  ASSERT_GT(base, 1.0);
  for (const char* algo : {"rtn", "gptq"}) {
    SCOPED_TRACE(algo);
    const std::string out = tmp_ / algo;
    std::string args = "compress " + (tmp_ / "model") + " " + out + " --recipe " + (tmp_ / (std::string(algo) + ".yaml")) +
                       " --threads 2 --json --no-progress";
    if (std::string(algo) == "gptq") args += " --dataset " + (tmp_ / "calib.txt") + " --num-samples 4 --seq-len 32";
    Result r = Llmc(args);
    ASSERT_EQ(r.code, 0) << r.err;
    ExpectCompressedLayout(out);
    auto cfg = nlohmann::json::parse(ReadAll(fs::path(out) / "config.json"));
    EXPECT_EQ(cfg["quantization_config"]["format"], "pack-quantized");
    EXPECT_EQ(cfg["architectures"][0], nlohmann::json::parse(ReadAll(tmp_ / "model/config.json"))["architectures"][0]);
    const double ppl = Eval(out);
    std::printf("%s %s: perplexity %.4f (bf16 %.4f)\n", GetParam(), algo, ppl, base);
    EXPECT_GT(ppl, 1.0);
    EXPECT_LT(ppl, 2.0 * base);  // random tiny weights at 4 bits: a bounded change, not a broken model
  }
}

// The smoothing algorithms with each family's default mappings (Gemma: pre_feedforward_layernorm; Phi-3: the fused
// Linears): the smoothed norms are written in the checkpoint's convention, so the output evaluates close to the input.
TEST_P(FamilyCompressTest, SmoothingRoundTrip) {
  std::ofstream(tmp_ / "awq.yaml") << "AWQModifier:\n"
                                   << "  ignore: [lm_head]\n  config_groups:\n    g:\n      targets: [Linear]\n"
                                   << "      weights: {num_bits: 4, type: int, symmetric: false, strategy: group, "
                                      "group_size: 16}\n";
  std::ofstream(tmp_ / "sq.yaml") << "SmoothQuantModifier:\n  smoothing_strength: 0.8\nGPTQModifier:\n  scheme: W8A8\n"
                                  << "  ignore: [lm_head]\n";
  const double base = Eval(tmp_ / "model");
  ASSERT_GT(base, 1.0);
  for (const char* algo : {"awq", "sq"}) {
    SCOPED_TRACE(algo);
    const std::string out = tmp_ / algo;
    Result r = Llmc("compress " + (tmp_ / "model") + " " + out + " --recipe " + (tmp_ / (std::string(algo) + ".yaml")) +
                    " --dataset " + (tmp_ / "calib.txt") + " --num-samples 4 --seq-len 32 --threads 2 --json --no-progress");
    ASSERT_EQ(r.code, 0) << r.err;
    auto in = ModelDir::Open(tmp_ / "model");
    auto o = ModelDir::Open(out);
    ASSERT_TRUE(in.ok() && o.ok());
    for (const ModelTensor& t : (*in)->tensors())  // every norm under its name and shape
      if (t.info->shape.size() == 1) {
        const ModelTensor* c = (*o)->Find(t.info->name);
        ASSERT_NE(c, nullptr) << t.info->name;
        EXPECT_EQ(c->info->shape, t.info->shape);
      }
    const double ppl = Eval(out);
    std::printf("%s %s: perplexity %.4f (bf16 %.4f)\n", GetParam(), algo, ppl, base);
    EXPECT_GT(ppl, 1.0);
    EXPECT_LT(ppl, 2.0 * base);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyCompressTest,
                         ::testing::Values("tiny-gemma2", "tiny-gemma3", "tiny-qwen2-swa", "tiny-phi3",
                                           "tiny-phi4mini"),
                         [](const auto& info) {
                           std::string n = std::string(info.param).substr(5);
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace llmc
