// A whole quantization recipe resolved for one model: config groups, ignore list and target matching,
// and the `quantization_config` JSON that compressed-tensors readers accept.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/format/quant_scheme.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace llmc {

// A target or ignore entry: exact module name, `re:<regex>` (Python re.match: anchored at the start; RE2
// syntax, which runs in linear time, so no pattern can hang a job) or a module class name ("Linear").
class TargetMatcher {
 public:
  static absl::StatusOr<TargetMatcher> Create(const std::string& target);
  enum class Kind { kExact = 0, kRegex = 1, kClass = 2 };
  // Whether the module `name` of class `cls` matches.
  bool Matches(const std::string& name, const std::string& cls) const;
  Kind kind() const { return kind_; }
  const std::string& text() const { return text_; }

 private:
  Kind kind_ = Kind::kExact;
  std::string text_;
  std::shared_ptr<const re2::RE2> re_;  // immutable; shared by copies
};

struct ConfigGroup {
  std::string name;  // "group_0"
  QuantScheme scheme;
  std::string format;  // resolved compression format
  std::vector<TargetMatcher> matchers;
};

class QuantConfig {
 public:
  // Builds a config from groups (name, scheme) and ignore entries. Validates every scheme and pattern.
  static absl::StatusOr<QuantConfig> Create(std::vector<std::pair<std::string, QuantScheme>> groups,
                                            std::vector<std::string> ignore);
  // The group index for a module, or -1 if it is ignored or matched by no group. Priority when several
  // groups match: exact name > regex > class name, then the first group.
  int Match(const std::string& name, const std::string& cls) const;
  bool IsIgnored(const std::string& name, const std::string& cls) const;

  const std::vector<ConfigGroup>& groups() const { return groups_; }
  const std::vector<std::string>& ignore() const { return ignore_; }
  // The top-level format: the groups' format when they agree, "mixed-precision" otherwise.
  std::string TopFormat() const;
  // `quantization_config` for config.json. `ignored_modules` are the Linear modules left unquantized (in
  // module order), as the library lists them.
  nlohmann::json ToJson(const std::vector<std::string>& ignored_modules) const;
  // The recipe.yaml text describing what was applied (llm-compressor's QuantizationModifier form).
  std::string RecipeYaml() const;
  // Fails when a group's exact or re: target narrowly matches an attention module of the model (it matches the
  // module, but neither its parent nor any of its children: compressed-tensors then quantizes the attention
  // itself, with q/k/v scales, which llmc does not implement). `modules` is every module path of the model.
  // `re:.*self_attn.*` matches the projections too and is not an attention target.
  absl::Status CheckAttentionTargets(const std::set<std::string>& modules) const;
  // A one-line description: "W4A16" preset name if it came from a preset, else the group formats.
  std::string preset_name;
  // fp8 kv cache (static per-tensor k_scale/v_scale on each attention module), or none.
  std::optional<QuantArgs> kv_cache_scheme;

 private:
  std::vector<ConfigGroup> groups_;
  std::vector<std::string> ignore_;
  std::vector<TargetMatcher> ignore_matchers_;
};

// The version of compressed-tensors whose format llmc writes.
inline constexpr const char* kCompressedTensorsVersion = "0.18.0";

}  // namespace llmc
