#include "engine/format/quant_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/format/quant_scheme.h"
#include "engine/format/recipe.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// ../shared beside the checkout (or $LLMC_SHARED_DIR) holds the compressed-tensors golden checkpoints.
fs::path SharedDir() {
  if (const char* env = std::getenv("LLMC_SHARED_DIR")) return env;
  return (fs::path(LLMC_SOURCE_DIR) / ".." / "shared").lexically_normal();
}

QuantScheme Preset(const std::string& name, std::vector<std::string> targets) {
  auto s = PresetScheme(name);
  EXPECT_TRUE(s.ok()) << s.status();
  QuantScheme out = s.ok() ? *s : QuantScheme{};
  out.targets = std::move(targets);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// TargetMatcher
// ---------------------------------------------------------------------------------------------------------------

TEST(TargetMatcherTest, KindsAreInferredFromTheText) {
  struct Case {
    const char* text;
    TargetMatcher::Kind kind;
  };
  const Case kCases[] = {{"Linear", TargetMatcher::Kind::kClass},
                         {"Embedding", TargetMatcher::Kind::kClass},
                         {"lm_head", TargetMatcher::Kind::kExact},
                         {"model.layers.0.mlp.down_proj", TargetMatcher::Kind::kExact},
                         {"re:.*mlp.*", TargetMatcher::Kind::kRegex},
                         {"re:Linear", TargetMatcher::Kind::kRegex}};
  for (const auto& c : kCases) {
    auto m = TargetMatcher::Create(c.text);
    ASSERT_TRUE(m.ok()) << c.text << ": " << m.status();
    EXPECT_EQ(m->kind(), c.kind) << c.text;
    EXPECT_EQ(m->text(), c.text);
  }
}

TEST(TargetMatcherTest, InvalidPatternsAreErrors) {
  auto empty = TargetMatcher::Create("");
  EXPECT_FALSE(empty.ok());
  auto bad = TargetMatcher::Create("re:model.(layers");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(bad.status()), HasSubstr("re:model.(layers"));
}

TEST(TargetMatcherTest, ExactMatchesTheWholeName) {
  auto m = TargetMatcher::Create("lm_head");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->Matches("lm_head", "Linear"));
  EXPECT_FALSE(m->Matches("model.lm_head", "Linear"));
  EXPECT_FALSE(m->Matches("lm_head2", "Linear"));
}

TEST(TargetMatcherTest, ClassMatchesTheClassNotTheName) {
  auto m = TargetMatcher::Create("Linear");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->Matches("model.layers.0.self_attn.q_proj", "Linear"));
  EXPECT_FALSE(m->Matches("Linear", "Embedding"));
  EXPECT_FALSE(m->Matches("model.embed_tokens", "Embedding"));
}

TEST(TargetMatcherTest, RegexIsAnchoredAtTheStartOnlyLikePythonReMatch) {
  auto mlp = TargetMatcher::Create("re:mlp");
  ASSERT_TRUE(mlp.ok());
  EXPECT_FALSE(mlp->Matches("model.layers.0.mlp.down_proj", "Linear"));  // re.match does not search
  EXPECT_TRUE(mlp->Matches("mlp.down_proj", "Linear"));                 // prefix is enough

  auto any_mlp = TargetMatcher::Create("re:.*mlp");
  ASSERT_TRUE(any_mlp.ok());
  EXPECT_TRUE(any_mlp->Matches("model.layers.0.mlp.down_proj", "Linear"));

  // Not anchored at the end: layers.1 also matches layers.10 and layers.1.*
  auto layer1 = TargetMatcher::Create("re:model.layers.1");
  ASSERT_TRUE(layer1.ok());
  EXPECT_TRUE(layer1->Matches("model.layers.1.mlp.up_proj", "Linear"));
  EXPECT_TRUE(layer1->Matches("model.layers.10.mlp.up_proj", "Linear"));
  EXPECT_FALSE(layer1->Matches("model.layers.2.mlp.up_proj", "Linear"));

  // `$` anchors the end when asked for.
  auto gate = TargetMatcher::Create("re:.*mlp.gate$");
  ASSERT_TRUE(gate.ok());
  EXPECT_TRUE(gate->Matches("model.layers.3.mlp.gate", "Linear"));
  EXPECT_FALSE(gate->Matches("model.layers.3.mlp.gate_proj", "Linear"));

  // Every alternative is anchored at the start, as in Python.
  auto alt = TargetMatcher::Create("re:foo|.*bar");
  ASSERT_TRUE(alt.ok());
  EXPECT_TRUE(alt->Matches("xbar", "Linear"));
  EXPECT_TRUE(alt->Matches("foo.x", "Linear"));
  EXPECT_FALSE(alt->Matches("xfoo", "Linear"));

  // The class is irrelevant for a regex.
  auto cls = TargetMatcher::Create("re:Linear");
  ASSERT_TRUE(cls.ok());
  EXPECT_FALSE(cls->Matches("model.layers.0.mlp.up_proj", "Linear"));
}

