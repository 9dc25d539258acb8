#include "engine/format/quant_config.h"

#include <re2/re2.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/util.h"

namespace llmc {

using json = nlohmann::json;

absl::StatusOr<TargetMatcher> TargetMatcher::Create(const std::string& target) {
  TargetMatcher m;
  m.text_ = target;
  if (target.empty()) return absl::InvalidArgumentError("empty target or ignore pattern");
  if (!IsValidUtf8(target)) return absl::InvalidArgumentError("a target or ignore pattern is not valid UTF-8 text");
  if (absl::StartsWith(target, "re:")) {
    m.kind_ = Kind::kRegex;
    RE2::Options opts;
    opts.set_log_errors(false);
    opts.set_max_mem(8 << 20);
    auto re = std::make_shared<const RE2>(target.substr(3), opts);
    if (!re->ok())
      return absl::InvalidArgumentError(absl::StrCat("invalid regular expression in '", target, "': ", re->error()));
    m.re_ = std::move(re);
  } else if (target.find('.') == std::string::npos && !target.empty() && std::isupper(static_cast<unsigned char>(target[0]))) {
    m.kind_ = Kind::kClass;  // "Linear", "Embedding", "LlamaDecoderLayer"
  } else {
    m.kind_ = Kind::kExact;
  }
  return m;
}

bool TargetMatcher::Matches(const std::string& name, const std::string& cls) const {
  switch (kind_) {
    case Kind::kExact: return name == text_;
    case Kind::kRegex: return re_->Match(name, 0, name.size(), RE2::ANCHOR_START, nullptr, 0);
    case Kind::kClass: return cls == text_;
  }
  return false;
}

absl::StatusOr<QuantConfig> QuantConfig::Create(std::vector<std::pair<std::string, QuantScheme>> groups,
                                                std::vector<std::string> ignore) {
  QuantConfig c;
  if (groups.empty()) return absl::InvalidArgumentError("the recipe quantizes nothing (no scheme or config_groups)");
  for (auto& [name, scheme] : groups) {
    ConfigGroup g;
    g.name = name;
    if (scheme.weights) LLMC_RETURN_IF_ERROR(scheme.weights->Validate(absl::StrCat(name, ".weights")));
    if (scheme.input_activations)
      LLMC_RETURN_IF_ERROR(scheme.input_activations->Validate(absl::StrCat(name, ".input_activations")));
    if (scheme.format) {
      g.format = *scheme.format;
    } else {
      LLMC_ASSIGN_OR_RETURN(g.format, InferFormat(scheme));
    }
    for (const auto& t : scheme.targets) {
      auto m = TargetMatcher::Create(t);
      if (!m.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ".targets: ", m.status().message()));
      g.matchers.push_back(std::move(*m));
    }
    g.scheme = std::move(scheme);
    c.groups_.push_back(std::move(g));
  }
  for (const auto& i : ignore) {
    auto m = TargetMatcher::Create(i);
    if (!m.ok()) return absl::InvalidArgumentError(absl::StrCat("ignore: ", m.status().message()));
    c.ignore_matchers_.push_back(std::move(*m));
  }
  c.ignore_ = std::move(ignore);
  return c;
}

bool QuantConfig::IsIgnored(const std::string& name, const std::string& cls) const {
  for (const auto& m : ignore_matchers_)
    if (m.Matches(name, cls)) return true;
  return false;
}

int QuantConfig::Match(const std::string& name, const std::string& cls) const {
  if (IsIgnored(name, cls)) return -1;
  int best = -1;
  int best_kind = 99;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (const auto& m : groups_[gi].matchers) {
      int k = static_cast<int>(m.kind());
      if (m.Matches(name, cls) && k < best_kind) {
        best_kind = k;
        best = static_cast<int>(gi);
      }
    }
  }
  return best;
}

absl::Status QuantConfig::CheckAttentionTargets(const std::set<std::string>& modules) const {
  auto is_attention = [](const std::string& m) {
    const std::string leaf = m.substr(m.rfind('.') + 1);
    return leaf == "self_attn" || leaf == "attn" || leaf == "attention" || leaf == "self_attention";
  };
  for (const auto& g : groups_)
    for (const auto& t : g.matchers) {
      if (t.kind() == TargetMatcher::Kind::kClass) continue;
      for (const auto& m : modules) {
        if (!is_attention(m) || !t.Matches(m, "")) continue;
        const auto dot = m.rfind('.');
        if (dot != std::string::npos && t.Matches(m.substr(0, dot), "")) continue;
        bool child = false;
        const std::string prefix = m + ".";
        for (auto it = modules.lower_bound(prefix); it != modules.end() && absl::StartsWith(*it, prefix); ++it)
          child |= t.Matches(*it, "");
        if (child) continue;
        return absl::InvalidArgumentError(absl::StrCat(
            "config group '", g.name, "' targets the attention module ", m, " ('", t.text(),
            "'): attention quantization (compressed-tensors' q/k/v scales for attention-targeted groups) is not ",
            "supported yet. For k_scale/v_scale use kv_cache_scheme; to quantize the projections target them ",
            "(e.g. 're:.*self_attn\\.(q|k|v|o)_proj$')"));
      }
    }
  return absl::OkStatus();
}

