#include "engine/format/recipe.h"

#include "engine/format/algorithms.h"

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

// Counts the nodes NodeToJson visits. An alias is a second reference to one node of yaml-cpp's graph, so nested
// aliases ("billion laughs") make a few hundred bytes expand into billions of visits: the budget bounds the
// expanded size, and so the time and memory of the conversion.
struct NodeBudget {
  int64_t left = kMaxRecipeNodes;
};

absl::StatusOr<json> NodeToJson(const YAML::Node& n, int depth, NodeBudget* budget) {
  if (depth > 64) return absl::InvalidArgumentError("nesting deeper than 64 levels");
  if (--budget->left < 0)
    return absl::InvalidArgumentError(absl::StrCat("more than ", kMaxRecipeNodes,
                                                   " values once aliases are expanded; write the recipe without "
                                                   "nested aliases"));
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return json(nullptr);
    case YAML::NodeType::Scalar:
      // yaml-cpp can make invalid UTF-8 of valid text (a NUL byte in a plain scalar), which json::dump rejects.
      if (!IsValidUtf8(n.Scalar()))
        return absl::InvalidArgumentError(absl::StrCat("line ", n.Mark().line + 1, ": a value is not valid UTF-8 text"));
      return ScalarToJson(n);
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& x : n) {
        LLMC_ASSIGN_OR_RETURN(json v, NodeToJson(x, depth + 1, budget));
        a.push_back(std::move(v));
      }
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) return absl::InvalidArgumentError("mapping keys must be plain strings");
        if (!IsValidUtf8(kv.first.Scalar()))
          return absl::InvalidArgumentError(absl::StrCat("line ", kv.first.Mark().line + 1, ": a key is not valid UTF-8 text"));
        // A repeated key would silently replace the first value (PyYAML keeps the last); refuse it.
        if (o.contains(kv.first.Scalar()))
          return absl::InvalidArgumentError(absl::StrCat("key '", kv.first.Scalar(), "' appears twice in one mapping (line ",
                                                         kv.first.Mark().line + 1, "); give it once"));
        LLMC_ASSIGN_OR_RETURN(json v, NodeToJson(kv.second, depth + 1, budget));
        o[kv.first.Scalar()] = std::move(v);
      }
      return o;
    }
  }
  return json(nullptr);
}

}  // namespace

absl::StatusOr<json> YamlToJson(absl::string_view text, absl::string_view source) {
  if (text.size() > kMaxRecipeBytes)
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", text.size(), " bytes, more than the limit of ",
                                                   kMaxRecipeBytes, " bytes for a recipe"));
  if (!IsValidUtf8(text))
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid UTF-8 text; save the recipe as UTF-8"));
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": invalid YAML at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg));
  }
  NodeBudget budget;
  auto j = NodeToJson(root, 0, &budget);
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
  LLMC_ASSIGN_OR_RETURN(CompressionRecipe r, ParseCompressionRecipe(text, source));
  if (r.NeedsCalibration())
    return absl::FailedPreconditionError(absl::StrCat(source, ": the recipe (", r.Describe(),
                                                      ") needs calibration data; pass --dataset FILE"));
  if (!r.quant) return absl::InvalidArgumentError(absl::StrCat(source, ": the recipe quantizes nothing"));
  return std::move(*r.quant);
}

}  // namespace llmc
