// Every recipe key llmc accepts changes what it writes, or is refused. The test walks every key: each argument of
// each modifier in the registry (engine/format/algorithms.h), the lifecycle fields every modifier takes, each key of
// a config group (QuantScheme::Keys) and each quantization argument (QuantArgs::Keys) of weights, input and output
// activations and the kv cache. For each it runs a recipe and the recipe with that key changed, and checks the
// outcome the table below states:
//   kChanges  the compressed tensors or config.json's quantization_config differ;
//   kSame     they are identical: an argument the registry marks no_effect (with its reason), or a key given the
//             one value llmc accepts for it (the value it writes anyway);
//   kRefused  the job fails with INVALID_ARGUMENT whose message names the key.
// The table must cover every key (a new argument without a case fails the test), and a registry argument without a
// no_effect reason must change the output or be refused somewhere.
//
// Runs are real jobs (RunJob, the path of `llmc compress` and the service) on a small synthetic Llama (2 blocks,
// hidden 256) with the fixture's tokenizer and a slice of ../shared/data/calibration.txt, 2 samples of 32 tokens.
// The keys that only say what is quantized (targets, ignore, scheme, config_groups, kv_cache_scheme) are run on
// QuantizationModifier; on GPTQModifier and AWQModifier, whose arguments go through the same code into the same
// config, they are checked on the parsed quantization_config (kParse) to keep the calibrated runs few.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/format/algorithms.h"
#include "engine/format/job_recipe.h"
#include "engine/io/model_dir.h"
#include "engine/io/safetensors.h"
#include "engine/pipeline/run_job.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_paths.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::HasSubstr;

enum class Effect { kChanges, kSame, kRefused };
enum class Mode {
  kRun,    // compress the model with both recipes
  kParse,  // compare the quantization_config of the parsed recipes (what every run writes as config.json)
};

struct Case {
  std::string key;      // "GPTQModifier.block_size", "*.start" (every modifier), "scheme.format", "weights.observer"
  std::string base;     // a recipe
  std::string variant;  // the recipe with the key changed
  Effect effect;
  Mode mode = Mode::kRun;
  std::string message;  // kRefused: what the message must contain (default: the key)
};

// ---- recipes ------------------------------------------------------------------------------------------------------

// A QuantizationModifier with one config group `g` (targets [Linear]) of the given argument mappings.
std::string Group(const std::string& weights, const std::string& input = "", const std::string& output = "",
                  const std::string& group_extra = "", const std::string& modifier = "QuantizationModifier",
                  const std::string& modifier_extra = "") {
  std::string y = absl::StrCat(modifier, ":\n  ignore: [lm_head]\n", modifier_extra, "  config_groups:\n    g:\n",
                               "      targets: [Linear]\n      weights: {", weights, "}\n");
  if (!input.empty()) absl::StrAppend(&y, "      input_activations: {", input, "}\n");
  if (!output.empty()) absl::StrAppend(&y, "      output_activations: {", output, "}\n");
  absl::StrAppend(&y, group_extra);
  return y;
}

// A one-line modifier: `Name: {args}`, plus more modifiers.
std::string Mod(const std::string& name, const std::string& args, const std::string& more = "") {
  return absl::StrCat(more, name, ": {", args, "}\n");
}

constexpr char kW4[] = "num_bits: 4, group_size: 128";
constexpr char kW8Channel[] = "num_bits: 8, strategy: channel";
constexpr char kA8Token[] = "num_bits: 8, strategy: token, dynamic: true";
constexpr char kKv[] = "num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true";

std::string WithKv(const std::string& kv) {
  return absl::StrCat("QuantizationModifier:\n  scheme: W4A16\n  ignore: [lm_head]\n  kv_cache_scheme: {", kv, "}\n");
}

