#include "engine/format/recipe_support.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmc {

namespace {

constexpr char kStaticMinMax[] = "static_minmax";

// The MSE search's defaults (the library's MemorylessMSEObserver).
constexpr double kMseGrid = 100.0, kMseMaxShrink = 0.2;
// The imatrix_mse search's (the library's IMatrixMSEObserver).
constexpr double kImatrixGrid = 20.0, kImatrixMaxShrink = 0.95;

absl::Status CheckObserverKwargs(const QuantArgs& a, QuantRole role, absl::string_view where) {
  if (a.observer_kwargs.empty()) return absl::OkStatus();
  auto err = [&](absl::string_view key, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".observer_kwargs.", key, ": ", what));
  };
  const std::string first = a.observer_kwargs.begin().key();
  if (role != QuantRole::kWeights || a.is_dynamic()) {
    if (a.dynamic == "true")
      return err(first, "dynamic activations are quantized at run time and have no observer; remove observer_kwargs");
    return err(first, absl::StrCat("the ", a.observer.value_or(kStaticMinMax),
                                   " observer of static activations takes no arguments; remove observer_kwargs"));
  }
  if (!IsMseObserver(a.observer) && a.observer != "imatrix_mse")
    return err(first, absl::StrCat("the ", a.observer.value_or("minmax"),
                                   " observer takes no arguments (norm, grid, maxshrink and patience are the mse "
                                   "and imatrix_mse observers'); remove observer_kwargs or use observer: mse"));
  const bool imatrix = a.observer == "imatrix_mse";
  auto num = [&](const char* key, double dflt) {
    auto it = a.observer_kwargs.find(key);
    return it != a.observer_kwargs.end() && it->is_number() ? it->get<double>() : dflt;
  };
  for (auto it = a.observer_kwargs.begin(); it != a.observer_kwargs.end(); ++it) {
    const std::string& k = it.key();
    if (k == "norm" || k == "grid" || k == "maxshrink") continue;
    if (k == "patience") {
      // The library stops the search after `patience` steps in which no group of the observed tensor improved;
      // llmc searches every step of every group. The two agree when patience cannot stop the search.
      const double shrink = std::floor(std::min(num("maxshrink", imatrix ? kImatrixMaxShrink : kMseMaxShrink), 1.0) *
                                       num("grid", imatrix ? kImatrixGrid : kMseGrid));
      const double steps = imatrix ? std::max(1.0, shrink) + 1 : shrink;
      if (num("patience", 0) >= steps) continue;
      return err(k, absl::StrCat("stopping the ", *a.observer, " search early is not implemented (llmc searches all ",
                                 steps, " steps); remove patience or set it to at least ", steps));
    }
    if (k == "averaging_constant")
      return err(k, "weights are observed once, so a moving average has nothing to average; remove it");
    return err(k, absl::StrCat("not supported; the ", *a.observer, " observer takes norm, grid, maxshrink and patience"));
  }
  return absl::OkStatus();
}

absl::Status CheckObserver(QuantArgs* a, QuantRole role, absl::string_view where) {
  if (a->observer) {
    bool known = false;
    for (const auto& k : KnownObservers()) known |= k == *a->observer;
    if (!known)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".observer: '", *a->observer, "' is not supported; llmc implements ",
                       role == QuantRole::kWeights ? "minmax (memoryless_minmax, static_minmax), mse (memoryless_mse) and imatrix_mse for weights"
                                                   : "static_minmax for static activations and the kv cache"));
  }
  if (role == QuantRole::kWeights) {
    if (!a->observer) a->observer = "memoryless_minmax";
    if ((IsMseObserver(a->observer) || a->observer == "imatrix_mse") && (a->is_fp4() || a->is_mx()))
      return absl::InvalidArgumentError(absl::StrCat(where, ".observer: ", *a->observer, " is implemented for int and ",
                                                     "fp8 weights; NVFP4 and MX weights use minmax"));
    // The library falls back to the uniform search for a per-tensor weight (one scale for every channel).
    if (a->observer == "imatrix_mse" && a->strategy != Strategy::kChannel && a->strategy != Strategy::kGroup)
      return absl::InvalidArgumentError(absl::StrCat(where, ".observer: imatrix_mse weighs each input channel and ",
                                                     "needs strategy channel or group; use mse for strategy ",
                                                     StrategyName(a->strategy)));
    return CheckObserverKwargs(*a, role, where);
  }
  if (a->dynamic == "true") {
    a->observer.reset();  // as the library: dynamic quantization uses no observer
    return CheckObserverKwargs(*a, role, where);
  }
  // Static activations ("false"), NVFP4's global activation scale ("local") and the kv cache: llmc takes the range
  // over every calibration token.
  if (!a->observer) a->observer = kStaticMinMax;
  if (*a->observer != kStaticMinMax)
    return absl::InvalidArgumentError(absl::StrCat(
        where, ".observer: '", *a->observer, "' is not implemented for ",
        role == QuantRole::kKvCache ? "the kv cache" : "activations",
        "; llmc observes the range over all calibration tokens (static_minmax: set it, or leave observer out)",
        *a->observer == "minmax" ? " — the library's minmax is a moving average of per-batch ranges" : ""));
  return CheckObserverKwargs(*a, role, where);
}

}  // namespace

