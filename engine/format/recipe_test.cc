#include "engine/format/recipe.h"

#include "engine/format/algorithms.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace llmc {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// The index of the group whose resolved format is `format`, or -1.
int GroupWithFormat(const QuantConfig& c, const std::string& format) {
  for (size_t i = 0; i < c.groups().size(); ++i)
    if (c.groups()[i].format == format) return static_cast<int>(i);
  return -1;
}

// ---------------------------------------------------------------------------------------------------------------
// YamlToJson
// ---------------------------------------------------------------------------------------------------------------

TEST(YamlToJsonTest, ScalarsAreTypedAsYaml12Core) {
  auto j = YamlToJson(R"(
int: 42
neg: -7
float: 1.5
exp: 1e3
bool_true: true
bool_false: False
null_word: null
tilde: ~
empty:
quoted_int: "123"
single_quoted: 'true'
plain: abc
yes_is_a_string: yes
version: 1.2.3
list: [1, x, 2.5]
nested: {a: {b: [true]}}
)",
                      "r.yaml");
  ASSERT_TRUE(j.ok()) << j.status();
  const json& v = *j;
  EXPECT_EQ(v["int"], 42);
  EXPECT_TRUE(v["int"].is_number_integer());
  EXPECT_EQ(v["neg"], -7);
  EXPECT_TRUE(v["float"].is_number_float());
  EXPECT_DOUBLE_EQ(v["float"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(v["exp"].get<double>(), 1000.0);
  EXPECT_EQ(v["bool_true"], true);
  EXPECT_EQ(v["bool_false"], false);
  EXPECT_TRUE(v["null_word"].is_null());
  EXPECT_TRUE(v["tilde"].is_null());
  EXPECT_TRUE(v["empty"].is_null());
  EXPECT_EQ(v["quoted_int"], "123");
  EXPECT_EQ(v["single_quoted"], "true");
  EXPECT_EQ(v["plain"], "abc");
  EXPECT_EQ(v["yes_is_a_string"], "yes");  // YAML 1.1's yes/no booleans are strings in 1.2
  EXPECT_EQ(v["version"], "1.2.3");
  EXPECT_EQ(v["list"], json({1, "x", 2.5}));
  EXPECT_EQ(v["nested"]["a"]["b"][0], true);
}

TEST(YamlToJsonTest, InvalidYamlNamesTheSourceAndLine) {
  auto j = YamlToJson("a: 1\nb: [1, 2\nc: 3\n", "recipes/bad.yaml");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(j.status()), HasSubstr("recipes/bad.yaml"));
  EXPECT_THAT(Msg(j.status()), HasSubstr("line"));
}

TEST(YamlToJsonTest, DeepNestingIsAnErrorNotACrash) {
  std::string deep = "a: " + std::string(100, '[') + std::string(100, ']') + "\n";
  auto j = YamlToJson(deep, "deep.yaml");
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(Msg(j.status()), HasSubstr("deep.yaml"));
  EXPECT_THAT(Msg(j.status()), HasSubstr("nesting"));
}

// The "billion laughs" recipe: nine levels of aliases, each repeating the one before ten times (10^9 values from
// about 500 bytes). yaml-cpp keeps one node per anchor; the expansion is refused at the node budget, fast.
std::string BillionLaughs() {
  std::string y = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'i'; ++c) {
    y += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) y += std::string(i ? ", *" : "*") + prev;
    y += "]\n";
    prev = c;
  }
  return y + "default_stage: {default_modifiers: {QuantizationModifier: {targets: [Linear], scheme: W4A16, ignore: *i}}}\n";
}

TEST(YamlToJsonTest, NestedAliasesAreBoundedByTheNodeBudget) {
  auto j = YamlToJson(BillionLaughs(), "laughs.yaml");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(j.status()), HasSubstr("laughs.yaml"));
  EXPECT_THAT(Msg(j.status()), HasSubstr(std::to_string(kMaxRecipeNodes)));
  auto r = ParseRecipe(BillionLaughs(), "laughs.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // A few aliases within the budget still work.
  auto ok = YamlToJson("a: &a [1, 2]\nb: [*a, *a]\n", "small.yaml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)["b"].dump(), "[[1,2],[1,2]]");
}

TEST(YamlToJsonTest, OversizedRecipeIsRefusedBeforeParsing) {
  std::string big = "a: \"" + std::string(kMaxRecipeBytes, 'x') + "\"\n";
  auto j = YamlToJson(big, "big.yaml");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(j.status()), HasSubstr("big.yaml"));
  EXPECT_THAT(Msg(j.status()), HasSubstr(std::to_string(kMaxRecipeBytes)));
}

