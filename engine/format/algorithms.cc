#include "engine/format/algorithms.h"

#include <yaml-cpp/yaml.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "engine/format/recipe.h"

namespace llmc {

using json = nlohmann::json;

namespace {

// Arguments every quantizing modifier (QuantizationModifier, GPTQModifier, AWQModifier) accepts.
std::vector<AlgorithmArg> QuantArgsList() {
  return {
      {"targets", "list", json::array({"Linear"}), "modules to quantize: names, re: patterns or class names"},
      {"ignore", "list", json::array(), "modules to leave unquantized (e.g. lm_head)"},
      {"scheme", "scheme", nullptr, "a preset name (W4A16, ...) or {PRESET: [targets]}"},
      {"config_groups", "mapping", nullptr, "explicit config groups (targets, weights, input_activations)"},
      {"kv_cache_scheme", "mapping", nullptr, "fp8 kv cache: {num_bits: 8, type: float, strategy: tensor}; writes k_scale/v_scale"},
  };
}

std::vector<AlgorithmInfo> MakeRegistry() {
  std::vector<AlgorithmInfo> r;
  {
    AlgorithmInfo a{"QuantizationModifier", "rtn", "round-to-nearest quantization (data-free unless activations or the kv cache are static)",
                    false, "input ranges for static activation scales and kv cache scales", QuantArgsList()};
    r.push_back(a);
  }
  {
    AlgorithmInfo a{"GPTQModifier", "gptq", "GPTQ: quantize columns in order, compensating the error with the inverse Hessian",
                    true, "per-module Hessians H = 2/N sum x x^T of each Linear's inputs", QuantArgsList()};
    a.args.push_back({"block_size", "int", 128, "columns per lazy-update block"});
    a.args.push_back({"dampening_frac", "float", 0.01, "fraction of mean(diag H) added to the diagonal"});
    a.args.push_back({"actorder", "string", "static", "activation ordering: none (null), static, group, weight"});
    a.args.push_back({"offload_hessians", "bool", false, "accepted for compatibility (Hessians live where the block runs)"});
    r.push_back(a);
  }
  {
    AlgorithmInfo a{"AWQModifier", "awq", "activation-aware weight quantization: per-channel scales searched on the block output",
                    true, "per-channel mean |x| of the balance layers' inputs and the block inputs", QuantArgsList()};
    a.args.push_back({"mappings", "list", nullptr, "[{smooth_layer, balance_layers}] (Llama defaults)"});
    a.args.push_back({"duo_scaling", "bool", true, "use weight magnitudes as well as activations in the scales"});
    a.args.push_back({"n_grid", "int", 20, "grid points for the scale exponent search"});
    a.args.push_back({"offload_device", "string", nullptr, "accepted for compatibility"});
    r.push_back(a);
  }
  {
    AlgorithmInfo a{"SmoothQuantModifier", "smoothquant",
                    "moves activation outliers into the weights: x/s, W*s with s = max|x|^a / max|W|^(1-a)", true,
                    "per-channel max |x| of the balance layers' inputs", {}};
    a.args.push_back({"smoothing_strength", "float", 0.5, "alpha in (0, 1)"});
    a.args.push_back({"mappings", "list", nullptr, "[[[balance layers], smooth layer]] (Llama defaults)"});
    a.args.push_back({"ignore", "list", json::array(), "modules to skip"});
    a.args.push_back({"num_calibration_steps", "int", nullptr, "accepted for compatibility (all samples are used)"});
    r.push_back(a);
  }
  {
    AlgorithmInfo a{"SparseGPTModifier", "sparsegpt", "SparseGPT pruning with Hessian-based error compensation", true,
                    "per-module Hessians", {}};
    a.args.push_back({"sparsity", "float", 0.5, "fraction of weights set to zero"});
    a.args.push_back({"mask_structure", "string", "0:0", "N:M (e.g. 2:4) or 0:0 for unstructured"});
    a.args.push_back({"block_size", "int", 128, "columns per block"});
    a.args.push_back({"dampening_frac", "float", 0.01, "fraction of mean(diag H) added to the diagonal"});
    a.args.push_back({"targets", "list", json::array({"Linear"}), "modules to prune"});
    a.args.push_back({"ignore", "list", json::array(), "modules to leave dense"});
    a.args.push_back({"sequential_update", "bool", true, "accepted for compatibility (always sequential)"});
    r.push_back(a);
  }
  {
    AlgorithmInfo a{"WandaPruningModifier", "wanda", "Wanda pruning: |W| * ||x|| per row, no weight update", true,
                    "per-channel sum of x^2 of each Linear's inputs", {}};
    a.args.push_back({"sparsity", "float", 0.5, "fraction of weights set to zero"});
    a.args.push_back({"mask_structure", "string", "0:0", "N:M (e.g. 2:4) or 0:0 for unstructured"});
    a.args.push_back({"targets", "list", json::array({"Linear"}), "modules to prune"});
    a.args.push_back({"ignore", "list", json::array(), "modules to leave dense"});
    r.push_back(a);
  }
  return r;
}

std::vector<std::string> StringList(const json& v) {
  std::vector<std::string> out;
  if (v.is_string()) out.push_back(v.get<std::string>());
  else if (v.is_array())
    for (const auto& x : v)
      if (x.is_string()) out.push_back(x.get<std::string>());
  return out;
}

// Finds modifiers in the recipe: {stage: {group_modifiers: {Name: args}}} or {Name: args} at any of the first
// three levels, in document order.
void CollectModifiers(const json& j, int depth, std::vector<std::pair<std::string, json>>* out) {
  if (!j.is_object() || depth > 3) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (absl::EndsWith(it.key(), "Modifier")) out->emplace_back(it.key(), it.value());
    else CollectModifiers(it.value(), depth + 1, out);
  }
}

std::string SupportedModifiers() {
  std::vector<std::string> names;
  for (const auto& a : Algorithms()) names.push_back(a.modifier);
  return absl::StrJoin(names, ", ");
}

absl::Status CheckArgs(const AlgorithmInfo& info, const json& args, const std::string& where) {
  if (!args.is_object() && !args.is_null())
    return absl::InvalidArgumentError(absl::StrCat(where, ": arguments must be a mapping"));
  if (args.is_null()) return absl::OkStatus();
  static const std::set<std::string> kLifecycle = {"index", "group", "start", "end", "update", "frequency"};
  static const std::set<std::string> kObservers = {"weight_observer", "input_observer", "output_observer"};
  for (auto it = args.begin(); it != args.end(); ++it) {
    bool known = kLifecycle.count(it.key()) ||
                 (info.modifier == "QuantizationModifier" && kObservers.count(it.key()));
    for (const auto& a : info.args) known |= a.name == it.key();
    if (!known) {
      std::vector<std::string> names;
      for (const auto& a : info.args) names.push_back(a.name);
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown argument '", it.key(), "'; ", info.modifier,
                                                      " takes: ", absl::StrJoin(names, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> GetNumber(const json& args, const char* key, double dflt, double lo, double hi,
                                 const std::string& where) {
  if (!args.is_object() || !args.contains(key) || args[key].is_null()) return dflt;
  const json& v = args[key];
  if (!v.is_number() || !(v.get<double>() >= lo) || !(v.get<double>() <= hi))
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": must be a number in [", lo, ", ", hi, "]"));
  return v.get<double>();
}

absl::StatusOr<std::string> GetMask(const json& args, const std::string& where) {
  if (!args.is_object() || !args.contains("mask_structure") || args["mask_structure"].is_null()) return std::string("0:0");
  const json& v = args["mask_structure"];
  std::vector<std::string> parts;
  if (v.is_string()) parts = absl::StrSplit(v.get<std::string>(), ':');
  int n = 0, m = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &n) || !absl::SimpleAtoi(parts[1], &m) || n < 0 || m < 0 ||
      (m > 0 && (n == 0 || n >= m)) || (m == 0 && n != 0) || m > 64)
    return absl::InvalidArgumentError(absl::StrCat(where, ".mask_structure: must be \"N:M\" with 0 < N < M (e.g. 2:4) or \"0:0\" for unstructured"));
  return v.get<std::string>();
}

absl::StatusOr<std::vector<SmoothMapping>> ParseMappings(const json& v, const std::string& where) {
  std::vector<SmoothMapping> out;
  if (!v.is_array()) return absl::InvalidArgumentError(absl::StrCat(where, ".mappings: must be a list"));
  for (const auto& m : v) {
    SmoothMapping sm;
    if (m.is_array() && m.size() == 2) {  // SmoothQuant: [[balance...], smooth]
      sm.balance = StringList(m[0]);
      if (m[1].is_string()) sm.smooth = m[1].get<std::string>();
    } else if (m.is_object()) {  // AWQ: {smooth_layer, balance_layers}
      if (m.contains("balance_layers")) sm.balance = StringList(m["balance_layers"]);
      if (m.contains("smooth_layer") && m["smooth_layer"].is_string()) sm.smooth = m["smooth_layer"].get<std::string>();
    }
    if (sm.balance.empty() || sm.smooth.empty())
      return absl::InvalidArgumentError(absl::StrCat(where, ".mappings: each mapping is [[balance layers], smooth layer] ",
                                                     "or {smooth_layer: ..., balance_layers: [...]}"));
    out.push_back(std::move(sm));
  }
  return out;
}

}  // namespace