const std::vector<std::string>& KnownObservers() {
  static const std::vector<std::string> kObservers = {"minmax", "memoryless_minmax", "static_minmax", "mse",
                                                      "memoryless_mse", "imatrix_mse"};
  return kObservers;
}

bool IsMseObserver(const std::optional<std::string>& o) { return o && (*o == "mse" || *o == "memoryless_mse"); }

absl::Status ResolveRecipeArgs(QuantArgs* a, QuantRole role, absl::string_view where) {
  auto err = [&](absl::string_view key, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": ", what));
  };
  if (a->observer) a->observer = absl::AsciiStrToLower(*a->observer);  // the library's registry ignores case
  if (role == QuantRole::kKvCache) {  // before Validate, whose messages speak of weights
    const char* bad = a->type != QuantType::kFloat ? "type"
                      : a->num_bits != 8            ? "num_bits"
                      : a->strategy != Strategy::kTensor ? "strategy"
                      : a->dynamic != "false"       ? "dynamic"
                      : !a->symmetric               ? "symmetric"
                      : a->group_size               ? "group_size"
                      : a->block_structure          ? "block_structure"
                      : a->scale_dtype              ? "scale_dtype"
                                                    : nullptr;
    if (bad)
      return err(bad, "llmc writes fp8 per-tensor static kv cache scales (k_scale, v_scale); use {num_bits: 8, "
                      "type: float, strategy: tensor, dynamic: false, symmetric: true} (per-head attn_head scales "
                      "and other kv cache formats are not supported yet)");
  }
  LLMC_RETURN_IF_ERROR(a->Validate(where));
  const Strategy st = a->strategy;
  const bool grouped = st == Strategy::kGroup || st == Strategy::kTensorGroup;
  // The library's own rules (QuantizationArgs.validate_model_after).
  if (a->group_size && *a->group_size > 0 && !grouped)
    return err("group_size", absl::StrCat("needs strategy group or tensor_group (strategy is ", StrategyName(st), ")"));
  if (a->block_structure && st != Strategy::kBlock)
    return err("block_structure", absl::StrCat("needs strategy block (strategy is ", StrategyName(st), ")"));
  if (st == Strategy::kToken && !a->is_dynamic())
    return err("strategy", "token scales are computed at run time: token needs dynamic: true");
  if (a->dynamic == "local" && st != Strategy::kTensorGroup)
    return err("dynamic", "\"local\" needs strategy tensor_group");
  if (a->is_dynamic() && st != Strategy::kToken && st != Strategy::kTensor && st != Strategy::kTensorGroup &&
      st != Strategy::kGroup)
    return err("strategy", absl::StrCat(StrategyName(st), " cannot be dynamic; use token, tensor, group or tensor_group"));
  if (a->actorder && role != QuantRole::kWeights)
    return err("actorder", "activation ordering reorders weight columns; it belongs to weights only");

  // What llmc writes. scale_dtype: weights' int and fp8 scales in the model dtype, NVFP4's in fp8, MX's in e8m0.
  if (a->scale_dtype && role != QuantRole::kKvCache && !a->is_mx() &&
      !(a->is_fp4() && *a->scale_dtype == "torch.float8_e4m3fn") && !(a->dynamic == "true" && role != QuantRole::kWeights))
    return err("scale_dtype", absl::StrCat("'", *a->scale_dtype, "' is not what llmc writes: int and fp8 scales are ",
                                           "stored in the model's dtype (leave scale_dtype null), NVFP4 scales in ",
                                           "torch.float8_e4m3fn, MX scales in torch.uint8"));
  if (a->zp_dtype && !a->symmetric && *a->zp_dtype != "torch.int8")
    return err("zp_dtype", absl::StrCat("'", *a->zp_dtype, "' is not what llmc writes; asymmetric int zero points ",
                                        "are torch.int8 (leave zp_dtype null)"));
  switch (role) {
    case QuantRole::kWeights:
      if (a->is_dynamic()) return err("dynamic", "weights are quantized once, offline; dynamic must be false");
      if (st == Strategy::kToken || st == Strategy::kAttnHead)
        return err("strategy", absl::StrCat(StrategyName(st), " is not a weight strategy; use tensor, channel, group, ",
                                            "tensor_group or block"));
      break;
    case QuantRole::kInputActivations:
      if (a->dynamic == "false" && (st != Strategy::kTensor || !a->symmetric || a->is_fp4()))
        return err("dynamic", absl::StrCat(
                                  "static input activations are implemented as one symmetric per-tensor int or fp8 ",
                                  "scale (input_scale: strategy tensor, symmetric true); ", StrategyName(st),
                                  a->symmetric ? "" : " asymmetric", a->is_fp4() ? " fp4" : "",
                                  " static scales are not; use dynamic: true or strategy tensor"));
      if (a->dynamic == "local" && !(a->is_fp4() && !a->is_mx()))
        return err("dynamic", "\"local\" (a calibrated global scale, per-group scales at run time) is implemented "
                              "for NVFP4 activations (fp4, tensor_group 16) only");
      break;
    case QuantRole::kKvCache:
      break;
    case QuantRole::kOutputActivations:
      if (a->dynamic != "true")
        return err("dynamic", "static output activations are not supported: llmc writes no output scales "
                              "(output_scale); remove output_activations or make them dynamic: true");
      break;
  }
  return CheckObserver(a, role, where);
}

