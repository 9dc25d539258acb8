// libFuzzer target: llm-compressor recipe YAML (ParseRecipe, and through it YamlToJson, QuantScheme/QuantArgs
// parsing and validation, TargetMatcher regexes).
//
// Checks, besides the sanitizers and "no exception escapes":
//  - a rejected recipe has a non-empty message;
//  - an accepted recipe has at least one group, each with a format and matchers, its quantization_config
//    serializes (config.json is written with json::dump, which throws on strings that are not UTF-8), matching
//    runs on a few module names, and the recipe.yaml llmc writes for it (RecipeYaml) parses back to the same
//    quantization_config.
// Findings it made, now fixed and kept as properties: non-UTF-8 text from YAML (rejected), observer_kwargs
// written back as strings (only numbers are accepted), a backtracking `re:` pattern (RE2 runs in linear time),
// invalid UTF-8 that yaml-cpp makes of a NUL byte in a plain scalar (rejected; corpus nul_in_group_name.yaml,
// non_utf8_list_entry.yaml), and a preset changed by a modifier's observer written back as the bare preset
// (recipe.yaml now writes the group; corpus observer_mapping.yaml).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/format/recipe.h"

namespace {
void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_recipe: %s:\n%s\n", what, detail.c_str());
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = llmc::ParseRecipe(text, "fuzz/recipe.yaml");
  if (!c.ok()) {
    if (c.status().message().empty()) Fail("empty error message", c.status().ToString());
    return 0;
  }
  if (c->groups().empty()) Fail("accepted recipe without groups", std::string(text));
  for (const auto& g : c->groups()) {
    if (g.format.empty()) Fail("group without a format", g.name);
    if (g.matchers.size() != g.scheme.targets.size()) Fail("targets and matchers differ", g.name);
  }
  const nlohmann::json j = c->ToJson({"lm_head"});
  for (const char* name : {"lm_head", "model.layers.0.mlp.down_proj", "model.layers.10.self_attn.q_proj"}) {
    int m = c->Match(name, "Linear");
    if (m >= static_cast<int>(c->groups().size())) Fail("match out of range", name);
  }
  const std::string dumped = j.dump();
  const std::string yaml = c->RecipeYaml();
  auto back = llmc::ParseRecipe(yaml, "fuzz/recipe.yaml (written)");
  if (!back.ok()) Fail("recipe.yaml written by llmc does not parse", back.status().ToString() + "\n" + yaml);
  if (back->ToJson({"lm_head"}) != j)
    Fail("recipe.yaml written by llmc describes another config",
         "input:\n" + std::string(text) + "\nwritten:\n" + yaml + "\nbefore: " + dumped +
             "\nafter:  " + back->ToJson({"lm_head"}).dump());
  return 0;
}
