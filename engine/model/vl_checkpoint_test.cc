// Vision-language checkpoints read for their text decoder (engine/io/checkpoint_layout.h): the layouts of the
// tiny Qwen2.5-VL, Mistral 3 and Gemma 3 checkpoints, the same weights under transformers 5's in-memory names,
// Qwen2-VL's multimodal rope on text, what is refused, and the logits against transformers (VlParityTest).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/io/checkpoint_layout.h"
#include "engine/model/causal_lm.h"
#include "engine/model/cpu_ops.h"
#include "engine/model/model_test_util.h"
#include "engine/model/vl_test_util.h"
#include "tests/support/temp_dir.h"

namespace llmc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
using testing_util::CopyCheckpoint;
using testing_util::TestDataDir;

std::unique_ptr<CausalLm> Open(const std::string& dir) {
  auto lm = CausalLm::Open(dir, {.threads = 2});
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? std::move(*lm) : nullptr;
}

// Logits of the reference inputs of the tiny checkpoint `name` (each sequence on its own: they differ in
// length), concatenated.
std::vector<float> ReferenceLogits(const CausalLm& lm, const std::string& name) {
  json ref = testing_util::ReadJson(TestDataDir() + "/" + name + "/reference.json");
  std::vector<float> all;
  for (const auto& s : ref["input_ids"]) {
    std::vector<int32_t> ids = s.get<std::vector<int32_t>>();
    auto logits = lm.Forward(ids, 1, static_cast<int64_t>(ids.size()));
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    all.insert(all.end(), logits->begin(), logits->end());
  }
  return all;
}

double Rms(const float* x, int64_t n) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  return std::sqrt(ss / n);
}

