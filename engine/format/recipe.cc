#include "engine/format/recipe.h"

#include <yaml-cpp/yaml.h>

#include <re2/re2.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include <set>
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/util.h"

namespace llmc {

using json = nlohmann::json;

namespace {

json ScalarToJson(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted
  if (s == "~" || s == "null" || s == "Null" || s == "NULL" || s.empty()) return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  static const RE2 kInt("[-+]?[0-9]+");
  static const RE2 kFloat("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  if (RE2::FullMatch(s, kInt)) {
    int64_t v;
    if (absl::SimpleAtoi(s, &v)) return v;
  }
  if (RE2::FullMatch(s, kFloat)) {
    double d;
    if (absl::SimpleAtod(s, &d)) return d;
  }
  return s;
}

absl::StatusOr<json> NodeToJson(const YAML::Node& n, int depth) {
  if (depth > 64) return absl::InvalidArgumentError("nesting deeper than 64 levels");
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return json(nullptr);
    case YAML::NodeType::Scalar: return ScalarToJson(n);
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& x : n) {
        LLMC_ASSIGN_OR_RETURN(json v, NodeToJson(x, depth + 1));
        a.push_back(std::move(v));
      }
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) return absl::InvalidArgumentError("mapping keys must be plain strings");
        LLMC_ASSIGN_OR_RETURN(json v, NodeToJson(kv.second, depth + 1));
        o[kv.first.Scalar()] = std::move(v);
      }
      return o;
    }
  }
  return json(nullptr);
}

const char* kKnownModifiers[] = {"QuantizationModifier", "GPTQModifier", "AWQModifier", "SmoothQuantModifier",
                                 "SparseGPTModifier", "WandaPruningModifier"};

std::vector<std::string> StringList(const json& v) {
  std::vector<std::string> out;
  if (v.is_string()) out.push_back(v.get<std::string>());
  else if (v.is_array())
    for (const auto& x : v)
      if (x.is_string()) out.push_back(x.get<std::string>());
  return out;
}

// Finds modifiers in the recipe: {stage: {group_modifiers: {Name: args}}} or {Name: args} at any of the
// first three levels.
void CollectModifiers(const json& j, int depth, std::vector<std::pair<std::string, json>>* out) {
  if (!j.is_object() || depth > 3) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (absl::EndsWith(it.key(), "Modifier")) out->emplace_back(it.key(), it.value());
    else CollectModifiers(it.value(), depth + 1, out);
  }
}

}  // namespace

absl::StatusOr<json> YamlToJson(absl::string_view text, absl::string_view source) {
  if (!IsValidUtf8(text))
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid UTF-8 text; save the recipe as UTF-8"));
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": invalid YAML at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg));
  }
  auto j = NodeToJson(root, 0);
  if (!j.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", j.status().message()));
  return j;
}

absl::StatusOr<QuantConfig> PresetConfig(absl::string_view scheme, std::vector<std::string> targets,
                                         std::vector<std::string> ignore) {
  LLMC_ASSIGN_OR_RETURN(QuantScheme s, PresetScheme(scheme));
  s.targets = std::move(targets);
  std::vector<std::pair<std::string, QuantScheme>> groups;
  groups.emplace_back("group_0", std::move(s));
  LLMC_ASSIGN_OR_RETURN(QuantConfig c, QuantConfig::Create(std::move(groups), std::move(ignore)));
  c.preset_name = absl::AsciiStrToUpper(scheme);
  if (c.preset_name == "INT8") c.preset_name = "W8A8";
  return c;
}

