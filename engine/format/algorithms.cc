// The registry, and the recipe of a preset run. Recipe parsing is in recipe_parser.cc.
#include "engine/format/algorithms.h"

#include <yaml-cpp/yaml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llmc {

using json = nlohmann::json;

namespace {

// Arguments every quantizing modifier (QuantizationModifier, GPTQModifier, AWQModifier) accepts.
std::vector<AlgorithmArg> QuantArgsList() {
  return {
      {"targets", "list", json::array({"Linear"}), "modules the `scheme` quantizes: names, re: patterns or the class Linear"},
      {"ignore", "list", json::array(), "modules to leave unquantized (e.g. lm_head)"},
      {"scheme", "scheme", nullptr, "a preset name (W4A16, ...) or {PRESET: [targets]}"},
      {"config_groups", "mapping", nullptr, "explicit config groups (targets, weights, input_activations, output_activations, format)"},
      {"kv_cache_scheme", "mapping", nullptr, "fp8 kv cache: {num_bits: 8, type: float, strategy: tensor}; writes k_scale/v_scale"},
      {"weight_observer", "string", nullptr, "observer of this modifier's weights: minmax (memoryless_minmax, static_minmax) or mse"},
      {"input_observer", "string", nullptr, "observer of this modifier's static input activations: static_minmax"},
      {"output_observer", "string", nullptr, "observer of output activations (only dynamic ones are supported, which have none)"},
      {"observer", "mapping", nullptr, "{weights: NAME, input: NAME, output: NAME}: the three observers at once"},
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
    a.args.push_back({"offload_hessians", "bool", false, "where llm-compressor keeps Hessians",
                      "memory placement only; llmc keeps Hessians where the block runs"});
    r.push_back(a);
  }
  {
    AlgorithmInfo a{"AWQModifier", "awq", "activation-aware weight quantization: per-channel scales searched on the block output",
                    true, "per-channel mean |x| of the balance layers' inputs and the block inputs", QuantArgsList()};
    a.args.push_back({"mappings", "list", nullptr, "[{smooth_layer, balance_layers}] (Llama defaults)"});
    a.args.push_back({"duo_scaling", "bool|both", true, "use weight magnitudes as well as activations in the scales (both: half the grid without, half with)"});
    a.args.push_back({"n_grid", "int", 20, "grid points for the scale exponent search (with duo_scaling: the identity and n_grid - 1 ratios from 0 to 1, at least 3; with both: n_grid / 2 ratios from 0 to 1, each without and with duo scaling, at least 4)"});
    a.args.push_back({"offload_device", "string", nullptr, "where llm-compressor keeps cached block inputs",
                      "memory placement only"});
    r.push_back(a);
  }
  {
    AlgorithmInfo a{"SmoothQuantModifier", "smoothquant",
                    "moves activation outliers into the weights: x/s, W*s with s = max|x|^a / max|W|^(1-a)", true,
                    "per-channel max |x| of the balance layers' inputs", {}};
    a.args.push_back({"smoothing_strength", "float", 0.5, "alpha in (0, 1)"});
    a.args.push_back({"mappings", "list", nullptr, "[[[balance layers], smooth layer]] (Llama defaults)"});
    a.args.push_back({"ignore", "list", json::array(), "modules to skip"});
    a.args.push_back({"num_calibration_steps", "int", nullptr, "samples for the smoothing statistics",
                      "llm-compressor declares it and does not use it: every calibration sample is used"});
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
    a.args.push_back({"sequential_update", "bool", true, "update layer by layer",
                      "deprecated in llm-compressor; llmc always prunes layer by layer"});
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

}  // namespace

const std::vector<AlgorithmInfo>& Algorithms() {
  static const std::vector<AlgorithmInfo> kRegistry = MakeRegistry();
  return kRegistry;
}

const std::vector<AlgorithmArg>& CommonModifierArgs() {
  static const std::vector<AlgorithmArg> kArgs = {
      {"index", "int", nullptr, "the modifier's position (llm-compressor bookkeeping)", "bookkeeping only"},
      {"group", "string", nullptr, "the modifier's group name (llm-compressor bookkeeping)", "bookkeeping only"},
      {"start", "float", nullptr, "training step to start at",
       "a training schedule; a one-shot run applies each modifier once, as llm-compressor's oneshot does"},
      {"end", "float", nullptr, "training step to end at",
       "a training schedule; a one-shot run applies each modifier once, as llm-compressor's oneshot does"},
      {"update", "float", nullptr, "training steps between updates",
       "a training schedule; a one-shot run applies each modifier once, as llm-compressor's oneshot does"},
  };
  return kArgs;
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
  for (const auto& g : quant->groups()) {
    if (g.scheme.input_activations &&
        (!g.scheme.input_activations->is_dynamic() || g.scheme.input_activations->dynamic == "local"))
      return true;
    // imatrix_mse weighs the weight error by each input channel's E[x^2] over the calibration tokens.
    if (g.scheme.weights && g.scheme.weights->observer == "imatrix_mse") return true;
  }
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