std::string QuantConfig::TopFormat() const {
  std::string f = groups_.front().format;
  for (const auto& g : groups_)
    if (g.format != f) return "mixed-precision";
  return f;
}

json QuantConfig::ToJson(const std::vector<std::string>& ignored_modules) const {
  json groups = json::object();
  for (const auto& g : groups_) groups[g.name] = g.scheme.ToJson(g.format);
  json j = json::object();
  j["config_groups"] = groups;
  j["format"] = TopFormat();
  j["global_compression_ratio"] = nullptr;
  j["ignore"] = ignored_modules;
  j["kv_cache_scheme"] = kv_cache_scheme ? kv_cache_scheme->ToJson() : json(nullptr);
  j["quant_method"] = "compressed-tensors";
  j["quantization_status"] = "compressed";
  j["sparsity_config"] = json::object();
  j["transform_config"] = json::object();
  j["version"] = kCompressedTensorsVersion;
  return j;
}

namespace {
void EmitArgs(YAML::Emitter& e, const QuantArgs& a) {
  json j = a.ToJson();
  e << YAML::BeginMap;
  for (auto it = j.begin(); it != j.end(); ++it) {
    e << YAML::Key << it.key() << YAML::Value;
    const json& v = it.value();
    if (v.is_null()) e << YAML::Null;
    else if (v.is_boolean()) e << v.get<bool>();
    else if (v.is_number_integer()) e << v.get<int64_t>();
    else if (v.is_string()) e << v.get<std::string>();
    else if (v.is_array()) {
      e << YAML::Flow << YAML::BeginSeq;
      for (const auto& x : v) e << x.get<int64_t>();
      e << YAML::EndSeq;
    } else if (v.is_object()) {
      e << YAML::Flow << YAML::BeginMap;
      for (auto k = v.begin(); k != v.end(); ++k) e << YAML::Key << k.key() << YAML::Value << k.value().dump();
      e << YAML::EndMap;
    }
  }
  e << YAML::EndMap;
}
}  // namespace

std::string QuantConfig::RecipeYaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "default_stage" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "default_modifiers" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "QuantizationModifier" << YAML::Value << YAML::BeginMap;
  // The preset form only while the group is still exactly the preset (an observer override changes it).
  bool preset_form = !preset_name.empty() && groups_.size() == 1;
  if (preset_form) {
    auto p = PresetScheme(preset_name);
    if (p.ok()) p->targets = groups_.front().scheme.targets;
    preset_form = p.ok() && p->ToJson(groups_.front().format) == groups_.front().scheme.ToJson(groups_.front().format);
  }
  if (preset_form) {
    e << YAML::Key << "targets" << YAML::Value << YAML::Flow << groups_.front().scheme.targets;
    e << YAML::Key << "ignore" << YAML::Value << YAML::Flow << ignore_;
    e << YAML::Key << "scheme" << YAML::Value << preset_name;
  } else {
    e << YAML::Key << "ignore" << YAML::Value << YAML::Flow << ignore_;
    e << YAML::Key << "config_groups" << YAML::Value << YAML::BeginMap;
    for (const auto& g : groups_) {
      e << YAML::Key << g.name << YAML::Value << YAML::BeginMap;
      e << YAML::Key << "targets" << YAML::Value << YAML::Flow << g.scheme.targets;
      if (g.scheme.weights) {
        e << YAML::Key << "weights" << YAML::Value;
        EmitArgs(e, *g.scheme.weights);
      }
      if (g.scheme.input_activations) {
        e << YAML::Key << "input_activations" << YAML::Value;
        EmitArgs(e, *g.scheme.input_activations);
      }
      if (g.scheme.output_activations) {
        e << YAML::Key << "output_activations" << YAML::Value;
        EmitArgs(e, *g.scheme.output_activations);
      }
      e << YAML::Key << "format" << YAML::Value << g.format;
      e << YAML::EndMap;
    }
    e << YAML::EndMap;
  }
  if (kv_cache_scheme) {
    e << YAML::Key << "kv_cache_scheme" << YAML::Value;
    EmitArgs(e, *kv_cache_scheme);
  }
  e << YAML::EndMap << YAML::EndMap << YAML::EndMap << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace llmc
