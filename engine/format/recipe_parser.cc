// ParseCompressionRecipe (declared in algorithms.h): an llm-compressor recipe, key by key. Every key the parser
// reads is either applied or refused; nothing is skipped. The registry (algorithms.cc) lists each modifier's
// arguments, recipe_support.h what llmc implements of the quantization arguments.
#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "engine/format/algorithms.h"
#include "engine/format/recipe.h"
#include "engine/format/recipe_support.h"

namespace llmc {

using json = nlohmann::json;

namespace {

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// A list of strings (a single string is a list of one, as llm-compressor's validators allow). Anything else, or a
// non-string entry, is an error naming `where`.
absl::StatusOr<std::vector<std::string>> StringList(const json& v, const std::string& where) {
  std::vector<std::string> out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
    return out;
  }
  if (!v.is_array()) return Invalid(where, "must be a list of strings");
  for (const auto& x : v) {
    if (!x.is_string())
      return Invalid(where, absl::StrCat("must be a list of strings; ",
                                         x.dump(-1, ' ', false, json::error_handler_t::replace), " is not a string"));
    out.push_back(x.get<std::string>());
  }
  return out;
}

bool Has(const json& args, const char* key) { return args.is_object() && args.contains(key) && !args[key].is_null(); }

// Module names and re: patterns only: SmoothQuant's and AWQ's mappings and ignore lists, and pruning's ignore list,
// are matched against module names (a class name would match nothing).
absl::Status CheckNamesOrPatterns(const std::vector<std::string>& list, const std::string& where) {
  for (const auto& p : list) {
    auto m = TargetMatcher::Create(p);
    if (!m.ok()) return Invalid(where, m.status().message());
    if (m->kind() == TargetMatcher::Kind::kClass)
      return Invalid(where, absl::StrCat("'", p, "' is a class name, which matches nothing here; use module names or ",
                                         "re: patterns (e.g. 're:.*q_proj$')"));
  }
  return absl::OkStatus();
}

// Finds modifiers in the recipe: {stage: {group_modifiers: {Name: args}}}, or {Name: args} at any of the first
// three levels; in key order (YamlToJson's mappings are sorted; the pipeline fixes the order algorithms run in). Every key of a `*_modifiers` mapping is a modifier (so a misspelled one is reported,
// not skipped); elsewhere a key ending in "Modifier" is. Other keys (stage names, run_type, version, args) are
// structure and metadata, as in llm-compressor.
void CollectModifiers(const json& j, int depth, bool modifier_group, std::vector<std::pair<std::string, json>>* out) {
  if (!j.is_object() || depth > 3) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (modifier_group || absl::EndsWith(it.key(), "Modifier")) out->emplace_back(it.key(), it.value());
    else CollectModifiers(it.value(), depth + 1, absl::EndsWith(it.key(), "_modifiers"), out);
  }
}

std::string SupportedModifiers() {
  std::vector<std::string> names;
  for (const auto& a : Algorithms()) names.push_back(a.modifier);
  return absl::StrJoin(names, ", ");
}

absl::Status CheckArgs(const AlgorithmInfo& info, const json& args, const std::string& where) {
  if (!args.is_object() && !args.is_null()) return Invalid(where, "arguments must be a mapping");
  if (args.is_null()) return absl::OkStatus();
  for (auto it = args.begin(); it != args.end(); ++it) {
    bool known = false;
    for (const auto& a : info.args) known |= a.name == it.key();
    for (const auto& a : CommonModifierArgs()) known |= a.name == it.key();
    if (!known) {
      std::vector<std::string> names;
      for (const auto& a : info.args) names.push_back(a.name);
      return Invalid(where, absl::StrCat("unknown argument '", it.key(), "'; ", info.modifier, " takes: ",
                                         absl::StrJoin(names, ", "), " (and index, group, start, end, update)"));
    }
  }
  // The lifecycle fields have the library's types even though a one-shot run does not use them.
  for (const char* k : {"index", "start", "end", "update"})
    if (Has(args, k) && !args[k].is_number()) return Invalid(absl::StrCat(where, ".", k), "must be a number or null");
  if (Has(args, "group") && !args["group"].is_string()) return Invalid(absl::StrCat(where, ".group"), "must be a string");
  return absl::OkStatus();
}