// yaml-cpp turns a NUL byte in a plain scalar into a lone 0xA0 byte; such text is an error, never a string that
// json::dump (config.json) would throw on. (Found by fuzz_recipe; the inputs are in its corpus.)
TEST(YamlToJsonTest, TextThatYamlCppMakesInvalidUtf8IsRejected) {
  int rejected = 0;
  for (const std::string& y : {std::string("group.\0_0: 1\n", 12), std::string("k: [\0_x]\n", 10),
                               std::string("k: a\0b\n", 8)}) {
    auto j = YamlToJson(y, "n.yaml");
    if (j.ok()) {
      EXPECT_NO_THROW(j->dump()) << j->dump(-1, ' ', false, json::error_handler_t::replace);
    } else {
      ++rejected;
      EXPECT_THAT(Msg(j.status()), HasSubstr("n.yaml"));
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(YamlToJsonTest, RepeatedKeysAreRejected) {
  auto j = YamlToJson("a: 1\nb: 2\na: 3\n", "d.yaml");
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(Msg(j.status()), HasSubstr("'a' appears twice"));
  EXPECT_THAT(Msg(j.status()), HasSubstr("line 3"));
}

TEST(YamlToJsonTest, ComplexKeysAreRejected) {
  auto j = YamlToJson("? [a, b]\n: 1\n", "k.yaml");
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(Msg(j.status()), HasSubstr("k.yaml"));
}

// ---------------------------------------------------------------------------------------------------------------
// ParseRecipe: the forms llm-compressor writes and accepts
// ---------------------------------------------------------------------------------------------------------------

TEST(ParseRecipeTest, DefaultStagePresetScheme) {
  auto c = ParseRecipe(R"(
default_stage:
  default_modifiers:
    QuantizationModifier:
      targets: [Linear]
      ignore: [lm_head]
      scheme: W4A16
)",
                       "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->preset_name, "W4A16");
  ASSERT_EQ(c->groups().size(), 1u);
  const ConfigGroup& g = c->groups()[0];
  EXPECT_EQ(g.name, "group_0");
  EXPECT_EQ(g.format, "pack-quantized");
  EXPECT_THAT(g.scheme.targets, ElementsAre("Linear"));
  ASSERT_TRUE(g.scheme.weights.has_value());
  EXPECT_EQ(g.scheme.weights->num_bits, 4);
  EXPECT_EQ(g.scheme.weights->group_size, 128);
  EXPECT_EQ(g.scheme.weights->strategy, Strategy::kGroup);
  EXPECT_TRUE(g.scheme.weights->symmetric);
  EXPECT_FALSE(g.scheme.input_activations.has_value());
  EXPECT_THAT(c->ignore(), ElementsAre("lm_head"));
  EXPECT_EQ(c->Match("model.layers.0.mlp.up_proj", "Linear"), 0);
  EXPECT_EQ(c->Match("lm_head", "Linear"), -1);
}

TEST(ParseRecipeTest, ModifierAtTheTopLevelAndCustomStageNames) {
  for (const char* yaml : {"QuantizationModifier: {scheme: FP8_DYNAMIC}\n",
                           "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      scheme: FP8_DYNAMIC\n"}) {
    auto c = ParseRecipe(yaml, "recipe.yaml");
    ASSERT_TRUE(c.ok()) << yaml << c.status();
    ASSERT_EQ(c->groups().size(), 1u);
    EXPECT_EQ(c->groups()[0].format, "float-quantized");
    EXPECT_THAT(c->groups()[0].scheme.targets, ElementsAre("Linear"));  // default target
    EXPECT_TRUE(c->ignore().empty());
  }
}

TEST(ParseRecipeTest, SchemeNameIsCaseInsensitive) {
  auto c = ParseRecipe("QuantizationModifier: {scheme: w8a8, targets: Linear}\n", "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->preset_name, "W8A8");
  EXPECT_EQ(c->groups()[0].format, "int-quantized");
  ASSERT_TRUE(c->groups()[0].scheme.input_activations.has_value());
  EXPECT_EQ(c->groups()[0].scheme.input_activations->strategy, Strategy::kToken);
}

TEST(ParseRecipeTest, SchemeDictMapsPresetsToTargets) {
  auto c = ParseRecipe(R"(
default_stage:
  default_modifiers:
    QuantizationModifier:
      ignore: [lm_head, "re:.*mlp.gate$"]
      scheme:
        W4A16: ["re:.*mlp.*"]
        FP8_DYNAMIC: ["re:.*self_attn.*"]
)",
                       "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->groups().size(), 2u);
  EXPECT_TRUE(c->preset_name.empty());
  EXPECT_EQ(c->TopFormat(), "mixed-precision");
  int w4 = GroupWithFormat(*c, "pack-quantized");
  int fp8 = GroupWithFormat(*c, "float-quantized");
  ASSERT_GE(w4, 0);
  ASSERT_GE(fp8, 0);
  EXPECT_THAT(c->groups()[w4].scheme.targets, ElementsAre("re:.*mlp.*"));
  EXPECT_THAT(c->groups()[fp8].scheme.targets, ElementsAre("re:.*self_attn.*"));
  EXPECT_EQ(c->Match("model.layers.0.mlp.down_proj", "Linear"), w4);
  EXPECT_EQ(c->Match("model.layers.0.self_attn.q_proj", "Linear"), fp8);
  EXPECT_EQ(c->Match("model.layers.0.mlp.gate", "Linear"), -1);
  EXPECT_EQ(c->Match("lm_head", "Linear"), -1);
  std::vector<std::string> names = {c->groups()[0].name, c->groups()[1].name};
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("group_0", "group_1"));
}

TEST(ParseRecipeTest, ConfigGroupsWithWeightArguments) {
  auto c = ParseRecipe(R"(
default_stage:
  default_modifiers:
    QuantizationModifier:
      ignore: [lm_head]
      config_groups:
        group_0:
          targets: [Linear]
          weights:
            num_bits: 4
            type: int
            symmetric: false
            strategy: group
            group_size: 64
            observer: mse
            actorder: null
)",
                       "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->groups().size(), 1u);
  const ConfigGroup& g = c->groups()[0];
  EXPECT_EQ(g.name, "group_0");
  EXPECT_EQ(g.format, "pack-quantized");
  ASSERT_TRUE(g.scheme.weights.has_value());
  const QuantArgs& w = *g.scheme.weights;
  EXPECT_EQ(w.num_bits, 4);
  EXPECT_EQ(w.type, QuantType::kInt);
  EXPECT_FALSE(w.symmetric);
  EXPECT_EQ(w.strategy, Strategy::kGroup);
  EXPECT_EQ(w.group_size, 64);
  EXPECT_EQ(w.observer, "mse");
  EXPECT_EQ(w.zp_dtype, "torch.int8");
  EXPECT_TRUE(c->preset_name.empty());
  json j = c->ToJson({"lm_head"});
  EXPECT_EQ(j["config_groups"]["group_0"]["weights"]["group_size"], 64);
  EXPECT_EQ(j["config_groups"]["group_0"]["weights"]["symmetric"], false);
}

TEST(ParseRecipeTest, ConfigGroupsWithActivationsUseIntQuantized) {
  auto c = ParseRecipe(R"(
QuantizationModifier:
  config_groups:
    g:
      targets: ["re:.*proj"]
      weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}
      input_activations: {num_bits: 8, type: int, symmetric: true, strategy: token, dynamic: true}
)",
                       "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->groups()[0].format, "int-quantized");
  ASSERT_TRUE(c->groups()[0].scheme.input_activations.has_value());
  EXPECT_TRUE(c->groups()[0].scheme.input_activations->is_dynamic());
  EXPECT_FALSE(c->groups()[0].scheme.input_activations->observer.has_value());
}

TEST(ParseRecipeTest, ActorderTrueMeansGroup) {
  auto c = ParseCompressionRecipe(
      "GPTQModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n"
      "      weights: {num_bits: 4, group_size: 128, actorder: true}\n",
      "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->quant->groups()[0].scheme.weights->actorder, "group");
}

TEST(ParseRecipeTest, SchemeAndConfigGroupsTogetherMakeTwoGroups) {
  auto c = ParseRecipe(R"(
QuantizationModifier:
  targets: ["re:.*mlp.*"]
  scheme: W4A16
  config_groups:
    attn:
      targets: ["re:.*self_attn.*"]
      weights: {num_bits: 8, type: float, strategy: channel}
)",
                       "recipe.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->groups().size(), 2u);
  EXPECT_TRUE(c->preset_name.empty());
  EXPECT_EQ(c->groups()[0].name, "group_0");
  EXPECT_EQ(c->groups()[1].name, "attn");
  EXPECT_EQ(c->groups()[1].format, "float-quantized");
}

// ---------------------------------------------------------------------------------------------------------------
// ParseRecipe errors: each says what is supported
// ---------------------------------------------------------------------------------------------------------------

TEST(ParseRecipeErrorTest, CalibratedRecipesNeedData) {
  for (const char* m : {"GPTQModifier", "AWQModifier"}) {
    std::string yaml = std::string("default_stage:\n  default_modifiers:\n    ") + m + ":\n      scheme: W4A16\n";
    auto c = ParseRecipe(yaml, "recipe.yaml");
    ASSERT_FALSE(c.ok()) << m;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition) << m;
    EXPECT_THAT(Msg(c.status()), HasSubstr("--dataset"));
  }
}

TEST(ParseRecipeErrorTest, UnknownModifierListsWhatIsSupported) {
  auto c = ParseRecipe("default_stage:\n  default_modifiers:\n    MagicModifier: {}\n", "my_recipe.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(c.status()), HasSubstr("my_recipe.yaml"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("MagicModifier"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("QuantizationModifier"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("GPTQModifier"));
}

TEST(ParseRecipeErrorTest, UnknownArgumentListsTheSupportedOnes) {
  auto c = ParseRecipe("QuantizationModifier:\n  schema: W4A16\n", "recipe.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(c.status()), HasSubstr("'schema'"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("scheme"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("config_groups"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("ignore"));
}

TEST(ParseRecipeErrorTest, UnknownWeightArgumentNamesTheGroup) {
  auto c = ParseRecipe(
      "QuantizationModifier:\n  config_groups:\n    group_7:\n      targets: [Linear]\n"
      "      weights: {bits: 4}\n",
      "recipe.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Msg(c.status()), HasSubstr("group_7"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("'bits'"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("num_bits"));
}

TEST(ParseRecipeErrorTest, UnknownSchemeKeyInAGroup) {
  auto c = ParseRecipe(
      "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n      weight: {num_bits: 4}\n",
      "recipe.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Msg(c.status()), HasSubstr("'weight'"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("weights"));
}

TEST(ParseRecipeErrorTest, UnknownPresetListsThePresets) {
  auto c = ParseRecipe("QuantizationModifier: {scheme: W5A16}\n", "recipe.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(Msg(c.status()), HasSubstr("W5A16"));
  EXPECT_THAT(Msg(c.status()), HasSubstr("W4A16"));
}

TEST(ParseRecipeErrorTest, KvCacheSchemeNeedsData) {
  auto c = ParseRecipe("QuantizationModifier:\n  scheme: FP8_DYNAMIC\n  kv_cache_scheme: {num_bits: 8, type: float}\n",
                       "recipe.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(c.status()), HasSubstr("calibration"));
}

TEST(ParseRecipeErrorTest, StructuralProblems) {
  struct Case {
    const char* yaml;
    const char* expected;
  };
  const Case kCases[] = {
      {"- QuantizationModifier\n", "mapping"},
      {"just a string\n", "mapping"},
      {"default_stage:\n  nothing: here\n", "no modifier"},
      {"QuantizationModifier:\n  ignore: [lm_head]\n", "scheme or config_groups"},
      {"QuantizationModifier: [W4A16]\n", "mapping"},
      {"QuantizationModifier: {scheme: 4}\n", "scheme"},
      {"QuantizationModifier: {scheme: {W4A16: []}}\n", "W4A16"},
      {"QuantizationModifier: {scheme: W4A16, targets: []}\n", "targets"},
      {"QuantizationModifier: {config_groups: [a]}\n", "config_groups"},
      {"QuantizationModifier: {config_groups: {g: {targets: []}}}\n", "targets"},
      {"QuantizationModifier: {scheme: W4A16, targets: [\"re:(\"]}\n", "re:("},
      {"QuantizationModifier: {scheme: W4A16\n", "line"},
  };
  for (const auto& c : kCases) {
    auto r = ParseRecipe(c.yaml, "src.yaml");
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_THAT(Msg(r.status()), HasSubstr(c.expected)) << c.yaml;
    if (r.status().code() != absl::StatusCode::kInvalidArgument) ADD_FAILURE() << c.yaml << ": " << r.status();
  }
}

TEST(ParseRecipeErrorTest, MessagesNameTheSource) {
  for (const char* yaml : {"- a\n", "x: 1\n", "QuantizationModifier: {schema: W4A16}\n", "FooModifier: {}\n",
                           "QuantizationModifier: {scheme: NOPE}\n"}) {
    auto r = ParseRecipe(yaml, "/path/to/recipe.yaml");
    ASSERT_FALSE(r.ok()) << yaml;
    // The preset error comes from the preset table; the rest must say which file was wrong.
    if (std::string(yaml).find("NOPE") == std::string::npos) {
      EXPECT_THAT(Msg(r.status()), HasSubstr("/path/to/recipe.yaml")) << yaml;
    }
  }
}

// Integers in a recipe are read into `int`; a value beyond int's range must be rejected, not truncated into a
// valid-looking one (4294967300 = 2^32 + 4 would otherwise become num_bits 4).
TEST(ParseRecipeErrorTest, OutOfRangeIntegersAreRejectedNotTruncated) {
  auto bits = ParseRecipe(
      "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n"
      "      weights: {num_bits: 4294967300, group_size: 128}\n",
      "recipe.yaml");
  EXPECT_FALSE(bits.ok()) << "num_bits 4294967300 was accepted as " << (bits.ok() ? bits->groups()[0].scheme.weights->num_bits : 0);
  auto group = ParseRecipe(
      "QuantizationModifier:\n  config_groups:\n    g:\n      targets: [Linear]\n"
      "      weights: {num_bits: 4, group_size: 4294967424}\n",
      "recipe.yaml");
  EXPECT_FALSE(group.ok()) << "group_size 4294967424 was accepted as "
                           << (group.ok() ? group->groups()[0].scheme.weights->group_size.value_or(0) : 0);
}

// config.json is written with nlohmann::json::dump, which throws type_error 316 on a string that is not UTF-8.
// yaml-cpp passes raw bytes through and turns the YAML escape "\_" (U+00A0) into the single byte 0xA0, so even an
// ASCII recipe can carry such a target. A recipe must be rejected up front, or its quantization_config must
// serialize; otherwise the exception escapes at the end of a compression run.
TEST(ParseRecipeErrorTest, NonUtf8TargetsAreRejectedOrSerializable) {
  const std::string kRecipes[] = {"QuantizationModifier: {scheme: W4A16, targets: [\"re:.*\\_proj\"]}\n",
                                  "QuantizationModifier: {scheme: W4A16, targets: [\"\x9b" "Linear\"]}\n"};
  for (const auto& yaml : kRecipes) {
    auto c = ParseRecipe(yaml, "recipe.yaml");
    if (!c.ok()) continue;  // rejected: fine
    EXPECT_NO_THROW((void)c->ToJson({}).dump()) << yaml;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// PresetConfig
// ---------------------------------------------------------------------------------------------------------------

TEST(PresetConfigTest, AppliesTargetsAndIgnore) {
  auto c = PresetConfig("NVFP4A16", {"re:.*mlp.*"}, {"re:.*mlp.gate$"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->preset_name, "NVFP4A16");
  EXPECT_EQ(c->groups()[0].format, "nvfp4-pack-quantized");
  EXPECT_EQ(c->groups()[0].scheme.weights->group_size, 16);
  EXPECT_EQ(c->Match("model.layers.0.mlp.up_proj", "Linear"), 0);
  EXPECT_EQ(c->Match("model.layers.0.mlp.gate", "Linear"), -1);
  EXPECT_EQ(c->Match("model.layers.0.self_attn.q_proj", "Linear"), -1);
}

TEST(PresetConfigTest, BadPatternIsAnError) {
  auto c = PresetConfig("W4A16", {"Linear"}, {"re:*"});
  EXPECT_FALSE(c.ok());
  auto none = PresetConfig("W4A16", {""}, {});
  EXPECT_FALSE(none.ok());
}

}  // namespace
}  // namespace llmc

namespace llmc {
namespace {

TEST(ParseRecipeGroupNamesTest, DuplicateGroupNamesAcrossModifiersAreRejected) {
  const char* yaml = R"(
stage_a:
  mods_a:
    QuantizationModifier:
      config_groups:
        group_0: {targets: [Linear], weights: {num_bits: 4, type: int, strategy: group, group_size: 128}}
stage_b:
  mods_b:
    QuantizationModifier:
      config_groups:
        group_0: {targets: ["re:.*down_proj"], weights: {num_bits: 8, type: int, strategy: channel}}
)";
  auto c = ParseRecipe(yaml, "dup.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("'group_0' is defined twice"), std::string::npos) << c.status();
}

TEST(ParseRecipeGroupNamesTest, SchemeGroupsDoNotCollideWithExplicitNames) {
  const char* yaml = R"(
QuantizationModifier:
  scheme: {W4A16: ["re:.*mlp.*"]}
  config_groups:
    group_0: {targets: ["re:.*self_attn.*"], weights: {num_bits: 8, type: int, strategy: channel}}
)";
  auto c = ParseRecipe(yaml, "mix.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->groups().size(), 2u);
  EXPECT_NE(c->groups()[0].name, c->groups()[1].name);
  EXPECT_EQ(c->ToJson({}).at("config_groups").size(), 2u);
}

}  // namespace
}  // namespace llmc