const std::vector<AlgorithmInfo>& Algorithms() {
  static const std::vector<AlgorithmInfo> kRegistry = MakeRegistry();
  return kRegistry;
}

const AlgorithmInfo* FindAlgorithm(absl::string_view name) {
  for (const auto& a : Algorithms())
    if (absl::EqualsIgnoreCase(a.modifier, name) || absl::EqualsIgnoreCase(a.name, name)) return &a;
  return nullptr;
}

std::vector<SmoothMapping> DefaultSmoothQuantMappings() {
  return {{{"re:.*q_proj", "re:.*k_proj", "re:.*v_proj"}, "re:.*input_layernorm"},
          {{"re:.*gate_proj", "re:.*up_proj"}, "re:.*post_attention_layernorm"}};
}

std::vector<SmoothMapping> DefaultAwqMappings() {
  return {{{"re:.*q_proj", "re:.*k_proj", "re:.*v_proj"}, "re:.*input_layernorm"},
          {{"re:.*o_proj"}, "re:.*v_proj"},
          {{"re:.*gate_proj", "re:.*up_proj"}, "re:.*post_attention_layernorm"},
          {{"re:.*down_proj"}, "re:.*up_proj"}};
}

bool CompressionRecipe::NeedsCalibration() const {
  if (gptq || smoothquant || awq || sparsity) return true;
  if (!quant) return false;
  if (quant->kv_cache_scheme) return true;
  for (const auto& g : quant->groups())
    if (g.scheme.input_activations &&
        (!g.scheme.input_activations->is_dynamic() || g.scheme.input_activations->dynamic == "local"))
      return true;
  return false;
}

