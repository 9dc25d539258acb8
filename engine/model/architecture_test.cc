#include "engine/model/architecture.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace llmc {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

absl::StatusOr<ModelSpec> Resolve(const json& j) {
  std::string text = j.dump();
  auto c = ParseModelConfig(text, "test/config.json");
  if (!c.ok()) return c.status();
  return ResolveModelSpec(*c, j, "test/config.json");
}

json Base(const char* arch) {
  return {{"architectures", {arch}},  {"hidden_size", 64},        {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"intermediate_size", 96},
          {"vocab_size", 100},        {"rms_norm_eps", 1e-5}};
}

TEST(ArchitectureTest, RegistryListsTheArchitectures) {
  const std::string names = SupportedArchitectureNames();
  EXPECT_THAT(names, HasSubstr("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"));
  for (const char* moe : {"Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "MixtralForCausalLM"})
    EXPECT_THAT(names, HasSubstr(moe));
  for (const auto& a : SupportedArchitectures()) {
    auto found = FindArchitecture(a.name);
    ASSERT_TRUE(found.ok());
    EXPECT_EQ(*found, &a);
  }
}

TEST(ArchitectureTest, UnknownArchitectureNamesItAndListsSupported) {
  auto r = FindArchitecture("GPT2LMHeadModel");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("'GPT2LMHeadModel' is not supported"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("LlamaForCausalLM, MistralForCausalLM"));
  json j = Base("DeepseekV3ForCausalLM");
  auto s = Resolve(j);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("test/config.json"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("DeepseekV3ForCausalLM"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("Qwen3ForCausalLM"));
  json none = Base("LlamaForCausalLM");
  none.erase("architectures");
  EXPECT_THAT(std::string(Resolve(none).status().message()), HasSubstr("'architectures' is missing"));
}

TEST(ArchitectureTest, LlamaDefaults) {
  auto s = Resolve(Base("LlamaForCausalLM"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->head_dim, 16);
  EXPECT_EQ(s->q_size(), 64);
  EXPECT_EQ(s->kv_size(), 32);
  EXPECT_FALSE(s->qkv_bias || s->o_bias || s->mlp_bias || s->qk_norm);
  EXPECT_EQ(s->sliding_window, 0);
  EXPECT_EQ(s->rope.type, RopeSpec::Type::kDefault);
  EXPECT_EQ(s->rope.theta, 10000.0);
}

TEST(ArchitectureTest, LlamaBiasesFollowConfigKeys) {
  json j = Base("LlamaForCausalLM");
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  auto s = Resolve(j);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->qkv_bias && s->o_bias && s->mlp_bias);
}

TEST(ArchitectureTest, Qwen2HasQkvBiasOnly) {
  json j = Base("Qwen2ForCausalLM");
  j["attention_bias"] = true;  // not a Qwen2 key: ignored, as transformers does
  auto s = Resolve(j);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->qkv_bias);
  EXPECT_FALSE(s->o_bias || s->mlp_bias || s->qk_norm);
  j["use_sliding_window"] = true;
  auto w = Resolve(j);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("use_sliding_window"));
}

TEST(ArchitectureTest, Qwen3HasQkNormAndExplicitHeadDim) {
  json j = Base("Qwen3ForCausalLM");
  j["head_dim"] = 32;  // not hidden / heads
  auto s = Resolve(j);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->qk_norm);
  EXPECT_EQ(s->head_dim, 32);
  EXPECT_EQ(s->q_size(), 128);
  EXPECT_EQ(s->kv_size(), 64);
  EXPECT_FALSE(s->qkv_bias);
}

TEST(ArchitectureTest, MistralSlidingWindow) {
  json j = Base("MistralForCausalLM");
  j["sliding_window"] = 4096;
  auto s = Resolve(j);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->sliding_window, 4096);
  j["sliding_window"] = nullptr;
  EXPECT_EQ(Resolve(j)->sliding_window, 0);
  j["sliding_window"] = -3;
  EXPECT_FALSE(Resolve(j).ok());
}

TEST(ArchitectureTest, Llama3RopeScalingInBothSpellings) {
  json rope = {{"rope_type", "llama3"},
               {"factor", 8.0},
               {"low_freq_factor", 1.0},
               {"high_freq_factor", 4.0},
               {"original_max_position_embeddings", 8192}};
  json legacy = Base("LlamaForCausalLM");  // transformers 4: rope_theta + rope_scaling
  legacy["rope_theta"] = 500000.0;
  legacy["rope_scaling"] = rope;
  json v5 = Base("LlamaForCausalLM");  // transformers 5: rope_parameters holds both
  rope["rope_theta"] = 500000.0;
  v5["rope_parameters"] = rope;
  for (const json& j : {legacy, v5}) {
    auto s = Resolve(j);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->rope.type, RopeSpec::Type::kLlama3);
    EXPECT_EQ(s->rope.theta, 500000.0);
    EXPECT_EQ(s->rope.factor, 8.0);
    EXPECT_EQ(s->rope.low_freq_factor, 1.0);
    EXPECT_EQ(s->rope.high_freq_factor, 4.0);
    EXPECT_EQ(s->rope.original_max_position_embeddings, 8192);
  }
  json old_key = Base("LlamaForCausalLM");
  old_key["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_EQ(Resolve(old_key)->rope.type, RopeSpec::Type::kLinear);
}

TEST(ArchitectureTest, RejectsWhatTheRuntimeCannotRun) {
  struct Case {
    const char* key;
    json value;
    const char* message;
  };
  const Case cases[] = {
      {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}, "rope type 'yarn' is not supported"},
      {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}, "needs 'low_freq_factor'"},
      {"num_key_value_heads", 3, "not a multiple of num_key_value_heads"},
      {"head_dim", 15, "must be even"},
      {"hidden_act", "gelu", "hidden_act 'gelu'"},
      {"partial_rotary_factor", 0.5, "partial_rotary_factor"},
      {"intermediate_size", 0, "'intermediate_size' must be a positive integer"},
  };
  for (const auto& c : cases) {
    json j = Base("LlamaForCausalLM");
    j[c.key] = c.value;
    auto s = Resolve(j);
    ASSERT_FALSE(s.ok()) << c.key;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(c.message)) << c.key;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("test/config.json")) << c.key;
  }
}

}  // namespace
}  // namespace llmc