absl::StatusOr<double> GetNumber(const json& args, const char* key, double dflt, double lo, double hi,
                                 const std::string& where) {
  if (!Has(args, key)) return dflt;
  const json& v = args[key];
  if (!v.is_number() || !(v.get<double>() >= lo) || !(v.get<double>() <= hi))
    return Invalid(absl::StrCat(where, ".", key), absl::StrCat("must be a number in [", lo, ", ", hi, "]"));
  return v.get<double>();
}

absl::StatusOr<int> GetInt(const json& args, const char* key, int dflt, int lo, int hi, const std::string& where) {
  if (!Has(args, key)) return dflt;
  const json& v = args[key];
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    return Invalid(absl::StrCat(where, ".", key), absl::StrCat("must be an integer in [", lo, ", ", hi, "]"));
  return static_cast<int>(v.get<int64_t>());
}

absl::StatusOr<bool> GetBool(const json& args, const char* key, bool dflt, const std::string& where) {
  if (!Has(args, key)) return dflt;
  if (!args[key].is_boolean()) return Invalid(absl::StrCat(where, ".", key), "must be true or false");
  return args[key].get<bool>();
}

absl::StatusOr<std::string> GetMask(const json& args, const std::string& where) {
  if (!Has(args, "mask_structure")) return std::string("0:0");
  const json& v = args["mask_structure"];
  std::vector<std::string> parts;
  if (v.is_string()) parts = absl::StrSplit(v.get<std::string>(), ':');
  int n = 0, m = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &n) || !absl::SimpleAtoi(parts[1], &m) || n < 0 || m < 0 ||
      (m > 0 && (n == 0 || n >= m)) || (m == 0 && n != 0) || m > 64)
    return Invalid(absl::StrCat(where, ".mask_structure"),
                   "must be \"N:M\" with 0 < N < M (e.g. 2:4) or \"0:0\" for unstructured");
  return v.get<std::string>();
}

