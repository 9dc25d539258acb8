#include "tests/support/temp_dir.h"
#include "engine/io/model_dir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/synthetic_model.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using ::llmc::testing::TempDir;

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::trunc) << text; }

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// Writes a safetensors file of U8 tensors, each filled with its index + 1.
void WriteShard(const std::string& path, const std::vector<std::pair<std::string, int64_t>>& tensors) {
  std::vector<TensorSpec> specs;
  for (const auto& [name, n] : tensors) specs.push_back({name, DType::kU8, {n}});
  auto w = SafetensorsWriter::Create(path, specs);
  ASSERT_TRUE(w.ok()) << w.status();
  for (size_t i = 0; i < tensors.size(); ++i) {
    std::vector<uint8_t> data(tensors[i].second, static_cast<uint8_t>(i + 1));
    ASSERT_TRUE((*w)->Write(static_cast<int>(i), 0, data).ok());
  }
  ASSERT_TRUE((*w)->Close().ok());
}

constexpr char kMinimalConfig[] = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1})";

// ---------------------------------------------------------------------------------------------------------------
// ParseModelConfig
// ---------------------------------------------------------------------------------------------------------------

TEST(ParseModelConfigTest, Transformers5RopeParameters) {
  // The shape transformers 5 writes (the golden tiny Llama's config.json).
  auto c = ParseModelConfig(R"({
    "architectures": ["LlamaForCausalLM"], "dtype": "bfloat16", "head_dim": 64, "hidden_size": 256,
    "intermediate_size": 512, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "pad_token_id": null,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "tie_word_embeddings": false, "transformers_version": "5.17.0", "vocab_size": 1000})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->architectures, ElementsAre("LlamaForCausalLM"));
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->vocab_size, 1000);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  ASSERT_TRUE(c->rope_scaling.is_object());
  EXPECT_EQ(c->rope_scaling["rope_type"], "default");
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_FALSE(c->has_quantization_config);
}

TEST(ParseModelConfigTest, RopeThetaInsideRopeParametersIsRead) {
  auto c = ParseModelConfig(R"({"rope_parameters": {"rope_theta": 1000000.0, "rope_type": "llama3", "factor": 8.0}})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling["rope_type"], "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling["factor"].get<double>(), 8.0);
}

TEST(ParseModelConfigTest, Transformers4RopeTheta) {
  auto c = ParseModelConfig(
      R"({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0}, "torch_dtype": "float16",
          "tie_word_embeddings": true})",
      "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling["factor"], 32.0);
  EXPECT_EQ(c->torch_dtype, "float16");
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(ParseModelConfigTest, IntegerRopeThetaIsAccepted) {
  auto c = ParseModelConfig(R"({"rope_theta": 500000})", "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
}

TEST(ParseModelConfigTest, DefaultsWhenKeysAreMissing) {
  auto c = ParseModelConfig(R"({"hidden_size": 4096, "num_attention_heads": 32, "rope_scaling": null})", "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);             // hidden / heads
  EXPECT_EQ(c->num_key_value_heads, 32);   // = heads (no GQA)
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_TRUE(c->rope_scaling.is_null());
  EXPECT_TRUE(c->architectures.empty());
  EXPECT_TRUE(c->torch_dtype.empty());
}

TEST(ParseModelConfigTest, DtypeWinsOverTorchDtype) {
  auto c = ParseModelConfig(R"({"dtype": "bfloat16", "torch_dtype": "float32"})", "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(ParseModelConfigTest, DetectsAnExistingQuantizationConfig) {
  auto q = ParseModelConfig(R"({"quantization_config": {"quant_method": "compressed-tensors"}})", "config.json");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->has_quantization_config);
  auto n = ParseModelConfig(R"({"quantization_config": null})", "config.json");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_FALSE(n->has_quantization_config);
}

struct BadConfigCase {
  std::string name;
  std::string json;
  std::string expected;
};

class BadConfigTest : public ::testing::TestWithParam<BadConfigCase> {};

TEST_P(BadConfigTest, IsInvalidArgumentNamingTheFileAndKey) {
  const auto& c = GetParam();
  auto r = ParseModelConfig(c.json, "/models/x/config.json");
  ASSERT_FALSE(r.ok()) << c.json;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()), HasSubstr("/models/x/config.json"));
  EXPECT_THAT(Msg(r.status()), HasSubstr(c.expected));
}

