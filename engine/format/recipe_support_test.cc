// Recipe keys are applied or refused: observer overrides reach the groups and the config names the observer that
// runs; what llmc does not implement fails naming the key's path and what is supported.
#include "engine/format/recipe_support.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "engine/format/algorithms.h"
#include "engine/format/quant_config.h"

namespace llmc {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

absl::StatusOr<CompressionRecipe> Parse(const std::string& yaml) { return ParseCompressionRecipe(yaml, "r.yaml"); }

// The quantization_config of a recipe that must parse.
json Config(const std::string& yaml) {
  auto r = Parse(yaml);
  EXPECT_TRUE(r.ok()) << yaml << r.status();
  if (!r.ok() || !r->quant) return json();
  return r->quant->ToJson({});
}

// The recipe must fail with INVALID_ARGUMENT, naming the source and each of `parts`.
void ExpectRefused(const std::string& yaml, std::initializer_list<const char*> parts) {
  auto r = Parse(yaml);
  ASSERT_FALSE(r.ok()) << yaml;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << yaml << r.status();
  EXPECT_THAT(Msg(r.status()), HasSubstr("r.yaml")) << yaml;
  for (const char* p : parts) EXPECT_THAT(Msg(r.status()), HasSubstr(p)) << yaml;
}

// ---------------------------------------------------------------------------------------------------------------
// Observers
// ---------------------------------------------------------------------------------------------------------------

TEST(RecipeObserverTest, ModifierWeightObserverReachesEveryGroupOfTheModifier) {
  for (const char* mod : {"QuantizationModifier", "GPTQModifier", "AWQModifier"}) {
    json c = Config(std::string(mod) + ": {scheme: W4A16, ignore: [lm_head], weight_observer: mse}\n");
    EXPECT_EQ(c["config_groups"]["group_0"]["weights"]["observer"], "mse") << mod;
  }
  json two = Config(
      "QuantizationModifier:\n  weight_observer: memoryless_mse\n  config_groups:\n"
      "    a: {targets: ['re:.*mlp.*'], weights: {num_bits: 4, group_size: 128}}\n"
      "    b: {targets: ['re:.*self_attn.*'], weights: {num_bits: 8, type: float, strategy: channel}}\n");
  EXPECT_EQ(two["config_groups"]["a"]["weights"]["observer"], "memoryless_mse");
  EXPECT_EQ(two["config_groups"]["b"]["weights"]["observer"], "memoryless_mse");
  // The observer mapping, spelled as llm-compressor's docstring does (upper case).
  json d = Config("QuantizationModifier: {scheme: FP8, observer: {weights: MSE, input: static_minmax}}\n");
  EXPECT_EQ(d["config_groups"]["group_0"]["weights"]["observer"], "mse");
  EXPECT_EQ(d["config_groups"]["group_0"]["input_activations"]["observer"], "static_minmax");
  // Scheme-level observers are kept; weights without one say memoryless_minmax, as the library writes.
  json s = Config("QuantizationModifier:\n  config_groups:\n    g: {targets: [Linear], weights: {num_bits: 4, "
                  "group_size: 128, observer: minmax}}\n");
  EXPECT_EQ(s["config_groups"]["g"]["weights"]["observer"], "minmax");
  json n = Config("QuantizationModifier:\n  config_groups:\n    g: {targets: [Linear], weights: {num_bits: 4, "
                  "group_size: 128, observer: null}}\n");
  EXPECT_EQ(n["config_groups"]["g"]["weights"]["observer"], "memoryless_minmax");
}

TEST(RecipeObserverTest, OverridesApplyOnlyToTheirOwnModifiersGroups) {
  auto r = Parse(
      "AWQModifier: {mappings: [{smooth_layer: 're:.*input_layernorm', balance_layers: ['re:.*q_proj']}]}\n"
      "QuantizationModifier: {scheme: W4A16, weight_observer: mse}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->quant->groups()[0].scheme.weights->observer, "mse");
  ExpectRefused("AWQModifier: {weight_observer: mse}\nQuantizationModifier: {scheme: W4A16}\n",
                {"AWQModifier.weight_observer", "no config groups"});
}

TEST(RecipeObserverTest, StaticActivationsAndKvCacheSayStaticMinMax) {
  json fp8 = Config("QuantizationModifier: {scheme: FP8}\n");
  EXPECT_EQ(fp8["config_groups"]["group_0"]["input_activations"]["observer"], "static_minmax");
  json nv = Config("QuantizationModifier: {scheme: NVFP4}\n");
  EXPECT_EQ(nv["config_groups"]["group_0"]["input_activations"]["observer"], "static_minmax");
  json g = Config(
      "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n"
      "      weights: {num_bits: 8, type: float, strategy: tensor}\n"
      "      input_activations: {num_bits: 8, type: float, strategy: tensor, dynamic: false}\n"
      "  kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true}\n");
  EXPECT_EQ(g["config_groups"]["g"]["input_activations"]["observer"], "static_minmax");
  EXPECT_EQ(g["kv_cache_scheme"]["observer"], "static_minmax");
  json dyn = Config("QuantizationModifier: {scheme: W8A8}\n");
  EXPECT_TRUE(dyn["config_groups"]["group_0"]["input_activations"]["observer"].is_null());
}

TEST(RecipeObserverTest, ObserversLlmcDoesNotRunAreRefused) {
  ExpectRefused("QuantizationModifier: {scheme: NVFP4A16, weight_observer: mse}\n",
                {"QuantizationModifier.scheme.weights.observer", "int and fp8 weights"});
  ExpectRefused("QuantizationModifier: {scheme: NVFP4A16, weight_observer: imatrix_mse}\n",
                {"QuantizationModifier.scheme.weights.observer", "imatrix_mse", "int and fp8 weights"});
  ExpectRefused("QuantizationModifier: {scheme: FP8, weight_observer: imatrix_mse}\n",  // FP8: per-tensor weights
                {"imatrix_mse", "strategy channel or group", "tensor"});
  ExpectRefused("QuantizationModifier: {scheme: FP8, input_observer: mse}\n",
                {"input_activations.observer", "static_minmax"});
  ExpectRefused("QuantizationModifier: {scheme: FP8, input_observer: minmax}\n", {"moving average"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, input_observer: static_minmax}\n",
                {"QuantizationModifier.input_observer", "no group of this modifier has static input activations"});
  ExpectRefused("QuantizationModifier: {scheme: W8A8, input_observer: static_minmax}\n",
                {"QuantizationModifier.input_observer", "dynamic"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, output_observer: static_minmax}\n",
                {"QuantizationModifier.output_observer"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, weight_observer: mse, observer: {weights: mse}}\n",
                {"QuantizationModifier.observer", "not both"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, observer: {weight: mse}}\n", {"'weight'", "weights, input"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, observer: mse}\n", {"QuantizationModifier.observer", "mapping"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, weight_observer: 3}\n", {"weight_observer"});
  ExpectRefused(
      "QuantizationModifier:\n  scheme: W4A16\n  kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, "
      "dynamic: false, observer: mse}\n",
      {"kv_cache_scheme.observer", "the kv cache"});
}

// imatrix_mse (the library's IMatrixMSEObserver) runs for int and fp8 weights of channel or group strategy; it
// needs calibration data, and its kwargs follow its own defaults (grid 20, maxshrink 0.95: 20 steps).
TEST(RecipeObserverTest, ImatrixMseIsAcceptedWhereItRuns) {
  json c = Config("QuantizationModifier: {scheme: W4A16, ignore: [lm_head], weight_observer: imatrix_mse}\n");
  EXPECT_EQ(c["config_groups"]["group_0"]["weights"]["observer"], "imatrix_mse");
  auto r = Parse("GPTQModifier: {scheme: W8A8, ignore: [lm_head], weight_observer: IMATRIX_MSE}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->quant->groups()[0].scheme.weights->observer, "imatrix_mse");
  EXPECT_TRUE(r->NeedsCalibration());
  auto rtn = Parse("QuantizationModifier: {scheme: W4A16, weight_observer: imatrix_mse}\n");
  ASSERT_TRUE(rtn.ok());
  EXPECT_TRUE(rtn->NeedsCalibration());  // the channel statistics come from calibration
  const std::string head = "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n      weights: ";
  EXPECT_TRUE(Parse(head + "{num_bits: 4, group_size: 128, observer: imatrix_mse, observer_kwargs: {norm: 2.0, "
                           "patience: 20}}\n")
                  .ok());
  ExpectRefused(head + "{num_bits: 4, group_size: 128, observer: imatrix_mse, observer_kwargs: {patience: 5}}\n",
                {"observer_kwargs.patience", "imatrix_mse", "at least 20"});
  ExpectRefused(head + "{num_bits: 4, group_size: 128, observer: imatrix_mse, observer_kwargs: {strict: true}}\n",
                {"observer_kwargs", "strict"});
}

TEST(RecipeObserverTest, ObserverKwargsMustBeUsedByTheObserver) {
  const std::string head = "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n      weights: ";
  EXPECT_TRUE(Parse(head + "{num_bits: 4, group_size: 128, observer: mse, observer_kwargs: {norm: 2.0, grid: 50, "
                           "maxshrink: 0.5, patience: 25}}\n")
                  .ok());
  ExpectRefused(head + "{num_bits: 4, group_size: 128, observer_kwargs: {norm: 2.0}}\n",
                {"g.weights.observer_kwargs.norm", "mse"});
  ExpectRefused(head + "{num_bits: 4, group_size: 128, observer: mse, observer_kwargs: {patience: 5}}\n",
                {"observer_kwargs.patience", "at least 20"});
  ExpectRefused(head + "{num_bits: 4, group_size: 128, observer: mse, observer_kwargs: {averaging_constant: 0.1}}\n",
                {"observer_kwargs.averaging_constant", "observed once"});
  ExpectRefused(head + "{num_bits: 8, type: float, strategy: channel}\n      input_activations: {num_bits: 8, type: "
                       "float, strategy: token, dynamic: true, observer_kwargs: {norm: 2.0}}\n",
                {"input_activations.observer_kwargs.norm", "no observer"});
}

// ---------------------------------------------------------------------------------------------------------------
// Quantization arguments llmc does not produce
// ---------------------------------------------------------------------------------------------------------------

TEST(RecipeArgsTest, UnsupportedSettingsNameTheirKey) {
  const std::string head = "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n";
  struct Case {
    std::string group;
    std::vector<const char*> parts;
  };
  const Case kCases[] = {
      {"      weights: {num_bits: 4, group_size: 128, dynamic: true}\n", {"g.weights.dynamic", "offline"}},
      {"      weights: {num_bits: 8, strategy: token}\n", {"g.weights.strategy"}},
      {"      weights: {num_bits: 8, strategy: channel, group_size: 128}\n", {"g.weights.group_size", "group"}},
      {"      weights: {num_bits: 8, strategy: group, group_size: 128, block_structure: [128, 128]}\n",
       {"g.weights.block_structure"}},
      {"      weights: {num_bits: 4, group_size: 128, scale_dtype: torch.float16}\n",
       {"g.weights.scale_dtype", "model's dtype"}},
      {"      weights: {num_bits: 4, group_size: 128, symmetric: false, zp_dtype: torch.int32}\n",
       {"g.weights.zp_dtype", "torch.int8"}},
      {"      weights: {num_bits: 4, group_size: 128, zp_dtype: torch.int8}\n",
       {"g.weights.zp_dtype", "symmetric quantization has no zero point"}},
      {"      weights: {num_bits: 8, strategy: channel}\n"
       "      input_activations: {num_bits: 8, strategy: token, dynamic: true, observer: minmax}\n",
       {"g.input_activations.observer", "no observer"}},
      {"      input_activations: {num_bits: 8, type: float, strategy: token, dynamic: true}\n",
       {"g: a group without weights", "give the group weights"}},
      {"      weights: {num_bits: 8, type: float, strategy: tensor}\n"
       "      input_activations: {num_bits: 8, type: float, strategy: channel, dynamic: false}\n",
       {"g.input_activations.dynamic", "per-tensor"}},
      {"      weights: {num_bits: 8, strategy: channel}\n"
       "      input_activations: {num_bits: 8, strategy: tensor, symmetric: false, dynamic: false}\n",
       {"g.input_activations.dynamic", "asymmetric"}},
      {"      weights: {num_bits: 8, type: float, strategy: tensor}\n"
       "      input_activations: {num_bits: 8, type: float, strategy: tensor, dynamic: false, actorder: weight}\n",
       {"g.input_activations.actorder", "weights only"}},
      {"      weights: {num_bits: 8, type: float, strategy: tensor}\n"
       "      output_activations: {num_bits: 8, type: float, strategy: tensor, dynamic: false}\n",
       {"g.output_activations.dynamic", "static output activations are not supported", "output_scale"}},
      {"      weights: {num_bits: 8, type: float, strategy: tensor}\n"
       "      output_activations: {num_bits: 8, type: float, strategy: token, dynamic: false}\n",
       {"g.output_activations.strategy", "dynamic: true"}},
  };
  for (const auto& c : kCases) {
    auto r = Parse(head + c.group);
    ASSERT_FALSE(r.ok()) << c.group;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.group;
    for (const char* p : c.parts) EXPECT_THAT(Msg(r.status()), HasSubstr(p)) << c.group;
  }
  // Dynamic output activations are the reader's to apply; the config carries them.
  json dyn = Config(head + "      weights: {num_bits: 8, type: float, strategy: channel}\n"
                           "      output_activations: {num_bits: 8, type: float, strategy: token, dynamic: true}\n");
  EXPECT_EQ(dyn["config_groups"]["g"]["output_activations"]["strategy"], "token");
}

TEST(RecipeArgsTest, KvCacheSchemeIsFp8PerTensorStaticOnly) {
  const std::string head = "QuantizationModifier:\n  scheme: W4A16\n  kv_cache_scheme: ";
  for (const char* kv : {"{num_bits: 8, type: float, strategy: attn_head, dynamic: false}",
                         "{num_bits: 8, type: float, strategy: tensor, dynamic: true}",
                         "{num_bits: 8, type: int, strategy: tensor, dynamic: false}"})
    ExpectRefused(head + kv + "\n", {"QuantizationModifier.kv_cache_scheme", "fp8 per-tensor"});
  ExpectRefused(head + "{num_bits: 8, type: float, strategy: tensor, scale_dtype: torch.float16}\n",
                {"kv_cache_scheme.scale_dtype"});
  ExpectRefused(head + "{num_bits: 8, type: float, strategy: tensor, observer_kwargs: {norm: 2.0}}\n",
                {"kv_cache_scheme.observer_kwargs.norm"});
}

TEST(RecipeArgsTest, ActorderNeedsGptqAndAGroupStrategy) {
  const std::string groups =
      "  config_groups:\n    g:\n      targets: [Linear]\n      weights: {num_bits: 4, group_size: 128, "
      "actorder: weight}\n";
  ExpectRefused("QuantizationModifier:\n" + groups, {"QuantizationModifier.config_groups.g.weights.actorder", "GPTQ"});
  EXPECT_TRUE(Parse("GPTQModifier:\n" + groups).ok());
  ExpectRefused(
      "GPTQModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n      weights: {num_bits: 8, strategy: "
      "channel, actorder: weight}\n",
      {"g.weights.actorder", "strategy channel"});
}

// ---------------------------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------------------------

TEST(RecipeTargetsTest, AttentionAndOtherClassTargetsAreRefused) {
  ExpectRefused(
      "QuantizationModifier:\n  config_groups:\n    attn:\n      targets: [LlamaAttention]\n"
      "      weights: {num_bits: 8, type: float, strategy: tensor}\n"
      "      input_activations: {num_bits: 8, type: float, strategy: tensor, dynamic: false}\n",
      {"config_groups.attn.targets", "LlamaAttention", "attention quantization", "kv_cache_scheme"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, targets: [LlamaDecoderLayer]}\n",
                {"LlamaDecoderLayer", "Linear or Embedding"});
  ExpectRefused("QuantizationModifier: {scheme: {W4A16: [Qwen2Attention]}}\n", {"scheme.W4A16.targets", "attention"});
  EXPECT_TRUE(Parse("QuantizationModifier: {scheme: W4A16, targets: [Linear]}\n").ok());
}

TEST(RecipeTargetsTest, NarrowAttentionModuleTargetsAreRefusedAgainstTheModel) {
  std::set<std::string> modules;
  for (const char* m : {"model", "model.layers", "model.layers.0", "model.layers.0.self_attn",
                        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.mlp",
                        "model.layers.0.mlp.up_proj"})
    modules.insert(m);
  auto check = [&](const std::string& target) {
    auto r = Parse("QuantizationModifier:\n  config_groups:\n    g:\n      targets: ['" + target +
                   "']\n      weights: {num_bits: 8, type: float, strategy: tensor}\n");
    EXPECT_TRUE(r.ok()) << target << r.status();
    return r.ok() ? r->quant->CheckAttentionTargets(modules) : absl::OkStatus();
  };
  for (const char* t : {"re:.*self_attn$", "model.layers.0.self_attn", "re:.*self_attn$|.*mlp$"}) {
    absl::Status s = check(t);
    ASSERT_FALSE(s.ok()) << t;
    EXPECT_THAT(Msg(s), HasSubstr("model.layers.0.self_attn")) << t;
    EXPECT_THAT(Msg(s), HasSubstr("attention quantization")) << t;
  }
  // These match the projections (or the attention and its children): Linear targets, as in compressed-tensors.
  for (const char* t : {"re:.*self_attn.*", "re:.*self_attn\\..*_proj$", "re:.*q_proj$", "re:model.*"})
    EXPECT_TRUE(check(t).ok()) << t;
}

TEST(RecipeTargetsTest, ModifierTargetsApplyToTheSchemeOnly) {
  ExpectRefused(
      "QuantizationModifier:\n  targets: ['re:.*mlp.*']\n  config_groups:\n    g: {targets: [Linear], weights: "
      "{num_bits: 4, group_size: 128}}\n",
      {"QuantizationModifier.targets", "scheme"});
  // llm-compressor's own saved recipes carry the default targets beside config_groups.
  EXPECT_TRUE(Parse("QuantizationModifier:\n  targets: [Linear]\n  config_groups:\n    g: {targets: [Linear], "
                    "weights: {num_bits: 4, group_size: 128}}\n")
                  .ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Modifiers, structure and values
// ---------------------------------------------------------------------------------------------------------------

TEST(RecipeModifiersTest, RefusedArgumentsSayWhatIsSupported) {
  ExpectRefused("AWQModifier: {scheme: W4A16, duo_scaling: sometimes}\n", {"AWQModifier.duo_scaling", "true, false or both"});
  ExpectRefused("AWQModifier: {scheme: W4A16, duo_scaling: both, n_grid: 3}\n",
                {"AWQModifier.n_grid", "at least 4 with duo_scaling: both"});
  {
    auto both = Parse("AWQModifier: {scheme: W4A16, duo_scaling: both, n_grid: 4}\n");
    ASSERT_TRUE(both.ok()) << both.status();
    EXPECT_TRUE(both->awq->duo_scaling && both->awq->duo_scaling_both);
  }
  ExpectRefused("GPTQModifier: {scheme: W4A16, block_size: 12.5}\n", {"GPTQModifier.block_size", "integer"});
  ExpectRefused("AWQModifier: {scheme: W4A16, n_grid: 2.5}\n", {"AWQModifier.n_grid", "integer"});
  ExpectRefused("AWQModifier: {scheme: W4A16, n_grid: 2}\n", {"AWQModifier.n_grid", "at least 3 with duo_scaling"});
  ExpectRefused("AWQModifier: {scheme: W4A16, duo_scaling: false, n_grid: 1}\n", {"AWQModifier.n_grid"});
  ExpectRefused("GPTQModifier: {scheme: W4A16, offload_hessians: maybe}\n", {"GPTQModifier.offload_hessians"});
  ExpectRefused("GPTQModifier: {scheme: W4A16, bypass_divisibility_checks: true}\n",
                {"'bypass_divisibility_checks'", "block_size"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, frequency: 1}\n", {"'frequency'"});
  ExpectRefused("QuantizationModifier: {scheme: W4A16, start: soon}\n", {"QuantizationModifier.start"});
  EXPECT_TRUE(Parse("QuantizationModifier: {scheme: W4A16, index: 0, group: quant, start: -1, end: null, update: 1}\n").ok());
  ExpectRefused("QuantizationModifier: {scheme: W4A16, ignore: [lm_head, 3]}\n", {"QuantizationModifier.ignore", "3"});
  ExpectRefused("SmoothQuantModifier: {mappings: [[[LlamaAttention], 're:.*input_layernorm']]}\nGPTQModifier: {scheme: W8A8}\n",
                {"SmoothQuantModifier.mappings[0]", "class name"});
  ExpectRefused("SmoothQuantModifier: {ignore: [Linear]}\nGPTQModifier: {scheme: W8A8}\n",
                {"SmoothQuantModifier.ignore", "class name"});
  ExpectRefused(
      "AWQModifier:\n  scheme: W4A16\n  mappings: [{smooth_layer: 're:.*input_layernorm', balance_layers: "
      "['re:.*q_proj'], activation_hook_target: mlp}]\n",
      {"AWQModifier.mappings[0].activation_hook_target"});
  ExpectRefused(
      "AWQModifier:\n  scheme: W4A16\n  mappings: [{smooth: 're:.*input_layernorm', balance_layers: ['re:.*q_proj']}]\n",
      {"AWQModifier.mappings[0]", "'smooth'"});
  ExpectRefused("SparseGPTModifier: {sparsity: 0.5, targets: [LlamaMLP]}\n", {"SparseGPTModifier.targets", "LlamaMLP"});
  EXPECT_TRUE(Parse("SparseGPTModifier: {sparsity: 0.5, targets: [Linear, 're:.*mlp.*']}\n").ok());
  ExpectRefused("QuantizationModifier: {scheme: W4A16}\nGPTQModifier: {scheme: W8A8, targets: ['re:.*mlp.*']}\n",
                {"config groups come from GPTQModifier and QuantizationModifier", "define all groups in GPTQModifier"});
  // A QuantizationModifier that only adds the kv cache scheme beside GPTQ's groups is fine.
  EXPECT_TRUE(Parse("GPTQModifier: {scheme: W4A16}\nQuantizationModifier: {kv_cache_scheme: {num_bits: 8, type: float, "
                    "strategy: tensor, dynamic: false}}\n")
                  .ok());
}

TEST(RecipeStructureTest, MisspelledModifiersAndRepeatedKeysAreRefused) {
  ExpectRefused("quant_stage:\n  quant_modifiers:\n    GPTQModifer: {scheme: W4A16}\n",
                {"GPTQModifer", "unknown modifier", "GPTQModifier"});
  ExpectRefused("quant_stage:\n  quant_modifiers:\n    SmoothQuant: {smoothing_strength: 0.8}\n    GPTQModifier: "
                "{scheme: W8A8}\n",
                {"SmoothQuant", "unknown modifier"});
  auto dup = Parse("QuantizationModifier:\n  scheme: W4A16\n  ignore: [lm_head]\n  ignore: [model.layers.0.mlp.up_proj]\n");
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(Msg(dup.status()), HasSubstr("'ignore' appears twice"));
  EXPECT_THAT(Msg(dup.status()), HasSubstr("line 4"));
  // Stage metadata is structure, as in llm-compressor.
  EXPECT_TRUE(Parse("version: 1\nquant_stage:\n  run_type: oneshot\n  quant_modifiers:\n    QuantizationModifier: "
                    "{scheme: W4A16}\n")
                  .ok());
}

TEST(RecipeRegistryTest, EveryArgumentHasHelpAndNoEffectOnesSayWhy) {
  std::set<std::string> no_effect;
  for (const auto& a : Algorithms())
    for (const auto& x : a.args) {
      EXPECT_FALSE(x.help.empty()) << a.modifier << "." << x.name;
      if (!x.no_effect.empty()) no_effect.insert(a.modifier + "." + x.name);
    }
  EXPECT_EQ(no_effect, (std::set<std::string>{"GPTQModifier.offload_hessians", "AWQModifier.offload_device",
                                              "SmoothQuantModifier.num_calibration_steps",
                                              "SparseGPTModifier.sequential_update"}));
  for (const auto& x : CommonModifierArgs()) EXPECT_FALSE(x.no_effect.empty()) << x.name;
}

}  // namespace
}  // namespace llmc