// The text decoder against transformers 5.17's fp32 CPU forward of the whole VL model on input_ids alone
// (reference.json): next-token log-probs, last-position logits and the RMS of every hidden state, with the
// tolerances of the causal LM families (causal_lm_test.cc: same bf16 weights, both sides fp32).
class VlParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(VlParityTest, MatchesTransformersFp32OnText) {
  const std::string dir = TestDataDir() + "/" + GetParam();
  auto lm = Open(dir);
  ASSERT_NE(lm, nullptr);
  json ref = testing_util::ReadJson(dir + "/reference.json");
  ASSERT_FALSE(ref.is_discarded());
  const int64_t V = lm->spec().vocab_size;
  ASSERT_EQ(ref["input_ids"].size(), 2u);
  for (size_t s = 0; s < ref["input_ids"].size(); ++s) {
    std::vector<int32_t> ids = ref["input_ids"][s].get<std::vector<int32_t>>();
    const int64_t T = static_cast<int64_t>(ids.size());
    std::map<int, std::vector<double>> rms;
    auto logits = lm->Forward(ids, 1, T, [&](int i, const HiddenStates& x) {
      for (int64_t t = 0; t < x.tokens(); ++t) rms[i].push_back(Rms(x.row(t), x.hidden));
    });
    ASSERT_TRUE(logits.ok()) << logits.status();
    const auto& want = ref["next_token_logprobs"][s];
    ASSERT_EQ(want.size(), static_cast<size_t>(T - 1));
    for (int64_t t = 0; t + 1 < T; ++t)
      EXPECT_NEAR(-TokenNll(logits->data() + t * V, V, ids[t + 1]), want[t].get<double>(), 1e-4)
          << "seq " << s << " t " << t;
    const auto& last = ref["last_logits"][s];
    ASSERT_EQ(last.size(), static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v)
      EXPECT_NEAR((*logits)[(T - 1) * V + v], last[v].get<double>(), 1e-4 * (1 + std::fabs(last[v].get<double>())));
    const auto& hrms = ref["hidden_state_rms"][s];
    ASSERT_EQ(hrms.size(), rms.size());
    for (size_t i = 0; i < hrms.size(); ++i)
      for (int64_t t = 0; t < T; ++t)
        EXPECT_NEAR(rms[i][t], hrms[i][t].get<double>(), 1e-5 * (1 + hrms[i][t].get<double>()))
            << "seq " << s << " hidden state " << i << " t " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(VisionLanguage, VlParityTest,
                         ::testing::Values("tiny-qwen25vl", "tiny-mistral3", "tiny-gemma3vl"),
                         [](const auto& info) { return info.param.substr(5); });

TEST(VlCheckpointTest, Qwen25VlIsAQwen2DecoderUnderModelWithVisualKeptApart) {
  auto lm = Open(TestDataDir() + "/tiny-qwen25vl");
  ASSERT_NE(lm, nullptr);
  const ModelSpec& s = lm->spec();
  EXPECT_STREQ(s.arch->name, "Qwen2ForCausalLM");
  EXPECT_TRUE(s.layout.multimodal);
  EXPECT_EQ(s.layout.architecture, "Qwen2_5_VLForConditionalGeneration");
  EXPECT_EQ(s.layout.text_model_type, "qwen2_5_vl_text");
  EXPECT_EQ(s.layout.decoder_prefix, "model.");
  EXPECT_EQ(s.layout.lm_head, "lm_head");
  EXPECT_THAT(s.layout.other_parts, ElementsAre("visual"));
  EXPECT_FALSE(s.tie_word_embeddings);
  EXPECT_TRUE(s.qkv_bias);
  EXPECT_EQ(s.hidden_size, 64);
  EXPECT_EQ(s.num_layers, 2);
  EXPECT_EQ(s.num_kv_heads, 2);
  // mrope_section [2, 3, 3] over head_dim 16: resolved to plain rope with the text theta.
  EXPECT_EQ(s.rope.type, RopeSpec::Type::kDefault);
  EXPECT_EQ(s.rope.theta, 1000000.0);
  EXPECT_FALSE(s.layout.text_config["rope_parameters"].contains("mrope_section"));
  EXPECT_THAT(s.layout.IgnorePatterns(true), ElementsAre("re:.*visual.*", "re:.*lm_head"));
  EXPECT_TRUE(s.layout.IsTextTensor("model.layers.0.mlp.up_proj.weight"));
  EXPECT_TRUE(s.layout.IsTextTensor("lm_head.weight"));
  EXPECT_FALSE(s.layout.IsTextTensor("visual.merger.mlp.0.weight"));
}

TEST(VlCheckpointTest, Mistral3TiesLmHeadByTheWrappersFlag) {
  // text_config says tie_word_embeddings false, the wrapper true; transformers ties (no lm_head.weight is saved)
  // and the logits match its forward (causal_lm_test).
  auto lm = Open(TestDataDir() + "/tiny-mistral3");
  ASSERT_NE(lm, nullptr);
  const ModelSpec& s = lm->spec();
  EXPECT_STREQ(s.arch->name, "MistralForCausalLM");
  EXPECT_EQ(s.layout.text_model_type, "mistral");
  EXPECT_EQ(s.layout.decoder_prefix, "language_model.model.");
  EXPECT_EQ(s.layout.lm_head, "language_model.lm_head");
  EXPECT_THAT(s.layout.other_parts, ElementsAre("multi_modal_projector", "vision_tower"));
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_EQ(s.head_dim, 16);
  EXPECT_EQ(s.sliding_window, 4096);
  EXPECT_EQ(lm->loader().StorageOf("language_model.model.layers.0.mlp.down_proj"), "dense");
}

TEST(VlCheckpointTest, Gemma3VlRunsItsGemma3TextDecoder) {
  // Gemma 3's text decoder under language_model.model., with everything Gemma 3 text has (sandwich and q/k norms,
  // scaled embeddings, local rope on sliding layers) read from text_config; the logits are VlParityTest's.
  auto lm = Open(TestDataDir() + "/tiny-gemma3vl");
  ASSERT_NE(lm, nullptr);
  const ModelSpec& s = lm->spec();
  EXPECT_STREQ(s.arch->name, "Gemma3ForCausalLM");
  EXPECT_TRUE(s.layout.multimodal);
  EXPECT_EQ(s.layout.architecture, "Gemma3ForConditionalGeneration");
  EXPECT_EQ(s.layout.text_model_type, "gemma3_text");
  EXPECT_EQ(s.layout.decoder_prefix, "language_model.model.");
  EXPECT_EQ(s.layout.lm_head, "language_model.lm_head");
  EXPECT_THAT(s.layout.other_parts, ElementsAre("multi_modal_projector", "vision_tower"));
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_TRUE(s.sandwich_norms);
  EXPECT_TRUE(s.qk_norm);
  EXPECT_EQ(s.norm_offset, 1.0f);
  EXPECT_EQ(s.embedding_scale, 8.0f);  // sqrt(64)
  EXPECT_FLOAT_EQ(s.attention_scale, 1.0f / std::sqrt(24.0f));  // query_pre_attn_scalar
  EXPECT_TRUE(s.local_rope);
  EXPECT_EQ(s.rope_local.theta, 10000.0);
  EXPECT_EQ(s.sliding_window, 8);
  // The wrapper's dtype is the model's: text_config's own "float32" is not what transformers loads it in.
  EXPECT_EQ(s.layout.text_config["dtype"], "bfloat16");
  EXPECT_EQ(lm->loader().StorageOf("language_model.model.layers.1.self_attn.q_proj"), "dense");
}

TEST(VlCheckpointTest, Llama4VlRunsItsLlama4TextDecoder) {
  // The tiny Llama 4 text model under the hub's Llama4ForConditionalGeneration names and config: the same decoder
  // (fused experts, interleaved rope, L2 q/k norm), so the same logits bit for bit.
  llmc::testing::TempDir tmp;
  const std::string dst = tmp.path() + "/m";
  ASSERT_TRUE(testing_util::WrapAsLlama4Vl(TestDataDir() + "/tiny-llama4text", dst).ok());
  auto text = Open(TestDataDir() + "/tiny-llama4text");
  auto vl = Open(dst);
  ASSERT_NE(text, nullptr);
  ASSERT_NE(vl, nullptr);
  const ModelSpec& s = vl->spec();
  EXPECT_STREQ(s.arch->name, "Llama4ForCausalLM");
  EXPECT_TRUE(s.layout.multimodal);
  EXPECT_EQ(s.layout.text_model_type, "llama4_text");
  EXPECT_EQ(s.layout.decoder_prefix, "language_model.model.");
  EXPECT_EQ(s.layout.lm_head, "language_model.lm_head");
  EXPECT_TRUE(s.rope_interleaved && s.l2_qk_norm);
  EXPECT_EQ(s.moe.style, MoeStyle::kLlama4);
  std::vector<float> a = ReferenceLogits(*text, "tiny-llama4text"), b = ReferenceLogits(*vl, "tiny-llama4text");
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
}

TEST(VlCheckpointTest, TextDecoderOutsideTheRuntimeIsRefusedNamingIt) {
  // A Llava over Gemma 1: the layout resolves (data-free compression needs nothing more), the runtime refuses.
  llmc::testing::TempDir tmp;
  const std::string dst = tmp.path() + "/m";
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-gemma3vl", dst, nullptr, [](json* c) {
                (*c)["architectures"] = {"LlavaForConditionalGeneration"};
                (*c)["text_config"]["model_type"] = "gemma";
              }).ok());
  auto dir = ModelDir::Open(dst);
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto layout = ResolveCheckpointLayout(**dir);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->text_architecture, "GemmaForCausalLM");
  EXPECT_EQ(layout->decoder_prefix, "language_model.model.");
  auto lm = CausalLm::Open(dst);
  ASSERT_FALSE(lm.ok());
  EXPECT_EQ(lm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(lm.status().message(), HasSubstr("LlavaForConditionalGeneration: its text decoder GemmaForCausalLM "
                                               "(text_config.model_type 'gemma') is not supported"));
  EXPECT_THAT(lm.status().message(), HasSubstr("supported text decoders: LlamaForCausalLM"));
}