absl::StatusOr<std::vector<SmoothMapping>> ParseMappings(const json& v, const std::string& where) {
  const std::string w = absl::StrCat(where, ".mappings");
  std::vector<SmoothMapping> out;
  if (!v.is_array()) return Invalid(w, "must be a list");
  for (size_t i = 0; i < v.size(); ++i) {
    const json& m = v[i];
    const std::string wi = absl::StrCat(w, "[", i, "]");
    SmoothMapping sm;
    if (m.is_array() && m.size() == 2 && m[1].is_string()) {  // SmoothQuant: [[balance...], smooth]
      LLMC_ASSIGN_OR_RETURN(sm.balance, StringList(m[0], wi));
      sm.smooth = m[1].get<std::string>();
    } else if (m.is_object()) {  // AWQ: {smooth_layer, balance_layers}
      for (auto it = m.begin(); it != m.end(); ++it) {
        if (it.key() == "smooth_layer" && it.value().is_string()) sm.smooth = it.value().get<std::string>();
        else if (it.key() == "balance_layers") {
          LLMC_ASSIGN_OR_RETURN(sm.balance, StringList(it.value(), absl::StrCat(wi, ".balance_layers")));
        } else if (it.key() == "activation_hook_target" && !it.value().is_null())
          return Invalid(absl::StrCat(wi, ".activation_hook_target"),
                         "not supported yet: llmc observes the input of balance_layers[0] (remove it)");
        else if (it.key() != "activation_hook_target" && it.key() != "smooth_layer")
          return Invalid(wi, absl::StrCat("unknown key '", it.key(), "'; a mapping has smooth_layer and balance_layers"));
      }
    }
    if (sm.balance.empty() || sm.smooth.empty())
      return Invalid(wi, "each mapping is [[balance layers], smooth layer] or {smooth_layer: ..., balance_layers: [...]}");
    LLMC_RETURN_IF_ERROR(CheckNamesOrPatterns(sm.balance, wi));
    LLMC_RETURN_IF_ERROR(CheckNamesOrPatterns({sm.smooth}, wi));
    out.push_back(std::move(sm));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> GetNameList(const json& args, const char* key, const std::string& where) {
  if (!Has(args, key)) return std::vector<std::string>{};
  const std::string w = absl::StrCat(where, ".", key);
  LLMC_ASSIGN_OR_RETURN(std::vector<std::string> list, StringList(args[key], w));
  LLMC_RETURN_IF_ERROR(CheckNamesOrPatterns(list, w));
  return list;
}

// One config group as the recipe spelled it, with the path errors name.
struct RecipeGroup {
  std::string name;
  QuantScheme scheme;
  std::string where;
};

// Applies a quantizing modifier's observer overrides (weight_observer, input_observer, output_observer, or the
// `observer` mapping) to the groups it defined, as llm-compressor's QuantizationMixin does: each replaces the
// observer of that kind of arguments where the group has them. An override with nothing to apply to is an error.
absl::Status ApplyObserverOverrides(const json& args, const std::string& where, std::vector<RecipeGroup>::iterator begin,
                                    std::vector<RecipeGroup>::iterator end) {
  struct Override {
    const char* key;       // the recipe key
    const char* dict_key;  // its key in `observer`
    std::optional<std::string> value;
    std::string where;
  };
  Override ov[] = {{"weight_observer", "weights", {}, ""}, {"input_observer", "input", {}, ""},
                   {"output_observer", "output", {}, ""}};
  bool individual = false;
  for (auto& o : ov) {
    if (!Has(args, o.key)) continue;
    o.where = absl::StrCat(where, ".", o.key);
    if (!args[o.key].is_string()) return Invalid(o.where, "must be an observer name");
    o.value = args[o.key].get<std::string>();
    individual = true;
  }
  if (Has(args, "observer")) {
    const std::string w = absl::StrCat(where, ".observer");
    if (individual)
      return Invalid(w, "give either weight_observer/input_observer/output_observer or the observer mapping, not both");
    const json& d = args["observer"];
    if (!d.is_object()) return Invalid(w, "must be a mapping {weights: NAME, input: NAME, output: NAME}");
    for (auto it = d.begin(); it != d.end(); ++it) {
      Override* o = nullptr;
      for (auto& x : ov)
        if (it.key() == x.dict_key) o = &x;
      if (!o) return Invalid(w, absl::StrCat("unknown key '", it.key(), "'; the keys are weights, input and output"));
      o->where = absl::StrCat(w, ".", it.key());
      if (!it.value().is_string()) return Invalid(o->where, "must be an observer name");
      o->value = it.value().get<std::string>();
    }
  }
  for (size_t k = 0; k < 3; ++k) {
    const Override& o = ov[k];
    if (!o.value) continue;
    int applied = 0;
    for (auto g = begin; g != end; ++g) {
      std::optional<QuantArgs>& a =
          k == 0 ? g->scheme.weights : k == 1 ? g->scheme.input_activations : g->scheme.output_activations;
      if (!a || (k > 0 && a->dynamic == "true")) continue;  // dynamic activations have no observer
      a->observer = absl::AsciiStrToLower(*o.value);
      ++applied;
    }
    if (applied > 0) continue;
    if (begin == end)
      return Invalid(o.where, "this modifier defines no config groups (no scheme or config_groups), so there is "
                              "nothing to observe; put the observer on the modifier that has the scheme");
    return Invalid(o.where, absl::StrCat("no group of this modifier has ",
                                         k == 0 ? "weights" : k == 1 ? "static input activations" : "static output activations",
                                         k == 0 ? "" : " (dynamic activations are quantized at run time, without an observer)"));
  }
  return absl::OkStatus();
}

// The arguments of one quantizing modifier (QuantizationModifier, GPTQModifier, AWQModifier) that describe what
// it quantizes: its config groups (appended to `groups`), ignore entries and kv cache scheme.
struct QuantState {
  std::vector<RecipeGroup> groups;
  std::set<std::string> explicit_names;
  int next_auto = 0;
  std::vector<std::string> ignore;
  bool have_ignore = false;
  std::optional<QuantArgs> kv_cache;
  std::string preset;
  std::vector<std::string> group_modifiers;  // modifiers that defined groups

  std::string FreshName() {
    std::string n;
    do n = absl::StrCat("group_", next_auto++);
    while (explicit_names.count(n));
    return n;
  }
};

absl::Status ParseQuantizingArgs(const std::string& name, const json& args, const std::string& where, QuantState* q) {
  if (!args.is_object()) return absl::OkStatus();
  const bool has_scheme = Has(args, "scheme");
  std::vector<std::string> targets = {"Linear"};
  if (args.contains("targets")) {
    LLMC_ASSIGN_OR_RETURN(targets, StringList(args["targets"], absl::StrCat(where, ".targets")));
    if (targets.empty()) return Invalid(absl::StrCat(where, ".targets"), "must list module names, re: patterns or class names");
    // As in llm-compressor, targets only says what `scheme` applies to; config groups name their own.
    if (!has_scheme && targets != std::vector<std::string>{"Linear"})
      return Invalid(absl::StrCat(where, ".targets"),
                     "applies to `scheme` only, and this modifier has none; with config_groups give each group its "
                     "targets");
  }
  if (args.contains("ignore")) {
    q->have_ignore = true;
    LLMC_ASSIGN_OR_RETURN(std::vector<std::string> ignore, StringList(args["ignore"], absl::StrCat(where, ".ignore")));
    for (auto& i : ignore)
      if (std::find(q->ignore.begin(), q->ignore.end(), i) == q->ignore.end()) q->ignore.push_back(i);
  }
  if (Has(args, "kv_cache_scheme")) {
    const std::string w = absl::StrCat(where, ".kv_cache_scheme");
    LLMC_RETURN_IF_ERROR(CheckRecipeArgsSpelling(args["kv_cache_scheme"], w));
    LLMC_ASSIGN_OR_RETURN(QuantArgs kv, QuantArgs::FromJson(args["kv_cache_scheme"], w, false));
    LLMC_RETURN_IF_ERROR(ResolveRecipeArgs(&kv, QuantRole::kKvCache, w));
    if (q->kv_cache) return Invalid(w, "given by two modifiers; give it once");
    q->kv_cache = kv;
  }
  const size_t first = q->groups.size();
  if (has_scheme) {
    const json& s = args["scheme"];
    const std::string w = absl::StrCat(where, ".scheme");
    if (s.is_string()) {
      LLMC_ASSIGN_OR_RETURN(QuantScheme qs, PresetScheme(s.get<std::string>()));
      qs.targets = targets;
      q->preset = absl::AsciiStrToUpper(s.get<std::string>());
      if (q->preset == "INT8") q->preset = "W8A8";
      q->groups.push_back({q->FreshName(), std::move(qs), w});
    } else if (s.is_object()) {
      for (auto it = s.begin(); it != s.end(); ++it) {
        const std::string wk = absl::StrCat(w, ".", it.key());
        LLMC_ASSIGN_OR_RETURN(QuantScheme qs, PresetScheme(it.key()));
        LLMC_ASSIGN_OR_RETURN(qs.targets, StringList(it.value(), wk));
        if (qs.targets.empty()) return Invalid(wk, "list the targets");
        q->groups.push_back({q->FreshName(), std::move(qs), wk});
      }
    } else {
      return Invalid(w, "must be a preset name or {PRESET: [targets]}");
    }
  }
  if (Has(args, "config_groups")) {
    const json& cg = args["config_groups"];
    if (!cg.is_object()) return Invalid(absl::StrCat(where, ".config_groups"), "must be a mapping");
    for (auto it = cg.begin(); it != cg.end(); ++it) {
      const std::string w = absl::StrCat(where, ".config_groups.", it.key());
      if (it.value().is_object())
        for (const char* kind : {"weights", "input_activations", "output_activations"})
          if (it.value().contains(kind))
            LLMC_RETURN_IF_ERROR(CheckRecipeArgsSpelling(it.value()[kind], absl::StrCat(w, ".", kind)));
      LLMC_ASSIGN_OR_RETURN(QuantScheme qs, QuantScheme::FromJson(it.value(), w));
      q->groups.push_back({it.key(), std::move(qs), w});
    }
  }
  auto begin = q->groups.begin() + static_cast<std::ptrdiff_t>(first);
  LLMC_RETURN_IF_ERROR(ApplyObserverOverrides(args, where, begin, q->groups.end()));
  for (auto g = begin; g != q->groups.end(); ++g) LLMC_RETURN_IF_ERROR(ResolveRecipeScheme(&g->scheme, g->where));
  if (q->groups.size() > first) q->group_modifiers.push_back(name);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompressionRecipe> ParseCompressionRecipe(absl::string_view text, absl::string_view source) {
  LLMC_ASSIGN_OR_RETURN(json root, YamlToJson(text, source));
  if (!root.is_object()) return Invalid(source, "a recipe must be a YAML mapping");
  std::vector<std::pair<std::string, json>> mods;
  CollectModifiers(root, 0, false, &mods);
  if (mods.empty())
    return Invalid(source, absl::StrCat("no modifier found; expected e.g. ",
                                        "default_stage: {default_modifiers: {GPTQModifier: {scheme: W4A16, ignore: "
                                        "[lm_head]}}}; supported modifiers: ",
                                        SupportedModifiers()));
  CompressionRecipe recipe;
  recipe.yaml = std::string(text);
  QuantState q;
  for (const auto& [name, args] : mods)
    if (args.is_object() && args.contains("config_groups") && args["config_groups"].is_object())
      for (auto it = args["config_groups"].begin(); it != args["config_groups"].end(); ++it)
        q.explicit_names.insert(it.key());
  int quantizers = 0;
  for (const auto& [name, args] : mods) {
    const std::string where = absl::StrCat(source, ": ", name);
    const AlgorithmInfo* info = nullptr;
    for (const auto& a : Algorithms())
      if (a.modifier == name) info = &a;
    if (!info) return Invalid(where, absl::StrCat("unknown modifier; supported: ", SupportedModifiers()));
    LLMC_RETURN_IF_ERROR(CheckArgs(*info, args, where));
    if (name == "SmoothQuantModifier") {
      if (recipe.smoothquant) return Invalid(where, "given twice");
      SmoothQuantParams p;
      LLMC_ASSIGN_OR_RETURN(p.smoothing_strength, GetNumber(args, "smoothing_strength", 0.5, 0.0, 1.0, where));
      p.mappings = DefaultSmoothQuantMappings();
      if (Has(args, "mappings")) {
        LLMC_ASSIGN_OR_RETURN(p.mappings, ParseMappings(args["mappings"], where));
      }
      LLMC_ASSIGN_OR_RETURN(p.ignore, GetNameList(args, "ignore", where));
      if (Has(args, "num_calibration_steps")) LLMC_RETURN_IF_ERROR(GetInt(args, "num_calibration_steps", 0, 1, 1 << 30, where).status());
      recipe.smoothquant = std::move(p);
      continue;
    }
    if (name == "SparseGPTModifier" || name == "WandaPruningModifier") {
      if (recipe.sparsity) return Invalid(where, "only one pruning modifier per recipe");
      SparsityParams p;
      p.method = name == "WandaPruningModifier" ? "wanda" : "sparsegpt";
      LLMC_ASSIGN_OR_RETURN(p.sparsity, GetNumber(args, "sparsity", 0.5, 0.0, 0.99, where));
      LLMC_ASSIGN_OR_RETURN(p.mask_structure, GetMask(args, where));
      LLMC_ASSIGN_OR_RETURN(p.block_size, GetInt(args, "block_size", 128, 1, 1 << 16, where));
      LLMC_ASSIGN_OR_RETURN(p.dampening_frac, GetNumber(args, "dampening_frac", 0.01, 0.0, 10.0, where));
      LLMC_RETURN_IF_ERROR(GetBool(args, "sequential_update", true, where).status());
      if (args.is_object() && args.contains("targets")) {
        const std::string w = absl::StrCat(where, ".targets");
        LLMC_ASSIGN_OR_RETURN(p.targets, StringList(args["targets"], w));
        if (p.targets.empty()) return Invalid(w, "must list modules");
        std::vector<std::string> not_linear;
        for (const auto& t : p.targets)
          if (t != "Linear") not_linear.push_back(t);
        LLMC_RETURN_IF_ERROR(CheckNamesOrPatterns(not_linear, w));  // the class Linear is the one class matched
      }
      LLMC_ASSIGN_OR_RETURN(p.ignore, GetNameList(args, "ignore", where));
      recipe.sparsity = std::move(p);
      continue;
    }
    // Quantizing modifiers.
    ++quantizers;
    if (name == "GPTQModifier") {
      if (recipe.gptq) return Invalid(where, "given twice");
      GptqParams p;
      LLMC_ASSIGN_OR_RETURN(p.block_size, GetInt(args, "block_size", 128, 1, 1 << 16, where));
      LLMC_ASSIGN_OR_RETURN(p.dampening_frac, GetNumber(args, "dampening_frac", 0.01, 0.0, 10.0, where));
      if (args.is_object() && args.contains("actorder")) {
        const json& v = args["actorder"];
        if (v.is_null() || v == false) p.actorder = "none";
        else if (v.is_string() && (v == "static" || v == "group" || v == "weight" || v == "none")) p.actorder = v.get<std::string>();
        else return Invalid(absl::StrCat(where, ".actorder"), "must be null, static, group or weight");
      }
      LLMC_RETURN_IF_ERROR(GetBool(args, "offload_hessians", false, where).status());
      recipe.gptq = p;
    } else if (name == "AWQModifier") {
      if (recipe.awq) return Invalid(where, "given twice");
      AwqParams p;
      if (Has(args, "duo_scaling") && args["duo_scaling"].is_string()) {
        if (args["duo_scaling"] != "both")
          return Invalid(absl::StrCat(where, ".duo_scaling"), "must be true, false or both");
        p.duo_scaling = p.duo_scaling_both = true;
      } else {
        LLMC_ASSIGN_OR_RETURN(p.duo_scaling, GetBool(args, "duo_scaling", true, where));
      }
      LLMC_ASSIGN_OR_RETURN(p.n_grid, GetInt(args, "n_grid", 20, 2, 1000, where));
      if (p.duo_scaling_both && p.n_grid < 4)
        return Invalid(absl::StrCat(where, ".n_grid"),
                       "must be at least 4 with duo_scaling: both (the grid is n_grid / 2 ratios i / (n_grid / 2 - 1), "
                       "each without and with duo scaling)");
      if (p.duo_scaling && p.n_grid < 3)
        return Invalid(absl::StrCat(where, ".n_grid"),
                       "must be at least 3 with duo_scaling (the grid is the identity plus n_grid - 1 ratios "
                       "i / (n_grid - 2)); use n_grid >= 3 or duo_scaling: false");
      p.mappings = DefaultAwqMappings();
      if (Has(args, "mappings")) {
        LLMC_ASSIGN_OR_RETURN(p.mappings, ParseMappings(args["mappings"], where));
      }
      if (Has(args, "offload_device") && !args["offload_device"].is_string())
        return Invalid(absl::StrCat(where, ".offload_device"), "must be a device name or null");
      LLMC_ASSIGN_OR_RETURN(p.ignore, GetNameList(args, "ignore", where));
      recipe.awq = std::move(p);
    }
    LLMC_RETURN_IF_ERROR(ParseQuantizingArgs(name, args, where, &q));
  }
  if (quantizers > 0 || !q.groups.empty()) {
    if (q.groups.empty() && !q.kv_cache)
      return Invalid(source, "the quantizing modifier needs a scheme or config_groups");
    if (q.groups.empty()) return Invalid(source, "kv_cache_scheme alone is not supported; add a scheme");
    {
      std::set<std::string> names;
      for (const auto& g : q.groups)
        if (!names.insert(g.name).second)
          return Invalid(source, absl::StrCat("config group '", g.name, "' is defined twice; give each group its own name"));
    }
    if (recipe.gptq && q.group_modifiers.size() > 1)
      return Invalid(source, absl::StrCat("config groups come from ", absl::StrJoin(q.group_modifiers, " and "),
                                          ": llmc solves every group of a recipe with GPTQ when GPTQModifier is "
                                          "present, so groups of another quantizing modifier would not get the "
                                          "algorithm they ask for; define all groups in GPTQModifier"));
    for (const auto& g : q.groups) {
      const QuantArgs& w = *g.scheme.weights;
      if (!w.actorder) continue;
      const std::string wa = absl::StrCat(g.where, ".weights.actorder");
      if (!recipe.gptq)
        return Invalid(wa, "activation ordering reorders GPTQ's column walk; without GPTQModifier the weights are "
                           "rounded in column order (remove actorder, or use GPTQModifier)");
      if (w.strategy != Strategy::kGroup && w.strategy != Strategy::kTensorGroup)
        return Invalid(wa, absl::StrCat("llmc applies activation ordering to the group and tensor_group strategies; ",
                                        "strategy ", StrategyName(w.strategy), " would be written with it and solved ",
                                        "without it (remove actorder)"));
    }
    std::vector<std::pair<std::string, QuantScheme>> groups;
    for (auto& g : q.groups) groups.emplace_back(g.name, std::move(g.scheme));
    if (groups.size() > 1) q.preset.clear();
    LLMC_ASSIGN_OR_RETURN(QuantConfig c,
                          QuantConfig::Create(std::move(groups), q.have_ignore ? q.ignore : std::vector<std::string>{}));
    c.preset_name = q.preset;
    c.kv_cache_scheme = q.kv_cache;
    recipe.quant = std::move(c);
  }
  if (recipe.awq && recipe.smoothquant)
    return Invalid(source, "AWQModifier and SmoothQuantModifier both rescale the same layers; use one");
  if (recipe.gptq && recipe.quant)
    for (const auto& g : recipe.quant->groups())
      if (g.scheme.weights && g.scheme.weights->strategy == Strategy::kBlock)
        return Invalid(source, absl::StrCat("GPTQModifier cannot solve the block strategy (group ", g.name,
                                            "); use QuantizationModifier (RTN) for FP8_BLOCK"));
  return recipe;
}

}  // namespace llmc
