#include "engine/model/architecture.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>

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
  EXPECT_THAT(names, HasSubstr("Gemma2ForCausalLM"));
  EXPECT_THAT(names, HasSubstr("Gemma3ForCausalLM"));
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
  j["sliding_window"] = 4096;  // ignored without use_sliding_window, as transformers does
  EXPECT_EQ(Resolve(j)->sliding_window, 0);
}

TEST(ArchitectureTest, Qwen2PerLayerSlidingWindows) {
  json j = Base("Qwen2ForCausalLM");
  j["num_hidden_layers"] = 4;
  j["use_sliding_window"] = true;
  j["sliding_window"] = 16;
  j["max_window_layers"] = 2;  // layers 2 and 3 slide
  auto s = Resolve(j);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->window(0), 0);
  EXPECT_EQ(s->window(1), 0);
  EXPECT_EQ(s->window(2), 16);
  EXPECT_EQ(s->window(3), 16);
  j["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "sliding_attention"};
  s = Resolve(j);  // explicit layer_types win over max_window_layers
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->window(0), 16);
  EXPECT_EQ(s->window(2), 0);
  j.erase("layer_types");
  j.erase("max_window_layers");  // transformers' default: 28, so no layer of 4 slides
  EXPECT_EQ(Resolve(j)->window(3), 0);
  j["layer_types"] = {"sliding_attention", "chunked_attention", "full_attention", "full_attention"};
  auto bad = Resolve(j);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("layer_types[1] \"chunked_attention\""));
  j["layer_types"] = {"sliding_attention"};
  EXPECT_THAT(std::string(Resolve(j).status().message()), HasSubstr("'layer_types' must list one type per layer"));
}