class VlLayoutTest : public ::testing::TestWithParam<std::string> {};

// transformers >= 4.52 keeps (and its llm-compressor outputs save) the decoder under model.language_model. and the
// vision parts under model.: the same weights under those names give the same logits, bit for bit.
TEST_P(VlLayoutTest, Transformers5NamesGiveTheSameLogits) {
  const std::string name = GetParam();
  llmc::testing::TempDir tmp;
  const std::string dst = tmp.path() + "/m";
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/" + name, dst, testing_util::ToTransformers5Layout).ok());
  auto a = Open(TestDataDir() + "/" + name);
  auto b = Open(dst);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->spec().layout.decoder_prefix, "model.language_model.");
  EXPECT_EQ(b->spec().layout.lm_head, "lm_head");
  for (const auto& p : b->spec().layout.other_parts) EXPECT_NE(p, "language_model");
  std::vector<float> la = ReferenceLogits(*a, name), lb = ReferenceLogits(*b, name);
  ASSERT_FALSE(la.empty());
  EXPECT_EQ(la, lb);
}

INSTANTIATE_TEST_SUITE_P(VisionLanguage, VlLayoutTest,
                         ::testing::Values("tiny-qwen25vl", "tiny-mistral3", "tiny-gemma3vl"),
                         [](const auto& info) { return info.param.substr(5); });

TEST(VlCheckpointTest, QwenVlMropeTypeIsPlainRopeOnText) {
  // Qwen2-VL's configs of transformers 4 write rope_scaling {"type": "mrope", "mrope_section": [...]}.
  llmc::testing::TempDir tmp;
  const std::string dst = tmp.path() + "/m";
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-qwen25vl", dst, nullptr, [](json* c) {
                (*c)["architectures"] = {"Qwen2VLForConditionalGeneration"};
                json& t = (*c)["text_config"];
                t.erase("rope_parameters");
                t["model_type"] = "qwen2_vl_text";
                t["rope_theta"] = 1000000.0;
                t["rope_scaling"] = {{"type", "mrope"}, {"mrope_section", {2, 3, 3}}};
              }).ok());
  auto a = Open(TestDataDir() + "/tiny-qwen25vl");
  auto b = Open(dst);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->spec().rope.type, RopeSpec::Type::kDefault);
  EXPECT_EQ(ReferenceLogits(*a, "tiny-qwen25vl"), ReferenceLogits(*b, "tiny-qwen25vl"));
}