// ---------------------------------------------------------------------------------------------------------------
// QuantConfig matching
// ---------------------------------------------------------------------------------------------------------------

TEST(QuantConfigTest, ExactBeatsRegexBeatsClassWhateverTheGroupOrder) {
  // Groups listed from the weakest to the strongest matcher, then the reverse.
  for (bool reverse : {false, true}) {
    std::vector<std::pair<std::string, QuantScheme>> groups = {
        {"by_class", Preset("W4A16", {"Linear"})},
        {"by_regex", Preset("W8A16", {"re:.*down_proj"})},
        {"by_name", Preset("FP8_DYNAMIC", {"model.layers.0.mlp.down_proj"})}};
    if (reverse) std::reverse(groups.begin(), groups.end());
    auto c = QuantConfig::Create(groups, {});
    ASSERT_TRUE(c.ok()) << c.status();
    auto group_of = [&](const std::string& name) {
      int g = c->Match(name, "Linear");
      return g < 0 ? std::string("-") : c->groups()[g].name;
    };
    EXPECT_EQ(group_of("model.layers.0.mlp.down_proj"), "by_name") << reverse;
    EXPECT_EQ(group_of("model.layers.1.mlp.down_proj"), "by_regex") << reverse;
    EXPECT_EQ(group_of("model.layers.1.mlp.up_proj"), "by_class") << reverse;
    EXPECT_EQ(c->Match("model.embed_tokens", "Embedding"), -1);
  }
}