TEST(ArchitectureTest, GemmaFamilies) {
  json g2 = Base("Gemma2ForCausalLM");
  g2["num_hidden_layers"] = 4;
  g2["head_dim"] = 32;
  g2["sliding_window"] = 4096;
  g2["query_pre_attn_scalar"] = 144;
  g2["attn_logit_softcapping"] = 50.0;
  g2["final_logit_softcapping"] = 30.0;
  g2["hidden_activation"] = "gelu_pytorch_tanh";
  g2["hidden_size"] = 3584;  // sqrt = 59.866..., 59.75 in bf16
  g2["dtype"] = "bfloat16";
  auto s = Resolve(g2);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->window(0), 4096);  // every other layer, starting with a sliding one
  EXPECT_EQ(s->window(1), 0);
  EXPECT_EQ(s->window(2), 4096);
  EXPECT_EQ(s->embedding_scale, 59.75f);
  EXPECT_FLOAT_EQ(s->softmax_scale(), 1.0f / 12.0f);
  EXPECT_EQ(s->attention_softcap, 50.0f);
  EXPECT_EQ(s->final_softcap, 30.0f);
  EXPECT_EQ(s->activation, Activation::kGeluTanh);
  EXPECT_FALSE(s->qkv_bias || s->o_bias);
  g2["attention_bias"] = true;  // transformers' Gemma attention: q/k/v/o biases
  EXPECT_TRUE(Resolve(g2)->qkv_bias && Resolve(g2)->o_bias);
  g2["hidden_activation"] = "gelu";
  EXPECT_THAT(std::string(Resolve(g2).status().message()), HasSubstr("hidden_activation 'gelu'"));

  json g3 = Base("Gemma3ForCausalLM");  // the transformers 4 spelling of the two ropes
  g3["num_hidden_layers"] = 7;
  g3["sliding_window"] = 512;
  g3["sliding_window_pattern"] = 6;
  g3["rope_theta"] = 1000000.0;
  g3["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  g3["rope_local_base_freq"] = 10000.0;
  s = Resolve(g3);
  ASSERT_TRUE(s.ok()) << s.status();
  for (int i = 0; i < 7; ++i) EXPECT_EQ(s->window(i), i == 5 ? 0 : 512) << i;  // every 6th layer is global
  EXPECT_EQ(s->activation, Activation::kGeluTanh);  // the family's default
  EXPECT_EQ(s->rope.type, RopeSpec::Type::kLinear);
  EXPECT_EQ(s->rope.theta, 1000000.0);
  EXPECT_EQ(s->rope_local.theta, 10000.0);
  EXPECT_EQ(&s->rope_for(0), &s->rope_local);
  EXPECT_EQ(&s->rope_for(5), &s->rope);
  EXPECT_FLOAT_EQ(s->softmax_scale(), 1.0f / 16.0f);  // no query_pre_attn_scalar: transformers' default 256
  json nowin = g3;  // no window: no layer slides, but sliding layers keep the local rope
  nowin["sliding_window"] = nullptr;
  auto nw = Resolve(nowin);
  ASSERT_TRUE(nw.ok()) << nw.status();
  EXPECT_EQ(nw->window(0), 0);
  EXPECT_EQ(&nw->rope_for(0), &nw->rope_local);
  g3["use_bidirectional_attention"] = true;
  EXPECT_THAT(std::string(Resolve(g3).status().message()), HasSubstr("use_bidirectional_attention"));
  g3.erase("use_bidirectional_attention");
  g3["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 8.0}};
  EXPECT_THAT(std::string(Resolve(g3).status().message()), HasSubstr("rope type 'yarn'"));
  json v5 = Base("Gemma3ForCausalLM");
  v5["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 1e6}}},
                           {"chunked_attention", {{"rope_type", "default"}}}};
  EXPECT_THAT(std::string(Resolve(v5).status().message()), HasSubstr("rope_parameters.chunked_attention"));
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

TEST(ArchitectureTest, PhiLongropeAndPartialRotary) {
  json j = Base("Phi3ForCausalLM");  // head_dim 16
  j["max_position_embeddings"] = 131072;
  j["original_max_position_embeddings"] = 4096;
  j["partial_rotary_factor"] = 0.75;
  j["rope_scaling"] = {{"rope_type", "longrope"},
                       {"short_factor", {1.0, 1.0, 1.0, 1.0, 1.0, 1.0}},
                       {"long_factor", {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}}};
  auto s = Resolve(j);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->fused_projections);
  EXPECT_EQ(s->rotary_dim(), 12);
  EXPECT_EQ(s->rope.original_max_position_embeddings, 4096);
  EXPECT_NEAR(s->rope.attention_factor, std::sqrt(1 + std::log(32.0) / std::log(4096.0)), 1e-12);
  EXPECT_FALSE(s->rope.UsesLongFactors(4096));
  EXPECT_TRUE(s->rope.UsesLongFactors(4097));
  j["rope_scaling"]["attention_factor"] = 1.25;  // given: used as is
  EXPECT_EQ(Resolve(j)->rope.attention_factor, 1.25);
  j["sliding_window"] = 2047;  // Phi-3-mini: every layer
  EXPECT_EQ(Resolve(j)->window(1), 2047);
  j["rope_scaling"]["long_factor"] = {1.0, 2.0};
  EXPECT_THAT(std::string(Resolve(j).status().message()), HasSubstr("must have 6 entries"));
  json odd = Base("Phi3ForCausalLM");
  odd["partial_rotary_factor"] = 0.3;  // int(16 * 0.3) = 4.8 -> 4: fine; 0.35 -> 5: odd
  EXPECT_EQ(Resolve(odd)->rotary_dim(), 4);
  odd["partial_rotary_factor"] = 0.35;
  EXPECT_THAT(std::string(Resolve(odd).status().message()), HasSubstr("it must be even"));
  // longrope and partial rotary belong to Phi-3 here; elsewhere they are refused naming the key.
  json llama = Base("LlamaForCausalLM");
  llama["rope_scaling"] = j["rope_scaling"];
  EXPECT_THAT(std::string(Resolve(llama).status().message()), HasSubstr("'longrope'"));
  json gemma = Base("Gemma2ForCausalLM");
  gemma["partial_rotary_factor"] = 0.5;
  EXPECT_THAT(std::string(Resolve(gemma).status().message()), HasSubstr("partial_rotary_factor"));
}

// Llama4TextConfig's keys and defaults: every fourth layer without rope (full attention), the others chunked;
// MoE layers from moe_layers or interleave_moe_layer_step; the dense MLP from intermediate_size_mlp.
TEST(ArchitectureTest, Llama4TextLayersAndDefaults) {
  json j = Base("Llama4ForCausalLM");
  j["num_hidden_layers"] = 8;
  j["num_local_experts"] = 4;
  j["num_experts_per_tok"] = 1;
  j["intermediate_size"] = 32;
  j["intermediate_size_mlp"] = 80;
  j["interleave_moe_layer_step"] = 2;
  j["rope_theta"] = 500000.0;
  auto s = Resolve(j);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->rope_interleaved);
  EXPECT_TRUE(s->l2_qk_norm);
  EXPECT_EQ(s->mlp_prefix, "feed_forward.");
  EXPECT_EQ(s->intermediate_size, 80);
  EXPECT_EQ(s->moe.style, MoeStyle::kLlama4);
  EXPECT_EQ(s->moe.expert_intermediate, 32);
  EXPECT_EQ(s->moe.shared_intermediate, 32);
  EXPECT_EQ(s->attention_chunk, 8192);
  for (int l = 0; l < 8; ++l) {
    EXPECT_EQ(s->moe.IsSparse(l), l % 2 == 1) << l;
    EXPECT_EQ(s->uses_rope(l), (l + 1) % 4 != 0) << l;
    EXPECT_EQ(s->chunk(l), s->uses_rope(l) ? 8192 : 0) << l;
  }
  // Temperature tuning on the no-rope layers only, from position floor_scale - 1 on.
  EXPECT_EQ(s->query_temperature(3, 8190), 1.0f);
  EXPECT_NEAR(s->query_temperature(3, 8191), std::log1p(1.0) * 0.1 + 1.0, 1e-6);
  EXPECT_NEAR(s->query_temperature(3, 3 * 8192), std::log1p(3.0) * 0.1 + 1.0, 1e-6);
  EXPECT_EQ(s->query_temperature(0, 3 * 8192), 1.0f);
  json k = j;
  k["moe_layers"] = {0, 5};
  k["no_rope_layers"] = {1, 1, 0, 1, 1, 1, 1, 0};
  k["attn_temperature_tuning"] = false;
  k["use_qk_norm"] = false;
  k["attention_chunk_size"] = 64;
  s = Resolve(k);
  ASSERT_TRUE(s.ok()) << s.status();
  for (int l = 0; l < 8; ++l) EXPECT_EQ(s->moe.IsSparse(l), l == 0 || l == 5) << l;
  EXPECT_FALSE(s->uses_rope(2));
  EXPECT_TRUE(s->uses_rope(3));
  EXPECT_EQ(s->chunk(3), 64);
  EXPECT_EQ(s->chunk(2), 0);
  EXPECT_FALSE(s->l2_qk_norm);
  EXPECT_EQ(s->query_temperature(2, 100000), 1.0f);
  k["attn_temperature_tuning"] = 4;  // as some hub configs write it: true
  s = Resolve(k);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT(s->query_temperature(2, 100000), 1.0f);
  k["attn_temperature_tuning"] = "yes";
  EXPECT_THAT(std::string(Resolve(k).status().message()), HasSubstr("attn_temperature_tuning"));
  // Malformed keys are refused by name.
  for (auto [key, value, what] : {std::tuple<const char*, json, const char*>{"no_rope_layers", json{1, 0}, "no_rope_layers"},
                                  {"no_rope_layers", json{1, 1, 2, 1, 1, 1, 1, 1}, "no_rope_layers[2]"},
                                  {"moe_layers", json{9}, "moe_layers: 9"},
                                  {"layer_types", json(std::vector<std::string>(8, "sliding_attention")), "layer_types[0]"},
                                  {"attention_chunk_size", json(0), "attention_chunk_size"},
                                  {"floor_scale", json(-1), "floor_scale"}}) {
    json bad = j;
    bad[key] = value;
    auto r = Resolve(bad);
    ASSERT_FALSE(r.ok()) << key;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(what));
  }
  json yarn = j;
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_FALSE(Resolve(yarn).ok());
}

}  // namespace
}  // namespace llmc