TEST(VlCheckpointTest, QwenVlConfigWithTextKeysAtTheTopLevel) {
  // Qwen2.5-VL's config.json as transformers 4 wrote it: no text_config, the decoder's keys beside vision_config.
  llmc::testing::TempDir tmp;
  const std::string dst = tmp.path() + "/m";
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-qwen25vl", dst, nullptr, [](json* c) {
                json text = (*c)["text_config"];
                c->erase("text_config");
                for (auto it = text.begin(); it != text.end(); ++it)
                  if (it.key() != "model_type" && it.key() != "dtype") (*c)[it.key()] = it.value();
                (*c)["rope_scaling"] = {{"type", "mrope"}, {"mrope_section", {2, 3, 3}}};
                c->erase("rope_parameters");
                (*c)["rope_theta"] = 1000000.0;
              }).ok());
  auto a = Open(TestDataDir() + "/tiny-qwen25vl");
  auto b = Open(dst);
  ASSERT_NE(b, nullptr);
  EXPECT_STREQ(b->spec().arch->name, "Qwen2ForCausalLM");
  EXPECT_EQ(b->spec().layout.text_model_type, "qwen2_5_vl_text");
  EXPECT_EQ(ReferenceLogits(*a, "tiny-qwen25vl"), ReferenceLogits(*b, "tiny-qwen25vl"));
}

TEST(VlCheckpointTest, MropeSectionMustCoverTheRotaryFrequencies) {
  llmc::testing::TempDir tmp;
  const std::string dst = tmp.path() + "/m";
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-qwen25vl", dst, nullptr, [](json* c) {
                (*c)["text_config"]["rope_parameters"]["mrope_section"] = {2, 3, 4};
              }).ok());
  auto lm = CausalLm::Open(dst);
  ASSERT_FALSE(lm.ok());
  EXPECT_THAT(lm.status().message(),
              HasSubstr("text_config.rope_parameters.mrope_section sums to 9 but head_dim 16 has 8 rotary frequencies"));
}

TEST(VlCheckpointTest, UnknownVisionLanguageArchitectureIsRefused) {
  llmc::testing::TempDir tmp;
  const std::string dst = tmp.path() + "/m";
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-qwen25vl", dst, nullptr, [](json* c) {
                (*c)["architectures"] = {"FooVLForConditionalGeneration"};
              }).ok());
  auto lm = CausalLm::Open(dst);
  ASSERT_FALSE(lm.ok());
  EXPECT_THAT(lm.status().message(), HasSubstr("architecture 'FooVLForConditionalGeneration' has a vision_config but "
                                               "is not a vision-language architecture llmc reads; supported: "
                                               "Qwen2_5_VLForConditionalGeneration"));
}

TEST(VlCheckpointTest, UnknownTextFamilyAndMissingTextConfigAreRefused) {
  llmc::testing::TempDir tmp;
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-mistral3", tmp.path() + "/a", nullptr, [](json* c) {
                (*c)["text_config"]["model_type"] = "bloom";
              }).ok());
  auto a = CausalLm::Open(tmp.path() + "/a");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("Mistral3ForConditionalGeneration: text_config.model_type 'bloom' is "
                                              "not a text decoder family llmc knows"));
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-mistral3", tmp.path() + "/b", nullptr,
                             [](json* c) { c->erase("text_config"); })
                  .ok());
  auto b = CausalLm::Open(tmp.path() + "/b");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("Mistral3ForConditionalGeneration needs a 'text_config' object"));
  // Tensors in no layout llmc knows.
  ASSERT_TRUE(CopyCheckpoint(TestDataDir() + "/tiny-mistral3", tmp.path() + "/c",
                             [](const std::string& n) { return "wrapped." + n; })
                  .ok());
  auto c = CausalLm::Open(tmp.path() + "/c");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("has no text decoder embeddings (looked for "
                                              "model.language_model.embed_tokens.weight"));
}

TEST(VlCheckpointTest, CausalLmLayoutIsThePlainOne) {
  auto lm = Open(TestDataDir() + "/tiny-llama3");
  ASSERT_NE(lm, nullptr);
  EXPECT_FALSE(lm->spec().layout.multimodal);
  EXPECT_EQ(lm->spec().layout.LayerPrefix(3), "model.layers.3.");
  EXPECT_EQ(lm->spec().layout.EmbedTensor(), "model.embed_tokens.weight");
  EXPECT_TRUE(lm->spec().layout.IgnorePatterns(true).empty());
}

}  // namespace
}  // namespace llmc