TEST(QuantConfigTest, SameKindTieGoesToTheFirstGroup) {
  auto c = QuantConfig::Create({{"first", Preset("W4A16", {"re:.*proj"})}, {"second", Preset("W8A16", {"re:.*up_proj"})}},
                               {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Match("model.layers.0.mlp.up_proj", "Linear"), 0);
}

TEST(QuantConfigTest, IgnoreWinsOverEveryTarget) {
  auto c = QuantConfig::Create({{"group_0", Preset("W4A16", {"Linear", "lm_head"})}}, {"lm_head", "re:.*mlp.gate$"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Match("lm_head", "Linear"), -1);
  EXPECT_TRUE(c->IsIgnored("lm_head", "Linear"));
  EXPECT_EQ(c->Match("model.layers.0.mlp.gate", "Linear"), -1);
  EXPECT_TRUE(c->IsIgnored("model.layers.0.mlp.gate", "Linear"));
  EXPECT_EQ(c->Match("model.layers.0.mlp.gate_proj", "Linear"), 0);
  EXPECT_FALSE(c->IsIgnored("model.layers.0.mlp.gate_proj", "Linear"));
  EXPECT_EQ(c->ignore(), (std::vector<std::string>{"lm_head", "re:.*mlp.gate$"}));
}

TEST(QuantConfigTest, IgnoreByClass) {
  auto c = QuantConfig::Create({{"group_0", Preset("W4A16", {"re:.*"})}}, {"Embedding"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Match("model.embed_tokens", "Embedding"), -1);
  EXPECT_EQ(c->Match("model.layers.0.mlp.up_proj", "Linear"), 0);
}

TEST(QuantConfigTest, CreateValidatesGroupsAndPatterns) {
  auto none = QuantConfig::Create({}, {});
  EXPECT_FALSE(none.ok());

  auto bad_target = QuantConfig::Create({{"group_3", Preset("W4A16", {"re:("})}}, {});
  ASSERT_FALSE(bad_target.ok());
  EXPECT_THAT(Msg(bad_target.status()), HasSubstr("group_3.targets"));

  auto bad_ignore = QuantConfig::Create({{"group_0", Preset("W4A16", {"Linear"})}}, {"re:[unclosed"});
  ASSERT_FALSE(bad_ignore.ok());
  EXPECT_THAT(Msg(bad_ignore.status()), HasSubstr("ignore"));
  EXPECT_THAT(Msg(bad_ignore.status()), HasSubstr("[unclosed"));

  QuantScheme s = Preset("W4A16", {"Linear"});
  s.weights->group_size.reset();  // strategy group without a group size
  auto bad_args = QuantConfig::Create({{"group_0", s}}, {});
  ASSERT_FALSE(bad_args.ok());
  EXPECT_THAT(Msg(bad_args.status()), HasSubstr("group_0.weights"));
  EXPECT_THAT(Msg(bad_args.status()), HasSubstr("group_size"));
}

TEST(QuantConfigTest, TopFormatIsMixedPrecisionWhenGroupsDiffer) {
  auto same = QuantConfig::Create({{"a", Preset("W4A16", {"re:.*mlp.*"})}, {"b", Preset("W8A16", {"Linear"})}}, {});
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->TopFormat(), "pack-quantized");
  auto mixed =
      QuantConfig::Create({{"a", Preset("W4A16", {"re:.*mlp.*"})}, {"b", Preset("FP8_DYNAMIC", {"Linear"})}}, {});
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->TopFormat(), "mixed-precision");
  json j = mixed->ToJson({"lm_head"});
  EXPECT_EQ(j["format"], "mixed-precision");
  EXPECT_EQ(j["config_groups"]["a"]["format"], "pack-quantized");
  EXPECT_EQ(j["config_groups"]["b"]["format"], "float-quantized");
}

TEST(QuantConfigTest, ExplicitGroupFormatIsKept) {
  QuantScheme s = Preset("FP8_DYNAMIC", {"Linear"});
  s.format = "naive-quantized";
  auto c = QuantConfig::Create({{"group_0", s}}, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->groups()[0].format, "naive-quantized");
}

TEST(QuantConfigTest, ToJsonListsTheIgnoredModulesGiven) {
  auto c = PresetConfig("W4A16", {"Linear"}, {"lm_head", "re:.*mlp.gate$"});
  ASSERT_TRUE(c.ok()) << c.status();
  json j = c->ToJson({"model.layers.0.mlp.gate", "lm_head"});
  EXPECT_EQ(j["ignore"], json({"model.layers.0.mlp.gate", "lm_head"}));
  EXPECT_EQ(j["quant_method"], "compressed-tensors");
  EXPECT_EQ(j["quantization_status"], "compressed");
  EXPECT_EQ(j["version"], kCompressedTensorsVersion);
}

// ---------------------------------------------------------------------------------------------------------------
// quantization_config against the compressed-tensors golden checkpoints
// ---------------------------------------------------------------------------------------------------------------

// All object keys of `j`, as dotted paths ("config_groups.group_0.weights.num_bits").
void KeyPaths(const json& j, const std::string& prefix, std::set<std::string>* out) {
  if (!j.is_object()) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string path = prefix.empty() ? it.key() : prefix + "." + it.key();
    out->insert(path);
    KeyPaths(it.value(), path, out);
  }
}