INSTANTIATE_TEST_SUITE_P(
    Configs, BadConfigTest,
    ::testing::Values(BadConfigCase{"Malformed", R"({"hidden_size": 8,)", "not valid JSON"},
                      BadConfigCase{"Empty", "", "not valid JSON"},
                      BadConfigCase{"NotAnObject", R"(["hidden_size", 8])", "JSON object"},
                      BadConfigCase{"HiddenSizeString", R"({"hidden_size": "4096"})", "'hidden_size'"},
                      BadConfigCase{"HiddenSizeFloat", R"({"hidden_size": 4096.5})", "'hidden_size'"},
                      BadConfigCase{"NegativeLayers", R"({"num_hidden_layers": -2})", "'num_hidden_layers'"},
                      BadConfigCase{"VocabBool", R"({"vocab_size": true})", "'vocab_size'"},
                      BadConfigCase{"HeadDimString", R"({"head_dim": "64"})", "'head_dim'"},
                      BadConfigCase{"RopeThetaString", R"({"rope_theta": "1e4"})", "'rope_theta'"},
                      BadConfigCase{"RopeParametersNotObject", R"({"rope_parameters": 10000.0})", "'rope_parameters'"},
                      BadConfigCase{"RopeThetaInParametersString", R"({"rope_parameters": {"rope_theta": "x"}})",
                                    "'rope_theta'"},
                      BadConfigCase{"RopeScalingString", R"({"rope_scaling": "linear"})", "'rope_scaling'"},
                      BadConfigCase{"EpsString", R"({"rms_norm_eps": "1e-6"})", "'rms_norm_eps'"},
                      BadConfigCase{"ArchitecturesString", R"({"architectures": "LlamaForCausalLM"})",
                                    "'architectures'"},
                      BadConfigCase{"ArchitecturesNumbers", R"({"architectures": [1]})", "'architectures'"},
                      BadConfigCase{"TieNotBool", R"({"tie_word_embeddings": "yes"})", "'tie_word_embeddings'"}),
    [](const ::testing::TestParamInfo<BadConfigCase>& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------------------------------
// ReadTextFile
// ---------------------------------------------------------------------------------------------------------------

TEST(ReadTextFileTest, ReadsWholeFileAndChecksSize) {
  TempDir dir;
  WriteText(dir / "a.txt", std::string("hello\0world", 11));
  auto t = ReadTextFile(dir / "a.txt");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, std::string("hello\0world", 11));
  auto big = ReadTextFile(dir / "a.txt", 10);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(Msg(big.status()), HasSubstr(dir / "a.txt"));
  auto missing = ReadTextFile(dir / "b.txt");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(missing.status()), HasSubstr(dir / "b.txt"));
}

// ---------------------------------------------------------------------------------------------------------------
// ModelDir::Open
// ---------------------------------------------------------------------------------------------------------------

TEST(ModelDirTest, SingleFileModel) {
  TempDir dir;
  WriteText(dir / "config.json", kMinimalConfig);
  WriteText(dir / "tokenizer.json", "{}");
  WriteText(dir / "generation_config.json", "{}");
  WriteText(dir / "notes.txt", "not carried");
  WriteShard(dir / "model.safetensors", {{"model.embed_tokens.weight", 6}, {"lm_head.weight", 10}});
  auto m = ModelDir::Open(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config().hidden_size, 8);
  EXPECT_EQ((*m)->config_json()["model_type"], "llama");
  EXPECT_THAT((*m)->shard_files(), ElementsAre("model.safetensors"));
  ASSERT_EQ((*m)->tensors().size(), 2u);
  EXPECT_EQ((*m)->tensors()[0].info->name, "model.embed_tokens.weight");
  EXPECT_EQ((*m)->tensors()[1].info->name, "lm_head.weight");
  EXPECT_EQ((*m)->total_tensor_bytes(), 16u);
  const ModelTensor* t = (*m)->Find("lm_head.weight");
  ASSERT_NE(t, nullptr);
  auto data = t->file->Data(*t->info);
  EXPECT_EQ(std::vector<uint8_t>(data.begin(), data.end()), std::vector<uint8_t>(10, 2));
  EXPECT_EQ((*m)->Find("model.norm.weight"), nullptr);
  EXPECT_THAT((*m)->auxiliary_files(), ::testing::UnorderedElementsAre("generation_config.json", "tokenizer.json"));
}