std::vector<Case> Cases() {
  std::vector<Case> c;
  const auto changes = Effect::kChanges;
  const auto same = Effect::kSame;
  const auto refused = Effect::kRefused;
  auto add = [&](std::string key, std::string base, std::string variant, Effect e, Mode m = Mode::kRun,
                 std::string msg = "") { c.push_back({std::move(key), std::move(base), std::move(variant), e, m, msg}); };

  // ---- weights ----
  add("weights.num_bits", Group(kW4), Group("num_bits: 8, group_size: 128"), changes);
  add("weights.type", Group(kW8Channel), Group("num_bits: 8, type: float, strategy: channel"), changes);
  add("weights.symmetric", Group(kW4), Group("num_bits: 4, group_size: 128, symmetric: false"), changes);
  add("weights.group_size", Group(kW4), Group("num_bits: 4, group_size: 64"), changes);
  add("weights.strategy", Group(kW8Channel), Group("num_bits: 8, strategy: tensor"), changes);
  add("weights.block_structure", Group("num_bits: 8, type: float, strategy: block, block_structure: [128, 128]"),
      Group("num_bits: 8, type: float, strategy: block, block_structure: [64, 64]"), changes);
  add("weights.dynamic", Group(kW4), Group("num_bits: 4, group_size: 128, dynamic: true"), refused);
  add("weights.actorder", Group(kW4), Group("num_bits: 4, group_size: 128, actorder: weight"), refused);
  add("weights.actorder", Group(kW4, "", "", "", "GPTQModifier"),
      Group("num_bits: 4, group_size: 128, actorder: group", "", "", "", "GPTQModifier"), changes);
  add("weights.scale_dtype", Group("num_bits: 8, type: float, strategy: group, group_size: 32"),
      Group("num_bits: 8, type: float, strategy: group, group_size: 32, scale_dtype: torch.uint8"), changes);
  add("weights.scale_dtype", Group(kW4), Group("num_bits: 4, group_size: 128, scale_dtype: torch.float16"), refused);
  add("weights.zp_dtype", Group("num_bits: 4, group_size: 128, symmetric: false"),
      Group("num_bits: 4, group_size: 128, symmetric: false, zp_dtype: torch.int8"), same);
  add("weights.zp_dtype", Group("num_bits: 4, group_size: 128, symmetric: false"),
      Group("num_bits: 4, group_size: 128, symmetric: false, zp_dtype: torch.int32"), refused);
  add("weights.observer", Group(kW4), Group("num_bits: 4, group_size: 128, observer: mse"), changes);
  // imatrix_mse weighs the search by each input channel's E[x^2] (calibrated, in RTN and in GPTQ).
  add("weights.observer", Group("num_bits: 4, group_size: 128, observer: mse"),
      Group("num_bits: 4, group_size: 128, observer: imatrix_mse"), changes);
  add("weights.observer", Group(kW4, "", "", "", "GPTQModifier"),
      Group("num_bits: 4, group_size: 128, observer: imatrix_mse", "", "", "", "GPTQModifier"), changes);
  add("weights.observer", Group("num_bits: 8, type: float, strategy: tensor"),
      Group("num_bits: 8, type: float, strategy: tensor, observer: imatrix_mse"), refused);
  add("weights.observer_kwargs", Group("num_bits: 4, group_size: 128, observer: imatrix_mse"),
      Group("num_bits: 4, group_size: 128, observer: imatrix_mse, observer_kwargs: {norm: 2.0}"), changes);
  add("weights.observer", Group("num_bits: 4, type: float, strategy: tensor_group, group_size: 16"),
      Group("num_bits: 4, type: float, strategy: tensor_group, group_size: 16, observer: mse"), refused);
  add("weights.observer_kwargs", Group("num_bits: 4, group_size: 128, observer: mse"),
      Group("num_bits: 4, group_size: 128, observer: mse, observer_kwargs: {maxshrink: 0.6, grid: 20}"), changes);
  add("weights.observer_kwargs", Group(kW4), Group("num_bits: 4, group_size: 128, observer_kwargs: {norm: 2.0}"),
      refused);

  // ---- input activations (dynamic ones are written for the reader; static ones write input_scale) ----
  add("input_activations.num_bits", Group(kW8Channel, kA8Token), Group(kW8Channel, "num_bits: 4, strategy: token, dynamic: true"), changes);
  add("input_activations.type", Group(kW8Channel, kA8Token),
      Group(kW8Channel, "num_bits: 8, type: float, strategy: token, dynamic: true"), changes);
  add("input_activations.symmetric", Group(kW8Channel, kA8Token),
      Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, symmetric: false"), changes);
  add("input_activations.group_size", Group(kW8Channel, "num_bits: 8, strategy: group, group_size: 128, dynamic: true"),
      Group(kW8Channel, "num_bits: 8, strategy: group, group_size: 64, dynamic: true"), changes);
  add("input_activations.strategy", Group(kW8Channel, kA8Token),
      Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: true"), changes);
  add("input_activations.block_structure", Group(kW8Channel, kA8Token),
      Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, block_structure: [128, 128]"), refused);
  add("input_activations.dynamic", Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: true"),
      Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: false"), changes);
  add("input_activations.dynamic", Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: true"),
      Group(kW8Channel, "num_bits: 8, strategy: channel, dynamic: false"), refused);
  add("input_activations.actorder", Group(kW8Channel, kA8Token),
      Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, actorder: weight"), refused);
  add("input_activations.scale_dtype", Group(kW8Channel, kA8Token),
      Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, scale_dtype: torch.float16"), changes);
  add("input_activations.zp_dtype", Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, symmetric: false"),
      Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, symmetric: false, zp_dtype: torch.int8"), same);
  add("input_activations.zp_dtype", Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, symmetric: false"),
      Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, symmetric: false, zp_dtype: torch.int32"), refused);
  add("input_activations.observer", Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: false"),
      Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: false, observer: static_minmax"), same, Mode::kParse);
  add("input_activations.observer", Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: false"),
      Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: false, observer: minmax"), refused);
  add("input_activations.observer", Group(kW8Channel, kA8Token),
      Group(kW8Channel, "num_bits: 8, strategy: token, dynamic: true, observer: mse"), refused);
  add("input_activations.observer_kwargs", Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: false"),
      Group(kW8Channel, "num_bits: 8, strategy: tensor, dynamic: false, observer_kwargs: {norm: 2.0}"), refused);

  // ---- output activations: dynamic ones are written for the reader; static ones would need output scales ----
  const std::string o8 = "num_bits: 8, strategy: token, dynamic: true";
  add("output_activations.num_bits", Group(kW8Channel, "", o8), Group(kW8Channel, "", "num_bits: 4, strategy: token, dynamic: true"), changes);
  add("output_activations.type", Group(kW8Channel, "", o8),
      Group(kW8Channel, "", "num_bits: 8, type: float, strategy: token, dynamic: true"), changes);
  add("output_activations.symmetric", Group(kW8Channel, "", o8), Group(kW8Channel, "", o8 + ", symmetric: false"), changes);
  add("output_activations.group_size", Group(kW8Channel, "", "num_bits: 8, strategy: group, group_size: 128, dynamic: true"),
      Group(kW8Channel, "", "num_bits: 8, strategy: group, group_size: 64, dynamic: true"), changes);
  add("output_activations.strategy", Group(kW8Channel, "", o8),
      Group(kW8Channel, "", "num_bits: 8, strategy: tensor, dynamic: true"), changes);
  add("output_activations.block_structure", Group(kW8Channel, "", o8),
      Group(kW8Channel, "", o8 + ", block_structure: [128, 128]"), refused);
  add("output_activations.dynamic", Group(kW8Channel, "", "num_bits: 8, strategy: tensor, dynamic: true"),
      Group(kW8Channel, "", "num_bits: 8, strategy: tensor, dynamic: false"), refused, Mode::kRun,
      "static output activations are not supported");
  add("output_activations.actorder", Group(kW8Channel, "", o8), Group(kW8Channel, "", o8 + ", actorder: weight"), refused);
  add("output_activations.scale_dtype", Group(kW8Channel, "", o8),
      Group(kW8Channel, "", o8 + ", scale_dtype: torch.float16"), changes);
  add("output_activations.zp_dtype", Group(kW8Channel, "", o8 + ", symmetric: false"),
      Group(kW8Channel, "", o8 + ", symmetric: false, zp_dtype: torch.int8"), same);
  add("output_activations.zp_dtype", Group(kW8Channel, "", o8), Group(kW8Channel, "", o8 + ", zp_dtype: torch.int8"),
      refused);
  add("output_activations.observer", Group(kW8Channel, "", o8), Group(kW8Channel, "", o8 + ", observer: minmax"), refused);
  add("output_activations.observer_kwargs", Group(kW8Channel, "", o8),
      Group(kW8Channel, "", o8 + ", observer_kwargs: {norm: 2.0}"), refused);

  // ---- kv cache: fp8 per tensor, static; its scheme as a whole writes k_scale/v_scale (QuantizationModifier) ----
  const std::string kv = kKv;
  add("kv_cache_scheme.num_bits", WithKv(kv), WithKv(absl::StrReplaceAll(kv, {{"num_bits: 8", "num_bits: 4"}})), refused);
  add("kv_cache_scheme.type", WithKv(kv), WithKv(absl::StrReplaceAll(kv, {{"type: float", "type: int"}})), refused);
  add("kv_cache_scheme.symmetric", WithKv(kv), WithKv(absl::StrReplaceAll(kv, {{"symmetric: true", "symmetric: false"}})),
      refused);
  add("kv_cache_scheme.group_size", WithKv(kv), WithKv(kv + ", group_size: 128"), refused);
  add("kv_cache_scheme.strategy", WithKv(kv), WithKv(absl::StrReplaceAll(kv, {{"tensor", "attn_head"}})), refused);
  add("kv_cache_scheme.block_structure", WithKv(kv), WithKv(kv + ", block_structure: [1, 1]"), refused);
  add("kv_cache_scheme.dynamic", WithKv(kv), WithKv(absl::StrReplaceAll(kv, {{"dynamic: false", "dynamic: true"}})),
      refused);
  add("kv_cache_scheme.actorder", WithKv(kv), WithKv(kv + ", actorder: weight"), refused);
  add("kv_cache_scheme.scale_dtype", WithKv(kv), WithKv(kv + ", scale_dtype: torch.float16"), refused);
  add("kv_cache_scheme.zp_dtype", WithKv(kv), WithKv(kv + ", zp_dtype: torch.int8"), refused);
  add("kv_cache_scheme.observer", WithKv(kv), WithKv(kv + ", observer: static_minmax"), same, Mode::kParse);
  add("kv_cache_scheme.observer", WithKv(kv), WithKv(kv + ", observer: mse"), refused);
  add("kv_cache_scheme.observer_kwargs", WithKv(kv), WithKv(kv + ", observer_kwargs: {norm: 2.0}"), refused);

  // ---- config group keys ----
  add("scheme.targets", Group(kW4), absl::StrReplaceAll(Group(kW4), {{"targets: [Linear]", "targets: ['re:.*mlp.*']"}}),
      changes);
  add("scheme.targets", Group(kW4), absl::StrReplaceAll(Group(kW4), {{"targets: [Linear]", "targets: [LlamaAttention]"}}),
      refused, Mode::kRun, "attention quantization");
  add("scheme.targets", Group(kW4), absl::StrReplaceAll(Group(kW4), {{"targets: [Linear]", "targets: ['re:.*self_attn$']"}}),
      refused, Mode::kRun, "targets the attention module model.layers.0.self_attn");
  add("scheme.targets", Group(kW4), absl::StrReplaceAll(Group(kW4), {{"targets: [Linear]", "targets: ['re:.*mlp$']"}}),
      refused, Mode::kRun, "quantizes no module");
  add("scheme.weights", Group(kW4), Group(kW8Channel), changes);
  add("scheme.input_activations", Group(kW8Channel), Group(kW8Channel, kA8Token), changes);
  add("scheme.output_activations", Group(kW8Channel), Group(kW8Channel, "", o8), changes);
  add("scheme.format", Group(kW4), Group(kW4, "", "", "      format: int-quantized\n"), changes);
  add("scheme.format", Group(kW4), Group(kW4, "", "", "      format: float-quantized\n"), refused, Mode::kRun,
      "format float-quantized");

  // ---- QuantizationModifier ----
  const std::string qm = Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head]");
  add("QuantizationModifier.targets", qm, Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head], targets: ['re:.*mlp.*']"),
      changes);
  add("QuantizationModifier.targets", Group(kW4), Group(kW4, "", "", "", "QuantizationModifier", "  targets: ['re:.*mlp.*']\n"),
      refused);
  add("QuantizationModifier.ignore", qm, Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head, 're:.*layers\\.0\\..*']"),
      changes);
  add("QuantizationModifier.scheme", qm, Mod("QuantizationModifier", "scheme: W8A16, ignore: [lm_head]"), changes);
  add("QuantizationModifier.config_groups", qm, Group(kW8Channel), changes);
  add("QuantizationModifier.kv_cache_scheme", qm, WithKv(kv), changes);
  add("QuantizationModifier.weight_observer", qm, Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head], weight_observer: mse"),
      changes);
  add("QuantizationModifier.input_observer", Mod("QuantizationModifier", "scheme: FP8, ignore: [lm_head]"),
      Mod("QuantizationModifier", "scheme: FP8, ignore: [lm_head], input_observer: static_minmax"), same, Mode::kParse);
  add("QuantizationModifier.input_observer", Mod("QuantizationModifier", "scheme: FP8, ignore: [lm_head]"),
      Mod("QuantizationModifier", "scheme: FP8, ignore: [lm_head], input_observer: mse"), refused, Mode::kRun,
      "input_activations.observer");
  add("QuantizationModifier.input_observer", qm, Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head], input_observer: static_minmax"),
      refused);
  add("QuantizationModifier.output_observer", qm,
      Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head], output_observer: static_minmax"), refused);
  add("QuantizationModifier.observer", qm, Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head], observer: {weights: mse}"),
      changes);
  for (const char* k : {"index: 3", "group: quant", "start: -1", "end: 10", "update: 0.5"}) {
    const std::string key = std::string(k).substr(0, std::string(k).find(':'));
    add("*." + key, qm, Mod("QuantizationModifier", absl::StrCat("scheme: W4A16, ignore: [lm_head], ", k)), same);
  }

  // ---- GPTQModifier ----
  const std::string gptq = Mod("GPTQModifier", "scheme: W4A16, ignore: [lm_head]");
  auto gptq_with = [](const std::string& a) { return Mod("GPTQModifier", "scheme: W4A16, ignore: [lm_head], " + a); };
  add("GPTQModifier.targets", gptq, gptq_with("targets: ['re:.*mlp.*']"), changes, Mode::kParse);
  add("GPTQModifier.ignore", gptq, Mod("GPTQModifier", "scheme: W4A16, ignore: [lm_head, 're:.*mlp.*']"), changes,
      Mode::kParse);
  add("GPTQModifier.scheme", gptq, Mod("GPTQModifier", "scheme: W8A16, ignore: [lm_head]"), changes, Mode::kParse);
  add("GPTQModifier.config_groups", gptq, Group(kW8Channel, "", "", "", "GPTQModifier"), changes, Mode::kParse);
  add("GPTQModifier.kv_cache_scheme", gptq, gptq_with(absl::StrCat("kv_cache_scheme: {", kv, "}")), changes, Mode::kParse);
  add("GPTQModifier.weight_observer", gptq, gptq_with("weight_observer: mse"), changes);
  add("GPTQModifier.observer", gptq, gptq_with("observer: {weights: mse}"), changes, Mode::kParse);
  add("GPTQModifier.input_observer", gptq, gptq_with("input_observer: static_minmax"), refused);
  add("GPTQModifier.output_observer", gptq, gptq_with("output_observer: static_minmax"), refused);
  // The lazy-update block width changes the result only by float rounding (the updates are exact in exact
  // arithmetic), which may flip no 4-bit code of this small model on some BLAS kernels: 8-bit codes, one column a
  // block against 128.
  add("GPTQModifier.block_size", Mod("GPTQModifier", "scheme: W8A16, ignore: [lm_head]"),
      Mod("GPTQModifier", "scheme: W8A16, ignore: [lm_head], block_size: 1"), changes);
  add("GPTQModifier.dampening_frac", gptq, gptq_with("dampening_frac: 0.5"), changes);
  add("GPTQModifier.actorder", gptq, gptq_with("actorder: group"), changes);
  add("GPTQModifier.offload_hessians", gptq, gptq_with("offload_hessians: true"), same);

  // ---- AWQModifier ----
  const std::string awq = Mod("AWQModifier", "scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 4");
  auto awq_with = [](const std::string& a) { return Mod("AWQModifier", "scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 4, " + a); };
  add("AWQModifier.targets", awq, awq_with("targets: ['re:.*mlp.*']"), changes, Mode::kParse);
  add("AWQModifier.ignore", awq, Mod("AWQModifier", "scheme: W4A16_ASYM, ignore: [lm_head, 're:.*mlp.*'], n_grid: 4"),
      changes, Mode::kParse);
  add("AWQModifier.scheme", awq, Mod("AWQModifier", "scheme: W4A16, ignore: [lm_head], n_grid: 4"), changes, Mode::kParse);
  add("AWQModifier.config_groups", awq, Group(kW4, "", "", "", "AWQModifier"), changes, Mode::kParse);
  add("AWQModifier.kv_cache_scheme", awq, awq_with(absl::StrCat("kv_cache_scheme: {", kv, "}")), changes, Mode::kParse);
  add("AWQModifier.weight_observer", awq, awq_with("weight_observer: mse"), changes);
  add("AWQModifier.observer", awq, awq_with("observer: {weights: mse}"), changes, Mode::kParse);
  add("AWQModifier.input_observer", awq, awq_with("input_observer: static_minmax"), refused);
  add("AWQModifier.output_observer", awq, awq_with("output_observer: static_minmax"), refused);
  add("AWQModifier.mappings", awq,
      awq_with("mappings: [{smooth_layer: 're:.*post_attention_layernorm', balance_layers: ['re:.*gate_proj', "
               "'re:.*up_proj']}]"),
      changes);
  add("AWQModifier.mappings", awq,
      awq_with("mappings: [{smooth_layer: 're:.*post_attention_layernorm', balance_layers: ['re:.*gates$']}]"), refused,
      Mode::kRun, "AWQModifier.mappings[0]: no balance layer of [re:.*gates$] matches a Linear");
  add("AWQModifier.duo_scaling", awq, awq_with("duo_scaling: false"), changes);
  add("AWQModifier.duo_scaling", awq, awq_with("duo_scaling: both"), changes);
  add("AWQModifier.duo_scaling", awq, Mod("AWQModifier", "scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 3, duo_scaling: both"),
      refused, Mode::kRun, "must be at least 4 with duo_scaling: both");
  add("AWQModifier.scheme", Mod("QuantizationModifier", "scheme: FP8_DYNAMIC, ignore: [lm_head]"),
      Mod("AWQModifier", "scheme: FP8_DYNAMIC, ignore: [lm_head], n_grid: 4"), changes);
  add("AWQModifier.n_grid", awq, Mod("AWQModifier", "scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 8"), changes);
  add("AWQModifier.n_grid", awq, Mod("AWQModifier", "scheme: W4A16_ASYM, ignore: [lm_head], n_grid: 2"), refused,
      Mode::kRun, "must be at least 3 with duo_scaling");
  add("AWQModifier.offload_device", awq, awq_with("offload_device: cpu"), same);

  // ---- SmoothQuantModifier (then RTN W8A8) ----
  const std::string w8a8 = Mod("QuantizationModifier", "scheme: W8A8, ignore: [lm_head]");
  const std::string sq = Mod("SmoothQuantModifier", "smoothing_strength: 0.8", w8a8);
  auto sq_with = [&](const std::string& a) { return Mod("SmoothQuantModifier", "smoothing_strength: 0.8, " + a, w8a8); };
  add("SmoothQuantModifier.smoothing_strength", sq, Mod("SmoothQuantModifier", "smoothing_strength: 0.5", w8a8), changes);
  add("SmoothQuantModifier.mappings", sq, sq_with("mappings: [[['re:.*gate_proj', 're:.*up_proj'], 're:.*post_attention_layernorm']]"),
      changes);
  add("SmoothQuantModifier.mappings", sq, sq_with("mappings: [[['re:.*gate_proj'], 're:.*post_attn_layernorm']]"),
      refused, Mode::kRun, "SmoothQuantModifier.mappings[0]: the smooth layer 're:.*post_attn_layernorm' matches no module");
  add("SmoothQuantModifier.ignore", sq, sq_with("ignore: ['re:.*up_proj']"), changes);
  add("SmoothQuantModifier.num_calibration_steps", sq, sq_with("num_calibration_steps: 1"), same);

  // ---- pruning ----
  const std::string sgpt = Mod("SparseGPTModifier", "sparsity: 0.5, ignore: [lm_head]");
  auto sgpt_with = [](const std::string& a) { return Mod("SparseGPTModifier", "ignore: [lm_head], " + a); };
  add("SparseGPTModifier.sparsity", sgpt, sgpt_with("sparsity: 0.3"), changes);
  add("SparseGPTModifier.mask_structure", sgpt, sgpt_with("sparsity: 0.5, mask_structure: '2:4'"), changes);
  add("SparseGPTModifier.block_size", sgpt, sgpt_with("sparsity: 0.5, block_size: 32"), changes);
  add("SparseGPTModifier.dampening_frac", sgpt, sgpt_with("sparsity: 0.5, dampening_frac: 0.5"), changes);
  add("SparseGPTModifier.targets", sgpt, sgpt_with("sparsity: 0.5, targets: ['re:.*mlp.*']"), changes);
  add("SparseGPTModifier.ignore", sgpt, Mod("SparseGPTModifier", "sparsity: 0.5, ignore: [lm_head, 're:.*mlp.*']"), changes);
  add("SparseGPTModifier.sequential_update", sgpt, sgpt_with("sparsity: 0.5, sequential_update: false"), same);
  const std::string wanda = Mod("WandaPruningModifier", "sparsity: 0.5, ignore: [lm_head]");
  auto wanda_with = [](const std::string& a) { return Mod("WandaPruningModifier", "ignore: [lm_head], " + a); };
  add("WandaPruningModifier.sparsity", wanda, wanda_with("sparsity: 0.3"), changes);
  add("WandaPruningModifier.mask_structure", wanda, wanda_with("sparsity: 0.5, mask_structure: '2:4'"), changes);
  add("WandaPruningModifier.targets", wanda, wanda_with("sparsity: 0.5, targets: ['re:.*mlp.*']"), changes);
  add("WandaPruningModifier.ignore", wanda, Mod("WandaPruningModifier", "sparsity: 0.5, ignore: [lm_head, 're:.*mlp.*']"),
      changes);
  return c;
}

// Every key llmc accepts, as the cases name them.
std::set<std::string> AcceptedKeys() {
  std::set<std::string> keys;
  for (const auto& a : Algorithms())
    for (const auto& x : a.args) keys.insert(a.modifier + "." + x.name);
  for (const auto& x : CommonModifierArgs()) keys.insert("*." + x.name);
  for (const auto& k : QuantScheme::Keys()) keys.insert("scheme." + k);
  for (const char* role : {"weights", "input_activations", "output_activations", "kv_cache_scheme"})
    for (const auto& k : QuantArgs::Keys()) keys.insert(absl::StrCat(role, ".", k));
  return keys;
}

const AlgorithmArg* RegistryArg(const std::string& key) {
  for (const auto& a : Algorithms())
    for (const auto& x : a.args)
      if (a.modifier + "." + x.name == key) return &x;
  return nullptr;
}

// ---- runs ---------------------------------------------------------------------------------------------------------

struct Output {
  absl::Status status;
  std::string tensors;  // model.safetensors
  json config;          // quantization_config (null when none)
  bool operator==(const Output& o) const { return tensors == o.tensors && config == o.config; }
};

class RecipeKeysTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    SyntheticLlamaShape shape;  // hidden 256, intermediate 512, 2 blocks, 4 heads, 2 kv heads
    shape.vocab = 8192;         // the fixture tokenizer's
    ASSERT_TRUE(WriteSyntheticLlama(*dir_ / "model", shape, DType::kBF16, 23, 1u << 30).ok());
    have_data_ = testing::HaveShared("models/llmc-fixture-llama") && testing::HaveShared("data/calibration.txt");
    if (!have_data_) return;
    const std::string fixture = testing::Shared("models/llmc-fixture-llama");
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(fixture + "/" + f, fs::path(*dir_ / "model") / f);
    std::ifstream in(testing::Shared("data/calibration.txt"));
    std::string text(20000, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
    std::ofstream(*dir_ / "calibration.txt") << text;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  // Compresses the synthetic model with `recipe` (cached by recipe text).
  const Output& Run(const std::string& recipe) {
    auto it = runs_.find(recipe);
    if (it != runs_.end()) return it->second;
    Output out;
    JobSpec spec;
    spec.model_path = *dir_ / "model";
    spec.output_path = *dir_ / absl::StrCat("out", runs_.size());
    spec.recipe_yaml = recipe;
    spec.recipe_source = "recipe.yaml";
    spec.algorithm = "";
    spec.dataset = have_data_ ? *dir_ / "calibration.txt" : "";
    spec.num_samples = 2;
    spec.seq_len = 32;
    spec.threads = 2;
    auto s = RunJob(spec);
    out.status = s.status();
    if (s.ok()) {
      std::ifstream f(spec.output_path + "/model.safetensors", std::ios::binary);
      std::stringstream ss;
      ss << f.rdbuf();
      out.tensors = ss.str();
      auto m = ModelDir::Open(spec.output_path);
      EXPECT_TRUE(m.ok()) << m.status();
      if (m.ok()) out.config = (*m)->config_json().value("quantization_config", json());
      fs::remove_all(spec.output_path);
    }
    return runs_.emplace(recipe, std::move(out)).first->second;
  }

  // The quantization_config a recipe resolves to (what a run writes), or its error.
  static Output Parse(const std::string& recipe) {
    JobSpec spec;
    spec.recipe_yaml = recipe;
    spec.recipe_source = "recipe.yaml";
    spec.algorithm = "";
    spec.dataset = "calibration.txt";
    Output out;
    auto r = ResolveJobRecipe(spec);
    out.status = r.status();
    // A run lists the modules its ignore patterns matched; here the patterns stand for them.
    if (r.ok() && r->quant) out.config = r->quant->ToJson(r->quant->ignore());
    return out;
  }

  static bool NeedsData(const std::string& recipe) {
    auto r = ParseCompressionRecipe(recipe, "recipe.yaml");
    return r.ok() && r->NeedsCalibration();
  }

  static testing::TempDir* dir_;
  static bool have_data_;
  std::map<std::string, Output> runs_;
};

testing::TempDir* RecipeKeysTest::dir_ = nullptr;
bool RecipeKeysTest::have_data_ = false;

TEST_F(RecipeKeysTest, EveryAcceptedKeyHasACase) {
  const std::set<std::string> keys = AcceptedKeys();
  std::map<std::string, std::set<Effect>> effects;
  for (const Case& c : Cases()) {
    EXPECT_TRUE(keys.count(c.key)) << "case for a key llmc does not accept: " << c.key;
    effects[c.key].insert(c.effect);
  }
  for (const auto& k : keys) {
    EXPECT_TRUE(effects.count(k)) << "no case for the recipe key " << k << ": add one to Cases()";
    const AlgorithmArg* arg = RegistryArg(k);
    if (!arg) continue;
    if (!arg->no_effect.empty()) {
      EXPECT_EQ(effects[k], std::set<Effect>{Effect::kSame}) << k << " is marked no_effect: " << arg->no_effect;
    } else {
      EXPECT_TRUE(effects[k].count(Effect::kChanges) || effects[k].count(Effect::kRefused))
          << k << " neither changes the output nor is refused; mark it no_effect (with the reason) or refuse it";
    }
  }
}

TEST_F(RecipeKeysTest, EachKeyChangesTheOutputOrIsRefused) {
  int runs = 0, skipped = 0;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.key + "\n--- base:\n" + c.base + "--- variant:\n" + c.variant);
    if (c.mode == Mode::kRun && !have_data_ && (NeedsData(c.base) || NeedsData(c.variant))) {
      ++skipped;
      continue;
    }
    const Output base = c.mode == Mode::kRun ? Run(c.base) : Parse(c.base);
    if (!base.status.ok()) {
      ADD_FAILURE() << "the base recipe fails: " << base.status;
      continue;
    }
    const Output variant = c.mode == Mode::kRun ? Run(c.variant) : Parse(c.variant);
    ++runs;
    if (c.effect == Effect::kRefused) {
      EXPECT_EQ(variant.status.code(), absl::StatusCode::kInvalidArgument) << variant.status;
      EXPECT_THAT(std::string(variant.status.message()), HasSubstr(c.message.empty() ? c.key : c.message));
    } else if (!variant.status.ok()) {
      ADD_FAILURE() << "refused: " << variant.status;
    } else if (c.effect == Effect::kChanges) {
      EXPECT_FALSE(variant == base) << "the output did not change";
    } else {
      EXPECT_TRUE(variant.tensors == base.tensors) << "the tensors changed";
      EXPECT_EQ(variant.config, base.config);
    }
  }
  if (skipped > 0) std::fprintf(stderr, "recipe_keys_test: %d calibrated cases skipped (no ../shared)\n", skipped);
  EXPECT_GT(runs, 0);
}

// The cases end to end: a modifier-level mse observer is applied and named in the checkpoint.
TEST_F(RecipeKeysTest, ModifierObserverIsAppliedAndNamed) {
  const Output& minmax = Run(Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head]"));
  const Output& mse = Run(Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head], weight_observer: mse"));
  const Output& cli = [&]() -> const Output& {
    // --observer mse on the command line: the same bytes and config.
    JobSpec spec;
    spec.model_path = *dir_ / "model";
    spec.output_path = *dir_ / "cli_mse";
    spec.recipe_yaml = Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head]");
    spec.algorithm = "";
    spec.observer = "mse";
    auto s = RunJob(spec);
    EXPECT_TRUE(s.ok()) << s.status();
    std::ifstream f(spec.output_path + "/model.safetensors", std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    Output o;
    o.tensors = ss.str();
    o.config = (*ModelDir::Open(spec.output_path))->config_json()["quantization_config"];
    return runs_.emplace("cli", std::move(o)).first->second;
  }();
  ASSERT_TRUE(minmax.status.ok() && mse.status.ok()) << minmax.status << mse.status;
  EXPECT_EQ(minmax.config["config_groups"]["group_0"]["weights"]["observer"], "memoryless_minmax");
  EXPECT_EQ(mse.config["config_groups"]["group_0"]["weights"]["observer"], "mse");
  EXPECT_NE(mse.tensors, minmax.tensors);
  EXPECT_EQ(cli.tensors, mse.tensors);
  EXPECT_EQ(cli.config, mse.config);
}

// Fused 3-D expert tensors (GPT-OSS / Llama 4 layout) are not quantized: the job fails naming the tensor unless the
// ignore list names them, and then they are copied and listed in quantization_config.ignore.
TEST_F(RecipeKeysTest, FusedExpertTensorsFailUnlessIgnored) {
  const fs::path model = *dir_ / "moe";  // NOLINT
  SyntheticLlamaShape shape;
  shape.layers = 1;
  ASSERT_TRUE(WriteSyntheticLlama(model, shape, DType::kBF16, 5, 1u << 30).ok());
  // A second shard with the experts of layer 0, and the index over both.
  std::vector<TensorSpec> specs = {{"model.layers.0.mlp.experts.gate_up_proj", DType::kBF16, {4, 256, 1024}},
                                   {"model.layers.0.mlp.experts.gate_up_proj_bias", DType::kBF16, {4, 1024}},
                                   {"model.layers.0.mlp.experts.down_proj", DType::kBF16, {4, 512, 256}}};
  {
    auto w = SafetensorsWriter::Create((model / "model-experts.safetensors").string(), specs);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int i = 0; i < static_cast<int>(specs.size()); ++i) {
      std::vector<uint8_t> bytes(specs[i].nbytes(), 0x3c);
      ASSERT_TRUE((*w)->Write(i, 0, bytes).ok());
    }
    ASSERT_TRUE((*w)->Close().ok());
  }
  json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
  {
    auto m = ModelDir::Open(model.string());
    ASSERT_TRUE(m.ok()) << m.status();
    for (const auto& t : (*m)->tensors()) index["weight_map"][t.info->name] = "model.safetensors";
  }
  for (const auto& s : specs) index["weight_map"][s.name] = "model-experts.safetensors";
  std::ofstream(model / "model.safetensors.index.json") << index.dump();

  auto run = [&](const std::string& recipe, const std::string& out) {
    JobSpec spec;
    spec.model_path = model.string();
    spec.output_path = *dir_ / out;
    spec.recipe_yaml = recipe;
    spec.algorithm = "";
    return RunJob(spec);
  };
  auto refused = run(Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head]"), "moe_out");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("model.layers.0.mlp.experts."));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("fused 3-D expert weights"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("reads only the fused tensors"));
  EXPECT_FALSE(fs::exists(*dir_ / "moe_out"));

  auto kept = run(Mod("QuantizationModifier", "scheme: W4A16, ignore: [lm_head, 're:.*experts$']"), "moe_kept");
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_FALSE(kept->warnings.empty());
  EXPECT_THAT(kept->warnings[0], HasSubstr("kept unquantized"));
  auto out = ModelDir::Open(*dir_ / "moe_kept");
  ASSERT_TRUE(out.ok()) << out.status();
  const ModelTensor* gu = (*out)->Find("model.layers.0.mlp.experts.gate_up_proj");
  ASSERT_NE(gu, nullptr);
  EXPECT_EQ(gu->info->dtype, DType::kBF16);
  EXPECT_EQ((*out)->config_json()["quantization_config"]["ignore"],
            json({"model.layers.0.mlp.experts", "lm_head"}));
}

}  // namespace
}  // namespace llmc