std::string CompressionRecipe::Describe() const {
  std::vector<std::string> parts;
  if (smoothquant) parts.push_back("SmoothQuant");
  if (sparsity) parts.push_back(sparsity->method == "wanda" ? "Wanda" : "SparseGPT");
  if (awq) parts.push_back("AWQ");
  if (gptq) parts.push_back("GPTQ");
  std::string s = absl::StrJoin(parts, " + ");
  if (quant) {
    if (parts.empty()) s = "RTN";
    s += " " + (quant->preset_name.empty() ? quant->TopFormat() : quant->preset_name);
  }
  return s;
}

absl::StatusOr<CompressionRecipe> ParseCompressionRecipe(absl::string_view text, absl::string_view source) {
  LLMC_ASSIGN_OR_RETURN(json root, YamlToJson(text, source));
  if (!root.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": a recipe must be a YAML mapping"));
  std::vector<std::pair<std::string, json>> mods;
  CollectModifiers(root, 0, &mods);
  if (mods.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": no modifier found; expected e.g. ",
        "default_stage: {default_modifiers: {GPTQModifier: {scheme: W4A16, ignore: [lm_head]}}}; supported modifiers: ",
        SupportedModifiers()));
  CompressionRecipe recipe;
  recipe.yaml = std::string(text);
  std::vector<std::pair<std::string, QuantScheme>> groups;
  std::vector<std::string> ignore;
  std::optional<QuantArgs> kv_cache;
  std::string preset;
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
  int quantizers = 0;
  for (const auto& [name, args] : mods) {
    std::string where = absl::StrCat(source, ": ", name);
    const AlgorithmInfo* info = nullptr;
    for (const auto& a : Algorithms())
      if (a.modifier == name) info = &a;
    if (!info)
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown modifier; supported: ", SupportedModifiers()));
    LLMC_RETURN_IF_ERROR(CheckArgs(*info, args, where));
    if (name == "SmoothQuantModifier") {
      if (recipe.smoothquant) return absl::InvalidArgumentError(absl::StrCat(where, ": given twice"));
      SmoothQuantParams p;
      LLMC_ASSIGN_OR_RETURN(p.smoothing_strength, GetNumber(args, "smoothing_strength", 0.5, 0.0, 1.0, where));
      p.mappings = DefaultSmoothQuantMappings();
      if (args.is_object() && args.contains("mappings") && !args["mappings"].is_null()) {
        LLMC_ASSIGN_OR_RETURN(p.mappings, ParseMappings(args["mappings"], where));
      }
      if (args.is_object() && args.contains("ignore")) p.ignore = StringList(args["ignore"]);
      recipe.smoothquant = std::move(p);
      continue;
    }
    if (name == "SparseGPTModifier" || name == "WandaPruningModifier") {
      if (recipe.sparsity) return absl::InvalidArgumentError(absl::StrCat(where, ": only one pruning modifier per recipe"));
      SparsityParams p;
      p.method = name == "WandaPruningModifier" ? "wanda" : "sparsegpt";
      LLMC_ASSIGN_OR_RETURN(p.sparsity, GetNumber(args, "sparsity", 0.5, 0.0, 0.99, where));
      LLMC_ASSIGN_OR_RETURN(p.mask_structure, GetMask(args, where));
      LLMC_ASSIGN_OR_RETURN(double bs, GetNumber(args, "block_size", 128, 1, 1 << 16, where));
      p.block_size = static_cast<int>(bs);
      LLMC_ASSIGN_OR_RETURN(p.dampening_frac, GetNumber(args, "dampening_frac", 0.01, 0.0, 10.0, where));
      if (args.is_object() && args.contains("targets")) p.targets = StringList(args["targets"]);
      if (p.targets.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ".targets: must list modules"));
      if (args.is_object() && args.contains("ignore")) p.ignore = StringList(args["ignore"]);
      for (const auto& t : p.targets) LLMC_RETURN_IF_ERROR(TargetMatcher::Create(t).status());
      for (const auto& t : p.ignore) LLMC_RETURN_IF_ERROR(TargetMatcher::Create(t).status());
      recipe.sparsity = std::move(p);
      continue;
    }
    // Quantizing modifiers.
    ++quantizers;
    if (name == "GPTQModifier") {
      if (recipe.gptq) return absl::InvalidArgumentError(absl::StrCat(where, ": given twice"));
      GptqParams p;
      LLMC_ASSIGN_OR_RETURN(double bs, GetNumber(args, "block_size", 128, 1, 1 << 16, where));
      p.block_size = static_cast<int>(bs);
      LLMC_ASSIGN_OR_RETURN(p.dampening_frac, GetNumber(args, "dampening_frac", 0.01, 0.0, 10.0, where));
      if (args.is_object() && args.contains("actorder")) {
        const json& v = args["actorder"];
        if (v.is_null() || v == false) p.actorder = "none";
        else if (v.is_string() && (v == "static" || v == "group" || v == "weight" || v == "none")) p.actorder = v.get<std::string>();
        else return absl::InvalidArgumentError(absl::StrCat(where, ".actorder: must be null, static, group or weight"));
      }
      recipe.gptq = p;
    } else if (name == "AWQModifier") {
      if (recipe.awq) return absl::InvalidArgumentError(absl::StrCat(where, ": given twice"));
      AwqParams p;
      if (args.is_object() && args.contains("duo_scaling") && !args["duo_scaling"].is_null()) {
        if (!args["duo_scaling"].is_boolean()) return absl::InvalidArgumentError(absl::StrCat(where, ".duo_scaling: must be true or false"));
        p.duo_scaling = args["duo_scaling"].get<bool>();
      }
      LLMC_ASSIGN_OR_RETURN(double ng, GetNumber(args, "n_grid", 20, 1, 1000, where));
      p.n_grid = static_cast<int>(ng);
      p.mappings = DefaultAwqMappings();
      if (args.is_object() && args.contains("mappings") && !args["mappings"].is_null()) {
        LLMC_ASSIGN_OR_RETURN(p.mappings, ParseMappings(args["mappings"], where));
      }
      if (args.is_object() && args.contains("ignore")) p.ignore = StringList(args["ignore"]);
      recipe.awq = std::move(p);
    }
    if (!args.is_object()) continue;
    std::vector<std::string> targets = {"Linear"};
    if (args.contains("targets")) {
      targets = StringList(args["targets"]);
      if (targets.empty())
        return absl::InvalidArgumentError(absl::StrCat(where, ".targets: must list module names, re: patterns or class names"));
    }
    if (args.contains("ignore")) {
      have_ignore = true;
      for (auto& i : StringList(args["ignore"]))
        if (std::find(ignore.begin(), ignore.end(), i) == ignore.end()) ignore.push_back(i);
    }
    if (args.contains("kv_cache_scheme") && !args["kv_cache_scheme"].is_null()) {
      LLMC_ASSIGN_OR_RETURN(QuantArgs kv, QuantArgs::FromJson(args["kv_cache_scheme"], absl::StrCat(where, ".kv_cache_scheme"), false));
      if (kv.type != QuantType::kFloat || kv.num_bits != 8 || kv.strategy != Strategy::kTensor || kv.is_dynamic())
        return absl::InvalidArgumentError(absl::StrCat(where, ".kv_cache_scheme: llmc writes fp8 per-tensor static kv cache ",
                                                       "scales; use {num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true}"));
      kv_cache = kv;
    }
    if (args.contains("scheme") && !args["scheme"].is_null()) {
      const json& s = args["scheme"];
      if (s.is_string()) {
        LLMC_ASSIGN_OR_RETURN(QuantScheme qs, PresetScheme(s.get<std::string>()));
        qs.targets = targets;
        preset = absl::AsciiStrToUpper(s.get<std::string>());
        if (preset == "INT8") preset = "W8A8";
        groups.emplace_back(fresh_name(), std::move(qs));
      } else if (s.is_object()) {
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
  if (quantizers > 0 || !groups.empty()) {
    if (groups.empty() && !kv_cache)
      return absl::InvalidArgumentError(absl::StrCat(source, ": the quantizing modifier needs a scheme or config_groups"));
    {
      std::set<std::string> names;
      for (const auto& g : groups)
        if (!names.insert(g.first).second)
          return absl::InvalidArgumentError(absl::StrCat(source, ": config group '", g.first,
                                                         "' is defined twice; give each group its own name"));
    }
    if (groups.size() > 1) preset.clear();
    if (groups.empty())
      return absl::InvalidArgumentError(absl::StrCat(source, ": kv_cache_scheme alone is not supported; add a scheme"));
    LLMC_ASSIGN_OR_RETURN(QuantConfig c, QuantConfig::Create(std::move(groups), have_ignore ? ignore : std::vector<std::string>{}));
    c.preset_name = preset;
    c.kv_cache_scheme = kv_cache;
    recipe.quant = std::move(c);
  }
  if (recipe.awq && recipe.smoothquant)
    return absl::InvalidArgumentError(absl::StrCat(source, ": AWQModifier and SmoothQuantModifier both rescale the same layers; use one"));
  if (recipe.gptq && recipe.quant)
    for (const auto& g : recipe.quant->groups())
      if (g.scheme.weights && g.scheme.weights->strategy == Strategy::kBlock)
        return absl::InvalidArgumentError(absl::StrCat(source, ": GPTQModifier cannot solve the block strategy (group ", g.name,
                                                       "); use QuantizationModifier (RTN) for FP8_BLOCK"));
  if (recipe.awq && recipe.quant)
    for (const auto& g : recipe.quant->groups())
      if (!g.scheme.weights || g.scheme.weights->type != QuantType::kInt)
        return absl::InvalidArgumentError(absl::StrCat(source, ": AWQModifier needs integer weight schemes (group ", g.name,
                                                       "); use GPTQModifier or RTN for float formats"));
  return recipe;
}

absl::StatusOr<CompressionRecipe> PresetRecipe(absl::string_view scheme, absl::string_view algorithm,
                                               std::vector<std::string> targets, std::vector<std::string> ignore) {
  std::string algo = absl::AsciiStrToLower(algorithm);
  std::string yaml;
  {
    YAML::Emitter e;
    e << YAML::BeginMap << YAML::Key << "default_stage" << YAML::Value << YAML::BeginMap;
    e << YAML::Key << "default_modifiers" << YAML::Value << YAML::BeginMap;
    std::string quant_mod;
    if (algo == "smoothquant-gptq") algo = "smoothquant+gptq";
    if (algo == "rtn" || algo == "sparsegpt" || algo == "wanda") quant_mod = "QuantizationModifier";
    else if (algo == "gptq" || algo == "smoothquant+gptq") quant_mod = "GPTQModifier";
    else if (algo == "awq") quant_mod = "AWQModifier";
    else
      return absl::InvalidArgumentError(absl::StrCat("unknown --algorithm '", algorithm,
                                                     "'; use rtn, gptq, awq, smoothquant+gptq, sparsegpt or wanda"));
    if (algo == "smoothquant+gptq")
      e << YAML::Key << "SmoothQuantModifier" << YAML::Value << YAML::BeginMap << YAML::Key << "smoothing_strength"
        << YAML::Value << 0.8 << YAML::EndMap;
    if (algo == "sparsegpt" || algo == "wanda")  // 2:4 pruning, then the scheme by RTN
      e << YAML::Key << (algo == "wanda" ? "WandaPruningModifier" : "SparseGPTModifier") << YAML::Value << YAML::BeginMap
        << YAML::Key << "sparsity" << YAML::Value << 0.5 << YAML::Key << "mask_structure" << YAML::Value
        << YAML::DoubleQuoted << "2:4" << YAML::Key << "targets" << YAML::Value << YAML::Flow << targets << YAML::Key
        << "ignore" << YAML::Value << YAML::Flow << ignore << YAML::EndMap;
    e << YAML::Key << quant_mod << YAML::Value << YAML::BeginMap;
    e << YAML::Key << "targets" << YAML::Value << YAML::Flow << targets;
    e << YAML::Key << "ignore" << YAML::Value << YAML::Flow << ignore;
    e << YAML::Key << "scheme" << YAML::Value << absl::AsciiStrToUpper(scheme);
    e << YAML::EndMap << YAML::EndMap << YAML::EndMap << YAML::EndMap;
    yaml = std::string(e.c_str()) + "\n";
  }
  return ParseCompressionRecipe(yaml, absl::StrCat("--scheme ", scheme, " --algorithm ", algorithm));
}

}  // namespace llmc