absl::Status CheckRecipeArgsSpelling(const nlohmann::json& j, absl::string_view where) {
  if (!j.is_object()) return absl::OkStatus();  // FromJson reports it
  auto set = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  if (set("observer") && j.contains("dynamic") && j["dynamic"] == true && j["observer"] != "memoryless")
    return absl::InvalidArgumentError(absl::StrCat(where, ".observer: dynamic arguments are quantized at run time and ",
                                                   "have no observer (the library drops it); remove observer"));
  if (set("zp_dtype") && !(j.contains("symmetric") && j["symmetric"] == false))
    return absl::InvalidArgumentError(absl::StrCat(where, ".zp_dtype: symmetric quantization has no zero point; ",
                                                   "remove zp_dtype"));
  return absl::OkStatus();
}

absl::Status ResolveRecipeScheme(QuantScheme* s, absl::string_view where) {
  if (!s->weights)
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": a group without weights is not supported: llmc quantizes Linear weights (with their input "
               "activations); give the group weights"));
  LLMC_RETURN_IF_ERROR(ResolveRecipeArgs(&*s->weights, QuantRole::kWeights, absl::StrCat(where, ".weights")));
  if (s->input_activations)
    LLMC_RETURN_IF_ERROR(ResolveRecipeArgs(&*s->input_activations, QuantRole::kInputActivations,
                                           absl::StrCat(where, ".input_activations")));
  if (s->output_activations)
    LLMC_RETURN_IF_ERROR(ResolveRecipeArgs(&*s->output_activations, QuantRole::kOutputActivations,
                                           absl::StrCat(where, ".output_activations")));
  return CheckTargetClasses(s->targets, absl::StrCat(where, ".targets"));
}

absl::Status CheckTargetClasses(const std::vector<std::string>& targets, absl::string_view where) {
  for (const auto& t : targets) {
    if (absl::StartsWith(t, "re:") || t.find('.') != std::string::npos || t.empty() ||
        !absl::ascii_isupper(static_cast<unsigned char>(t[0])))
      continue;  // not a class name (TargetMatcher's rule)
    if (t == "Linear" || t == "Embedding") continue;
    if (absl::EndsWith(t, "Attention"))
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": '", t, "' targets attention modules; attention quantization (compressed-tensors' q/k/v scales ",
          "for attention-targeted groups) is not supported yet. For k_scale/v_scale use kv_cache_scheme; to quantize ",
          "the projections target them (e.g. 're:.*self_attn\\.(q|k|v|o)_proj$')"));
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": class name '", t, "' matches no module: llmc knows a module's class only as Linear or Embedding ",
        "(checkpoints carry no class names); target modules by name or re: pattern"));
  }
  return absl::OkStatus();
}

}  // namespace llmc