json GoldenQuantizationConfig(const std::string& ref_dir) {
  std::ifstream in(SharedDir() / "golden" / "ct" / ref_dir / "config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str())["quantization_config"];
}

TEST(QuantConfigGoldenTest, ToJsonKeySetEqualsGoldenW4A16) {
  if (!fs::exists(SharedDir() / "golden/ct/ref_W4A16/config.json"))
    GTEST_SKIP() << "no golden checkpoint at " << (SharedDir() / "golden/ct/ref_W4A16");
  json golden = GoldenQuantizationConfig("ref_W4A16");
  auto c = PresetConfig("W4A16", {"Linear"}, {"lm_head"});
  ASSERT_TRUE(c.ok()) << c.status();
  json ours = c->ToJson({"lm_head"});
  std::set<std::string> golden_keys, our_keys;
  KeyPaths(golden, "", &golden_keys);
  KeyPaths(ours, "", &our_keys);
  EXPECT_EQ(our_keys, golden_keys);
  // And the values: readers forbid extra keys, and a wrong value loads the wrong kernel.
  EXPECT_EQ(ours, golden) << "ours:   " << ours.dump() << "\ngolden: " << golden.dump();
}

class PresetGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PresetGoldenTest, ToJsonEqualsGolden) {
  const std::string ref = "ref_" + GetParam();
  if (!fs::exists(SharedDir() / "golden/ct" / ref / "config.json"))
    GTEST_SKIP() << "no golden checkpoint at " << (SharedDir() / "golden/ct" / ref);
  json golden = GoldenQuantizationConfig(ref);
  auto c = PresetConfig(GetParam(), {"Linear"}, {"lm_head"});
  ASSERT_TRUE(c.ok()) << c.status();
  json ours = c->ToJson(golden["ignore"].get<std::vector<std::string>>());
  std::set<std::string> golden_keys, our_keys;
  KeyPaths(golden, "", &golden_keys);
  KeyPaths(ours, "", &our_keys);
  EXPECT_EQ(our_keys, golden_keys);
  EXPECT_EQ(ours, golden) << "ours:   " << ours.dump() << "\ngolden: " << golden.dump();
}

INSTANTIATE_TEST_SUITE_P(Presets, PresetGoldenTest,
                         ::testing::Values("W4A16", "W4A16_ASYM", "W8A16", "W8A8", "FP8_DYNAMIC", "FP8_BLOCK",
                                           "NVFP4A16", "MXFP4A16"));

// ---------------------------------------------------------------------------------------------------------------
// Presets and QuantArgs (quant_scheme.h), exercised through the config they build
// ---------------------------------------------------------------------------------------------------------------

TEST(PresetTest, EveryPresetBuildsAValidConfigWithTheDocumentedFormat) {
  // FORMAT.md section 3.
  const std::map<std::string, std::string> kFormats = {
      {"W4A16", "pack-quantized"},        {"W4A16_ASYM", "pack-quantized"},    {"W8A16", "pack-quantized"},
      {"W8A8", "int-quantized"},          {"W4AFP8", "pack-quantized"},        {"FP8", "float-quantized"},
      {"FP8_DYNAMIC", "float-quantized"}, {"FP8_BLOCK", "float-quantized"},    {"NVFP4A16", "nvfp4-pack-quantized"},
      {"NVFP4", "nvfp4-pack-quantized"},  {"MXFP4A16", "mxfp4-pack-quantized"}, {"MXFP4", "mxfp4-pack-quantized"},
      {"MXFP8A16", "mxfp8-quantized"},    {"MXFP8", "mxfp8-quantized"}};
  for (const auto& p : Presets()) {
    auto c = PresetConfig(p.name, {"Linear"}, {"lm_head"});
    ASSERT_TRUE(c.ok()) << p.name << ": " << c.status();
    EXPECT_EQ(c->preset_name, p.name);
    auto it = kFormats.find(p.name);
    if (it != kFormats.end()) {
      EXPECT_EQ(c->TopFormat(), it->second) << p.name;
    }
  }
  for (const auto& [name, format] : kFormats) {
    EXPECT_TRUE(std::any_of(Presets().begin(), Presets().end(), [&](const PresetInfo& p) { return p.name == name; }))
        << name << " is documented but not listed";
  }
}

TEST(PresetTest, PresetNamesAreCaseInsensitiveAndInt8IsW8A8) {
  auto lower = PresetConfig("w4a16", {"Linear"}, {});
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ(lower->preset_name, "W4A16");
  auto int8 = PresetConfig("int8", {"Linear"}, {});
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_EQ(int8->preset_name, "W8A8");
  EXPECT_EQ(int8->TopFormat(), "int-quantized");
}

TEST(PresetTest, UnknownPresetListsTheKnownOnes) {
  auto s = PresetScheme("W5A16");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(Msg(s.status()), HasSubstr("W5A16"));
  EXPECT_THAT(Msg(s.status()), HasSubstr("W4A16"));
  EXPECT_THAT(Msg(s.status()), HasSubstr("NVFP4"));
}