TEST(ModelDirTest, ShardedModelFollowsTheIndex) {
  TempDir dir;
  WriteText(dir / "config.json", kMinimalConfig);
  WriteShard(dir / "model-00001-of-00002.safetensors", {{"a", 4}, {"b", 2}, {"stale", 3}});
  WriteShard(dir / "model-00002-of-00002.safetensors", {{"c", 8}});
  WriteText(dir / "model.safetensors.index.json", R"({"metadata": {"total_size": 14}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  auto m = ModelDir::Open(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT((*m)->shard_files(), ElementsAre("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"));
  std::vector<std::string> names;
  for (const auto& t : (*m)->tensors()) names.push_back(t.info->name);
  EXPECT_THAT(names, ElementsAre("a", "b", "c"));  // "stale" is in a shard but not in the index: not the model's
  EXPECT_EQ((*m)->total_tensor_bytes(), 14u);
  EXPECT_EQ((*m)->Find("stale"), nullptr);
  ASSERT_NE((*m)->Find("c"), nullptr);
  EXPECT_EQ(fs::path((*m)->Find("c")->file->path()).filename(), "model-00002-of-00002.safetensors");
}

TEST(ModelDirTest, IndexPointingToAMissingTensor) {
  TempDir dir;
  WriteText(dir / "config.json", kMinimalConfig);
  WriteShard(dir / "model-00001-of-00001.safetensors", {{"a", 4}});
  WriteText(dir / "model.safetensors.index.json", R"({"weight_map": {
      "a": "model-00001-of-00001.safetensors", "ghost": "model-00001-of-00001.safetensors"}})");
  auto m = ModelDir::Open(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(m.status()), HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(Msg(m.status()), HasSubstr("'ghost'"));
}

TEST(ModelDirTest, IndexPointingToTheWrongShard) {
  TempDir dir;
  WriteText(dir / "config.json", kMinimalConfig);
  WriteShard(dir / "s1.safetensors", {{"a", 4}});
  WriteShard(dir / "s2.safetensors", {{"b", 4}});
  WriteText(dir / "model.safetensors.index.json", R"({"weight_map": {"a": "s2.safetensors", "b": "s2.safetensors"}})");
  auto m = ModelDir::Open(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(Msg(m.status()), HasSubstr("'a'"));
  EXPECT_THAT(Msg(m.status()), HasSubstr("s2.safetensors"));
}

TEST(ModelDirTest, IndexPointingToAMissingShardFile) {
  TempDir dir;
  WriteText(dir / "config.json", kMinimalConfig);
  WriteText(dir / "model.safetensors.index.json", R"({"weight_map": {"a": "model-00009-of-00009.safetensors"}})");
  auto m = ModelDir::Open(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(m.status()), HasSubstr("model-00009-of-00009.safetensors"));
}

TEST(ModelDirTest, IndexShardNamesMustBePlainFileNames) {
  for (const char* bad : {"../outside.safetensors", "sub/x.safetensors", "..", ""}) {
    TempDir dir;
    WriteText(dir / "config.json", kMinimalConfig);
    WriteText(dir / "model.safetensors.index.json",
              absl::StrCat(R"({"weight_map": {"a": ")", bad, R"("}})"));
    auto m = ModelDir::Open(dir.path());
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Msg(m.status()), HasSubstr("plain file name")) << bad;
  }
}