absl::StatusOr<QuantConfig> ParseRecipe(absl::string_view text, absl::string_view source) {
  LLMC_ASSIGN_OR_RETURN(json root, YamlToJson(text, source));
  if (!root.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": a recipe must be a YAML mapping"));
  std::vector<std::pair<std::string, json>> mods;
  CollectModifiers(root, 0, &mods);
  if (mods.empty())
    return absl::InvalidArgumentError(absl::StrCat(source, ": no modifier found; expected e.g. ",
                                                   "default_stage: {default_modifiers: {QuantizationModifier: {scheme: W4A16, ignore: [lm_head]}}}"));
  std::vector<std::pair<std::string, QuantScheme>> groups;
  std::vector<std::string> ignore;
  std::string preset;
  // Names for groups made from `scheme:` that do not collide with any explicit config_groups name.
  std::set<std::string> explicit_names;
  for (const auto& [name, args] : mods)
    if (args.is_object() && args.contains("config_groups") && args["config_groups"].is_object())
      for (auto it = args["config_groups"].begin(); it != args["config_groups"].end(); ++it) explicit_names.insert(it.key());
  int next_auto = 0;
  auto fresh_name = [&]() {
    std::string n;
    do n = absl::StrCat("group_", next_auto++);
    while (explicit_names.count(n));
    return n;
  };
  bool have_ignore = false;
  for (const auto& [name, args] : mods) {
    std::string where = absl::StrCat(source, ": ", name);
    if (name != "QuantizationModifier") {
      bool known = false;
      for (const char* k : kKnownModifiers) known |= name == k;
      if (known)
        return absl::UnimplementedError(absl::StrCat(where, " needs calibration data, which this build does not run yet; ",
                                                     "supported modifiers: QuantizationModifier"));
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown modifier; supported: QuantizationModifier (",
                                                     "calibrated: GPTQModifier, AWQModifier, SmoothQuantModifier, ",
                                                     "SparseGPTModifier, WandaPruningModifier)"));
    }
    if (!args.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": arguments must be a mapping"));
    static const std::set<std::string> kArgs = {"targets", "ignore", "scheme", "config_groups", "kv_cache_scheme",
                                                "weight_observer", "input_observer", "output_observer", "index",
                                                "group", "start", "end", "update"};
    for (auto it = args.begin(); it != args.end(); ++it) {
      if (!kArgs.count(it.key()))
        return absl::InvalidArgumentError(absl::StrCat(where, ": unknown argument '", it.key(),
                                                       "'; supported: targets, ignore, scheme, config_groups, kv_cache_scheme"));
    }
    if (args.contains("kv_cache_scheme") && !args["kv_cache_scheme"].is_null())
      return absl::UnimplementedError(absl::StrCat(where, ": kv_cache_scheme needs calibration data, which this build does not run yet"));
    std::vector<std::string> targets = {"Linear"};
    if (args.contains("targets")) {
      targets = StringList(args["targets"]);
      if (targets.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ".targets: must list module names, re: patterns or class names"));
    }
    if (args.contains("ignore")) {
      have_ignore = true;
      for (auto& i : StringList(args["ignore"])) ignore.push_back(i);
    }
    if (args.contains("scheme") && !args["scheme"].is_null()) {
      const json& s = args["scheme"];
      if (s.is_string()) {
        LLMC_ASSIGN_OR_RETURN(QuantScheme qs, PresetScheme(s.get<std::string>()));
        qs.targets = targets;
        preset = absl::AsciiStrToUpper(s.get<std::string>());
        groups.emplace_back(fresh_name(), std::move(qs));
      } else if (s.is_object()) {  // {W4A16: [targets], W8A16: [targets]}
        for (auto it = s.begin(); it != s.end(); ++it) {
          LLMC_ASSIGN_OR_RETURN(QuantScheme qs, PresetScheme(it.key()));
          qs.targets = StringList(it.value());
          if (qs.targets.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ".scheme.", it.key(), ": list the targets"));
          groups.emplace_back(fresh_name(), std::move(qs));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat(where, ".scheme: must be a preset name or {PRESET: [targets]}"));
      }
    }
    if (args.contains("config_groups") && !args["config_groups"].is_null()) {
      const json& cg = args["config_groups"];
      if (!cg.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ".config_groups: must be a mapping"));
      for (auto it = cg.begin(); it != cg.end(); ++it) {
        LLMC_ASSIGN_OR_RETURN(QuantScheme qs, QuantScheme::FromJson(it.value(), absl::StrCat(where, ".config_groups.", it.key())));
        groups.emplace_back(it.key(), std::move(qs));
      }
    }
  }
  if (groups.empty())
    return absl::InvalidArgumentError(absl::StrCat(source, ": QuantizationModifier needs a scheme or config_groups"));
  {
    std::set<std::string> names;
    for (const auto& g : groups)
      if (!names.insert(g.first).second)
        return absl::InvalidArgumentError(absl::StrCat(source, ": config group '", g.first,
                                                       "' is defined twice; give each group its own name"));
  }
  if (groups.size() > 1) preset.clear();
  LLMC_ASSIGN_OR_RETURN(QuantConfig c, QuantConfig::Create(std::move(groups), have_ignore ? ignore : std::vector<std::string>{}));
  c.preset_name = preset;
  return c;
}

}  // namespace llmc