TEST(QuantArgsTest, ToJsonFromJsonRoundTripsForEveryPreset) {
  for (const auto& p : Presets()) {
    auto s = PresetScheme(p.name);
    ASSERT_TRUE(s.ok()) << p.name;
    for (const auto* args : {s->weights ? &*s->weights : nullptr, s->input_activations ? &*s->input_activations : nullptr}) {
      if (!args) continue;
      json j = args->ToJson();
      auto back = QuantArgs::FromJson(j, p.name, /*is_weight=*/args == &*s->weights);
      ASSERT_TRUE(back.ok()) << p.name << ": " << back.status();
      EXPECT_EQ(back->ToJson(), j) << p.name;
    }
  }
}

TEST(QuantArgsTest, StrategyIsDerivedFromGroupSize) {
  auto group = QuantArgs::FromJson({{"num_bits", 4}, {"group_size", 64}}, "w", true);
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_EQ(group->strategy, Strategy::kGroup);
  EXPECT_EQ(group->group_size, 64);

  auto channel = QuantArgs::FromJson({{"num_bits", 8}, {"group_size", -1}}, "w", true);
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_EQ(channel->strategy, Strategy::kChannel);
  EXPECT_FALSE(channel->group_size.has_value());

  auto tensor = QuantArgs::FromJson({{"num_bits", 8}}, "w", true);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_EQ(tensor->strategy, Strategy::kTensor);
  EXPECT_EQ(tensor->observer, "memoryless_minmax");

  auto asym = QuantArgs::FromJson({{"num_bits", 4}, {"symmetric", false}, {"group_size", 128}}, "w", true);
  ASSERT_TRUE(asym.ok()) << asym.status();
  EXPECT_EQ(asym->zp_dtype, "torch.int8");
  EXPECT_EQ(asym->ToJson()["zp_dtype"], "torch.int8");
}

TEST(QuantArgsTest, UnknownKeyListsTheKnownKeys) {
  auto a = QuantArgs::FromJson({{"bits", 4}}, "recipe.yaml: group_0.weights", true);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(Msg(a.status()), HasSubstr("recipe.yaml: group_0.weights"));
  EXPECT_THAT(Msg(a.status()), HasSubstr("'bits'"));
  EXPECT_THAT(Msg(a.status()), HasSubstr("num_bits"));
  EXPECT_THAT(Msg(a.status()), HasSubstr("group_size"));
}

TEST(QuantArgsTest, BadValuesNameTheKey) {
  struct Case {
    json j;
    const char* key;
  };
  const Case kCases[] = {{{{"num_bits", 0}}, "num_bits"},
                         {{{"num_bits", 9}}, "num_bits"},
                         {{{"num_bits", "4"}}, "num_bits"},
                         {{{"type", "uint"}}, "type"},
                         {{{"symmetric", "yes"}}, "symmetric"},
                         {{{"group_size", 0}}, "group_size"},
                         {{{"strategy", "row"}}, "strategy"},
                         {{{"block_structure", {128}}}, "block_structure"},
                         {{{"dynamic", "sometimes"}}, "dynamic"},
                         {{{"actorder", "random"}}, "actorder"},
                         {{{"observer_kwargs", 3}}, "observer_kwargs"}};
  for (const auto& c : kCases) {
    auto a = QuantArgs::FromJson(c.j, "w", true);
    ASSERT_FALSE(a.ok()) << c.j.dump();
    EXPECT_THAT(Msg(a.status()), HasSubstr(std::string("w.") + c.key)) << c.j.dump();
  }
}

TEST(QuantArgsTest, ValidateRejectsCombinationsLlmcCannotProduce) {
  auto check = [](json j, const char* expected) {
    auto a = QuantArgs::FromJson(j, "g.weights", true);
    ASSERT_TRUE(a.ok()) << j.dump() << ": " << a.status();
    absl::Status s = a->Validate("g.weights");
    ASSERT_FALSE(s.ok()) << j.dump();
    EXPECT_THAT(Msg(s), HasSubstr("g.weights")) << j.dump();
    EXPECT_THAT(Msg(s), HasSubstr(expected)) << j.dump();
  };
  check({{"num_bits", 6}, {"type", "float"}}, "num_bits 8");
  check({{"num_bits", 8}, {"type", "float"}, {"symmetric", false}}, "symmetric");
  check({{"num_bits", 4}, {"strategy", "group"}}, "group_size");
  check({{"num_bits", 8}, {"strategy", "block"}}, "block_structure");
  check({{"num_bits", 4}, {"type", "float"}, {"strategy", "channel"}}, "fp4");
  check({{"num_bits", 8}, {"type", "float"}, {"group_size", 16}, {"scale_dtype", "uint8"}}, "group_size 32");
  check({{"num_bits", 4}, {"observer", "histogram"}}, "histogram");
  check({{"num_bits", 4}, {"observer", "mse"}, {"observer_kwargs", {{"norm", "two"}}}}, "norm");
}