TEST(ModelDirTest, MalformedIndex) {
  for (const char* bad : {"not json", "[]", R"({"metadata": {}})", R"({"weight_map": ["a"]})",
                          R"({"weight_map": {"a": 5}})"}) {
    TempDir dir;
    WriteText(dir / "config.json", kMinimalConfig);
    WriteText(dir / "model.safetensors.index.json", bad);
    auto m = ModelDir::Open(dir.path());
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Msg(m.status()), HasSubstr("model.safetensors.index.json")) << bad;
  }
}

TEST(ModelDirTest, MissingConfig) {
  TempDir dir;
  WriteShard(dir / "model.safetensors", {{"a", 4}});
  auto m = ModelDir::Open(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(m.status()), HasSubstr(dir / "config.json"));
}

TEST(ModelDirTest, MalformedConfigNamesItsPath) {
  TempDir dir;
  WriteText(dir / "config.json", R"({"hidden_size": "big"})");
  WriteShard(dir / "model.safetensors", {{"a", 4}});
  auto m = ModelDir::Open(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(Msg(m.status()), HasSubstr(dir / "config.json"));
  EXPECT_THAT(Msg(m.status()), HasSubstr("'hidden_size'"));
}

TEST(ModelDirTest, NoWeights) {
  TempDir dir;
  WriteText(dir / "config.json", kMinimalConfig);
  WriteText(dir / "pytorch_model.bin", "pickle");
  auto m = ModelDir::Open(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(m.status()), HasSubstr("model.safetensors"));
}

TEST(ModelDirTest, CorruptShardNamesTheShard) {
  TempDir dir;
  WriteText(dir / "config.json", kMinimalConfig);
  WriteText(dir / "model.safetensors", "garbage");
  auto m = ModelDir::Open(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(Msg(m.status()), HasSubstr(dir / "model.safetensors"));
}

TEST(ModelDirTest, PathThatIsNotADirectory) {
  TempDir dir;
  auto missing = ModelDir::Open(dir / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(missing.status()), HasSubstr(dir / "nope"));
  WriteText(dir / "file", "x");
  auto file = ModelDir::Open(dir / "file");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(file.status()), HasSubstr(dir / "file"));
}

TEST(ModelDirTest, SyntheticShardedLlamaOpensInModuleOrder) {
  TempDir dir;
  SyntheticLlamaShape shape;  // tiny: hidden 256, intermediate 512, 2 layers, 4 heads, 2 kv heads, vocab 1000
  ASSERT_TRUE(WriteSyntheticLlama(dir.path(), shape, DType::kBF16, /*seed=*/3, /*max_shard_bytes=*/600'000).ok());
  ASSERT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  auto m = ModelDir::Open(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT((*m)->shard_files().size(), 1u);
  const ModelConfig& c = (*m)->config();
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.torch_dtype, "bfloat16");

  std::vector<std::string> expected = {"model.embed_tokens.weight"};
  for (int l = 0; l < 2; ++l) {
    for (const char* s : {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                          "mlp.down_proj"})
      expected.push_back(absl::StrCat("model.layers.", l, ".", s, ".weight"));
  }
  expected.push_back("model.norm.weight");
  expected.push_back("lm_head.weight");
  std::vector<std::string> names;
  uint64_t bytes = 0;
  for (const auto& t : (*m)->tensors()) {
    names.push_back(t.info->name);
    bytes += t.info->nbytes();
    EXPECT_EQ(t.info->dtype, DType::kBF16) << t.info->name;
  }
  EXPECT_EQ(names, expected);
  EXPECT_EQ((*m)->total_tensor_bytes(), bytes);
  const ModelTensor* k = (*m)->Find("model.layers.1.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->info->shape, (std::vector<int64_t>{128, 256}));
  EXPECT_THAT((*m)->auxiliary_files(), ElementsAre("generation_config.json"));
}

}  // namespace
}  // namespace llmc