// ---------------------------------------------------------------------------------------------------------------
// recipe.yaml written by QuantConfig::RecipeYaml parses back to the same config
// ---------------------------------------------------------------------------------------------------------------

TEST(QuantConfigRecipeYamlTest, PresetRecipeRoundTrips) {
  auto c = PresetConfig("W4A16", {"Linear"}, {"lm_head", "re:.*mlp.gate$"});
  ASSERT_TRUE(c.ok()) << c.status();
  std::string yaml = c->RecipeYaml();
  EXPECT_THAT(yaml, HasSubstr("QuantizationModifier"));
  EXPECT_THAT(yaml, HasSubstr("W4A16"));
  auto back = ParseRecipe(yaml, "recipe.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(back->preset_name, "W4A16");
  EXPECT_EQ(back->ignore(), c->ignore());
  EXPECT_EQ(back->ToJson({"lm_head"}), c->ToJson({"lm_head"})) << yaml;
}

TEST(QuantConfigRecipeYamlTest, ConfigGroupsRecipeRoundTrips) {
  QuantScheme mlp = Preset("W4A16_ASYM", {"re:.*mlp.*"});
  QuantScheme attn = Preset("FP8_DYNAMIC", {"re:.*self_attn.*", "model.layers.0.self_attn.o_proj"});
  QuantScheme mse = Preset("W8A16", {"re:.*lm_head"});
  mse.weights->observer = "mse";
  mse.weights->observer_kwargs = {{"maxshrink", 0.5}};
  auto c = QuantConfig::Create({{"group_0", mlp}, {"group_1", attn}, {"group_2", mse}}, {"model.embed_tokens"});
  ASSERT_TRUE(c.ok()) << c.status();
  std::string yaml = c->RecipeYaml();
  auto back = ParseRecipe(yaml, "recipe.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_TRUE(back->preset_name.empty());
  EXPECT_EQ(back->ToJson({}), c->ToJson({})) << yaml;
}

// A preset whose group a modifier's observer changed is no longer the preset: written as its config group.
TEST(QuantConfigRecipeYamlTest, PresetWithAnObserverOverrideIsWrittenAsItsGroup) {
  auto c = ParseRecipe("QuantizationModifier: {scheme: W8A8, ignore: [lm_head], observer: {weights: memoryless_mse}}\n",
                       "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  std::string yaml = c->RecipeYaml();
  EXPECT_THAT(yaml, HasSubstr("memoryless_mse"));
  auto back = ParseRecipe(yaml, "recipe.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(back->ToJson({}), c->ToJson({})) << yaml;
}

// RecipeYaml writes observer_kwargs values through json::dump(); integers must stay integers and floats floats.
TEST(QuantConfigRecipeYamlTest, ObserverKwargsKeepTheirValuesAndTypes) {
  QuantScheme s = Preset("W4A16", {"Linear"});
  s.weights->observer = "mse";
  s.weights->observer_kwargs = {{"norm", 2.4}, {"grid", 100}, {"maxshrink", 0.25}, {"patience", 25}};
  auto c = QuantConfig::Create({{"group_0", s}}, {"lm_head"});
  ASSERT_TRUE(c.ok()) << c.status();
  std::string yaml = c->RecipeYaml();
  auto back = ParseRecipe(yaml, "recipe.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  const nlohmann::json& kw = back->groups()[0].scheme.weights->observer_kwargs;
  EXPECT_EQ(kw, s.weights->observer_kwargs) << yaml;
  EXPECT_TRUE(kw["grid"].is_number_integer()) << yaml;
  EXPECT_TRUE(kw["norm"].is_number_float()) << yaml;
}

}  // namespace
}  // namespace llmc
