#include "engine/format/quant_scheme.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace llmc {

using json = nlohmann::json;

namespace {
constexpr std::pair<Strategy, absl::string_view> kStrategies[] = {
    {Strategy::kTensor, "tensor"},           {Strategy::kChannel, "channel"}, {Strategy::kGroup, "group"},
    {Strategy::kBlock, "block"},             {Strategy::kToken, "token"},     {Strategy::kTensorGroup, "tensor_group"},
    {Strategy::kAttnHead, "attn_head"},
};

json OptStr(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

// An integer in [lo, hi] without truncation (JSON/YAML integers may be any size).
bool IntIn(const json& v, int64_t lo, int64_t hi, int* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) return false;
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) return false;
  *out = static_cast<int>(x);
  return true;
}
}  // namespace

absl::string_view StrategyName(Strategy s) {
  for (const auto& [v, n] : kStrategies)
    if (v == s) return n;
  return "?";
}

json QuantArgs::ToJson() const {
  json j = json::object();
  j["num_bits"] = num_bits;
  j["type"] = type == QuantType::kInt ? "int" : "float";
  j["symmetric"] = symmetric;
  j["group_size"] = group_size ? json(*group_size) : json(nullptr);
  j["strategy"] = std::string(StrategyName(strategy));
  j["block_structure"] = block_structure ? json({(*block_structure)[0], (*block_structure)[1]}) : json(nullptr);
  if (dynamic == "local") j["dynamic"] = "local";
  else j["dynamic"] = dynamic == "true";
  j["actorder"] = OptStr(actorder);
  j["scale_dtype"] = OptStr(scale_dtype);
  j["zp_dtype"] = OptStr(zp_dtype);
  j["observer"] = OptStr(observer);
  j["observer_kwargs"] = observer_kwargs;
  return j;
}

const std::vector<std::string>& QuantArgs::Keys() {
  static const std::vector<std::string> kKeys = {"num_bits",  "type",        "symmetric", "group_size",
                                                 "strategy",  "block_structure", "dynamic", "actorder",
                                                 "scale_dtype", "zp_dtype", "observer",  "observer_kwargs"};
  return kKeys;
}

const std::vector<std::string>& QuantScheme::Keys() {
  static const std::vector<std::string> kKeys = {"targets", "weights", "input_activations", "output_activations",
                                                 "format"};
  return kKeys;
}

absl::StatusOr<QuantArgs> QuantArgs::FromJson(const json& j, absl::string_view where, bool is_weight) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping of quantization arguments"));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(Keys().begin(), Keys().end(), it.key()) == Keys().end())
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown argument '", it.key(), "'; known: ",
                                                     absl::StrJoin(Keys(), ", ")));
  }
  auto err = [&](absl::string_view key, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": ", what));
  };
  QuantArgs a;
  a.observer = is_weight ? std::optional<std::string>("memoryless_minmax") : std::nullopt;
  bool strategy_given = false;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "num_bits") {
      if (!IntIn(v, 1, 8, &a.num_bits)) return err(k, "must be an integer from 1 to 8");
    } else if (k == "type") {
      std::string t = v.is_string() ? absl::AsciiStrToLower(v.get<std::string>()) : "";
      if (t == "int") a.type = QuantType::kInt;
      else if (t == "float") a.type = QuantType::kFloat;
      else return err(k, "must be 'int' or 'float'");
    } else if (k == "symmetric") {
      if (!v.is_boolean()) return err(k, "must be true or false");
      a.symmetric = v.get<bool>();
    } else if (k == "group_size") {
      int g = 0;
      if (v.is_null()) a.group_size.reset();
      else if (!IntIn(v, -1, 1 << 24, &g) || g == 0) return err(k, "must be a positive integer (at most 16777216), -1 or null");
      else a.group_size = g;
    } else if (k == "strategy") {
      if (v.is_null()) continue;
      std::string s = v.is_string() ? absl::AsciiStrToLower(v.get<std::string>()) : "";
      bool found = false;
      for (const auto& [sv, sn] : kStrategies)
        if (sn == s) { a.strategy = sv; found = true; }
      if (!found) return err(k, "must be one of tensor, channel, group, block, token, tensor_group, attn_head");
      strategy_given = true;
    } else if (k == "block_structure") {
      if (v.is_null()) continue;
      int br = 0, bc = 0;
      if (!v.is_array() || v.size() != 2 || !IntIn(v[0], 1, 1 << 24, &br) || !IntIn(v[1], 1, 1 << 24, &bc))
        return err(k, "must be [rows, cols] of positive integers");
      a.block_structure = std::array<int, 2>{br, bc};
    } else if (k == "dynamic") {
      if (v.is_boolean()) a.dynamic = v.get<bool>() ? "true" : "false";
      else if (v.is_string() && v.get<std::string>() == "local") a.dynamic = "local";
      else return err(k, "must be true, false or \"local\"");
    } else if (k == "actorder") {
      if (v.is_null() || (v.is_boolean() && !v.get<bool>())) a.actorder.reset();
      else if (v.is_boolean()) a.actorder = "group";
      else if (v.is_string() && (v == "static" || v == "group" || v == "weight" || v == "dynamic")) a.actorder = v.get<std::string>();
      else return err(k, "must be null, static, group, weight or dynamic");
    } else if (k == "scale_dtype" || k == "zp_dtype") {
      if (v.is_null()) continue;
      if (!v.is_string()) return err(k, "must be a torch dtype name such as torch.float8_e4m3fn");
      std::string s = v.get<std::string>();
      if (s.rfind("torch.", 0) != 0) s = "torch." + s;
      (k == "scale_dtype" ? a.scale_dtype : a.zp_dtype) = s;
    } else if (k == "observer") {
      if (v.is_null()) a.observer.reset();
      else if (!v.is_string()) return err(k, "must be an observer name (minmax, memoryless_minmax, mse, ...)");
      else a.observer = v.get<std::string>();
    } else if (k == "observer_kwargs") {
      if (!v.is_object()) return err(k, "must be a mapping");
      a.observer_kwargs = v;
    }
  }
  // Derive the strategy from group_size as the library's validator does.
  if (!strategy_given) {
    if (a.group_size && *a.group_size > 0) a.strategy = Strategy::kGroup;
    else if (a.group_size && *a.group_size == -1) a.strategy = Strategy::kChannel;
    else if (a.block_structure) a.strategy = Strategy::kBlock;
    else a.strategy = Strategy::kTensor;
  }
  if (a.strategy == Strategy::kChannel && a.group_size && *a.group_size == -1) a.group_size.reset();
  if (!a.symmetric && !a.zp_dtype && a.type == QuantType::kInt) a.zp_dtype = "torch.int8";
  if (a.symmetric) a.zp_dtype.reset();
  if (a.is_dynamic() && a.dynamic == "true") a.observer.reset();
  return a;
}

absl::Status QuantArgs::Validate(absl::string_view where) const {
  auto err = [&](absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat(where, ": ", what)); };
  if (type == QuantType::kFloat && num_bits != 8 && num_bits != 4)
    return err("float quantization needs num_bits 8 (fp8 e4m3) or 4 (fp4 e2m1)");
  if ((strategy == Strategy::kGroup || strategy == Strategy::kTensorGroup) && (!group_size || *group_size <= 0))
    return err(absl::StrCat("strategy ", StrategyName(strategy), " needs a positive group_size"));
  if (strategy == Strategy::kBlock && !block_structure) return err("strategy block needs block_structure [rows, cols]");
  if (type == QuantType::kFloat && !symmetric) return err("float quantization must be symmetric");
  if (is_fp4() && strategy != Strategy::kTensorGroup && !(strategy == Strategy::kGroup && is_mx()))
    return err("fp4 weights need strategy tensor_group (NVFP4, group 16) or group 32 with scale_dtype torch.uint8 (MXFP4)");
  if (is_mx() && (strategy != Strategy::kGroup || !group_size || *group_size != 32))
    return err("MX formats (scale_dtype torch.uint8) need strategy group with group_size 32");
  if (observer && *observer != "minmax" && *observer != "memoryless_minmax" && *observer != "static_minmax" &&
      *observer != "mse" && *observer != "memoryless_mse" && *observer != "imatrix_mse")
    return err(absl::StrCat("unknown observer '", *observer, "'; use minmax (memoryless_minmax), mse or imatrix_mse"));
  if (!observer_kwargs.is_object()) return err("observer_kwargs must be a mapping");
  for (auto it = observer_kwargs.begin(); it != observer_kwargs.end(); ++it) {
    static const char* kKnown[] = {"norm", "grid", "maxshrink", "patience", "averaging_constant"};
    bool known = false;
    for (const char* k : kKnown) known |= it.key() == k;
    if (!known)
      return err(absl::StrCat("observer_kwargs: unknown key '", it.key(), "'; known: norm, grid, maxshrink, patience, averaging_constant"));
    if (!it.value().is_number() || !std::isfinite(it.value().get<double>()) || it.value().get<double>() <= 0)
      return err(absl::StrCat("observer_kwargs.", it.key(), " must be a positive number"));
  }
  if (observer_kwargs.contains("grid") && observer_kwargs.contains("maxshrink") &&
      observer_kwargs["grid"].get<double>() * observer_kwargs["maxshrink"].get<double>() > 10000)
    return err("observer_kwargs: grid * maxshrink must be at most 10000");
  if (actorder && *actorder != "static" && *actorder != "group" && *actorder != "weight")
    return err(absl::StrCat("actorder '", *actorder, "' is not supported"));
  return absl::OkStatus();
}

json QuantScheme::ToJson(const std::string& fmt) const {
  json j = json::object();
  j["format"] = fmt;
  j["input_activations"] = input_activations ? input_activations->ToJson() : json(nullptr);
  j["output_activations"] = output_activations ? output_activations->ToJson() : json(nullptr);
  j["targets"] = targets;
  j["weights"] = weights ? weights->ToJson() : json(nullptr);
  return j;
}

absl::StatusOr<QuantScheme> QuantScheme::FromJson(const json& j, absl::string_view where) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping"));
  QuantScheme s;
  s.targets.clear();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    std::string sub = absl::StrCat(where, ".", k);
    if (k == "targets") {
      if (v.is_string()) s.targets.push_back(v.get<std::string>());
      else if (v.is_array()) {
        for (const auto& t : v) {
          if (!t.is_string()) return absl::InvalidArgumentError(absl::StrCat(sub, ": targets must be strings"));
          s.targets.push_back(t.get<std::string>());
        }
      } else return absl::InvalidArgumentError(absl::StrCat(sub, ": must be a list of module names, re: patterns or class names"));
    } else if (k == "weights" || k == "input_activations" || k == "output_activations") {
      if (v.is_null()) continue;
      LLMC_ASSIGN_OR_RETURN(QuantArgs a, QuantArgs::FromJson(v, sub, k == "weights"));
      LLMC_RETURN_IF_ERROR(a.Validate(sub));
      (k == "weights" ? s.weights : k == "input_activations" ? s.input_activations : s.output_activations) = a;
    } else if (k == "format") {
      if (v.is_null()) continue;
      if (!v.is_string()) return absl::InvalidArgumentError(absl::StrCat(sub, ": must be a format name"));
      s.format = v.get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown key '", k,
                                                     "'; a scheme has targets, weights, input_activations, output_activations, format"));
    }
  }
  if (s.targets.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": targets is empty"));
  return s;
}

absl::StatusOr<std::string> InferFormat(const QuantScheme& s) {
  if (!s.weights) {
    if (s.input_activations || s.output_activations) return std::string("dense");
    return std::string("dense");
  }
  const QuantArgs& w = *s.weights;
  if (w.is_fp4()) return std::string(w.is_mx() ? "mxfp4-pack-quantized" : "nvfp4-pack-quantized");
  if (w.type == QuantType::kFloat) return std::string(w.is_mx() ? "mxfp8-quantized" : "float-quantized");
  // int weights
  bool acts_int = s.input_activations && s.input_activations->type == QuantType::kInt;
  if (!s.input_activations || (s.input_activations->type == QuantType::kFloat && w.num_bits == 4))
    return std::string("pack-quantized");  // weight-only, or W4AFP8 (vLLM wants packed int4)
  if (acts_int) return std::string("int-quantized");
  return std::string("int-quantized");
}

namespace {

QuantArgs IntWeights(int bits, bool sym, std::optional<int> group) {
  QuantArgs a;
  a.num_bits = bits;
  a.type = QuantType::kInt;
  a.symmetric = sym;
  a.group_size = group;
  a.strategy = group ? Strategy::kGroup : Strategy::kChannel;
  if (!sym) a.zp_dtype = "torch.int8";
  return a;
}
QuantArgs Fp8Weights(Strategy st) {
  QuantArgs a;
  a.num_bits = 8;
  a.type = QuantType::kFloat;
  a.strategy = st;
  return a;
}
QuantArgs DynamicActs(int bits, QuantType type, Strategy st, std::optional<int> group = std::nullopt) {
  QuantArgs a;
  a.num_bits = bits;
  a.type = type;
  a.strategy = st;
  a.group_size = group;
  a.dynamic = "true";
  a.observer.reset();
  return a;
}
QuantArgs Fp4Weights(bool mx) {
  QuantArgs a;
  a.num_bits = 4;
  a.type = QuantType::kFloat;
  a.strategy = mx ? Strategy::kGroup : Strategy::kTensorGroup;
  a.group_size = mx ? 32 : 16;
  a.scale_dtype = mx ? "torch.uint8" : "torch.float8_e4m3fn";
  return a;
}

}  // namespace

const std::vector<PresetInfo>& Presets() {
  static const std::vector<PresetInfo> kPresets = {
      {"W4A16", "int4 symmetric weights, group 128 (pack-quantized)", false},
      {"W4A16_ASYM", "int4 asymmetric weights with zero points, group 128 (pack-quantized)", false},
      {"W8A16", "int8 symmetric weights, group 128 (pack-quantized)", false},
      {"W2A16", "int2 symmetric weights, group 128 (pack-quantized; few kernels run it)", false},
      {"W3A16", "int3 symmetric weights, group 128 (pack-quantized; few kernels run it)", false},
      {"W6A16", "int6 symmetric weights, group 128 (pack-quantized; few kernels run it)", false},
      {"W8A8", "int8 per-channel weights, int8 dynamic per-token activations (int-quantized); alias INT8", false},
      {"W4A8", "int4 group 128 weights, int8 dynamic per-token activations (int-quantized)", false},
      {"W4AFP8", "int4 group 128 weights, fp8 dynamic per-token activations (pack-quantized)", false},
      {"FP8", "fp8 per-tensor weights, fp8 static per-tensor activations (needs calibration data)", true},
      {"FP8_DYNAMIC", "fp8 per-channel weights, fp8 dynamic per-token activations (float-quantized)", false},
      {"FP8_BLOCK", "fp8 weights in 128x128 blocks, fp8 dynamic activations in groups of 128", false},
      {"NVFP4A16", "fp4 e2m1 weights, group 16 with fp8 scales and a global scale (nvfp4-pack-quantized)", false},
      {"NVFP4", "NVFP4 weights and fp4 activations with a calibrated global scale (needs calibration data)", true},
      {"MXFP4A16", "fp4 e2m1 weights, group 32 with e8m0 scales (mxfp4-pack-quantized)", false},
      {"MXFP4", "MXFP4 weights and dynamic MXFP4 activations", false},
      {"MXFP8A16", "fp8 e4m3 weights, group 32 with e8m0 scales (mxfp8-quantized)", false},
      {"MXFP8", "MXFP8 weights and dynamic MXFP8 activations", false},
  };
  return kPresets;
}

absl::StatusOr<QuantScheme> PresetScheme(absl::string_view raw) {
  std::string name = absl::AsciiStrToUpper(raw);
  QuantScheme s;
  if (name == "W4A16") s.weights = IntWeights(4, true, 128);
  else if (name == "W4A16_ASYM") s.weights = IntWeights(4, false, 128);
  else if (name == "W8A16") s.weights = IntWeights(8, true, 128);
  else if (name == "W2A16") s.weights = IntWeights(2, true, 128);
  else if (name == "W3A16") s.weights = IntWeights(3, true, 128);
  else if (name == "W6A16") s.weights = IntWeights(6, true, 128);
  else if (name == "W8A8" || name == "INT8") {
    s.weights = IntWeights(8, true, std::nullopt);
    s.input_activations = DynamicActs(8, QuantType::kInt, Strategy::kToken);
  } else if (name == "W4A8") {
    s.weights = IntWeights(4, true, 128);
    s.input_activations = DynamicActs(8, QuantType::kInt, Strategy::kToken);
  } else if (name == "W4AFP8") {
    s.weights = IntWeights(4, true, 128);
    s.input_activations = DynamicActs(8, QuantType::kFloat, Strategy::kToken);
  } else if (name == "FP8") {
    s.weights = Fp8Weights(Strategy::kTensor);
    QuantArgs in = Fp8Weights(Strategy::kTensor);
    in.observer = "static_minmax";
    s.input_activations = in;
  } else if (name == "FP8_DYNAMIC") {
    s.weights = Fp8Weights(Strategy::kChannel);
    s.input_activations = DynamicActs(8, QuantType::kFloat, Strategy::kToken);
  } else if (name == "FP8_BLOCK") {
    s.weights = Fp8Weights(Strategy::kBlock);
    s.weights->block_structure = std::array<int, 2>{128, 128};
    s.input_activations = DynamicActs(8, QuantType::kFloat, Strategy::kGroup, 128);
  } else if (name == "NVFP4A16") {
    s.weights = Fp4Weights(false);
  } else if (name == "NVFP4") {
    s.weights = Fp4Weights(false);
    QuantArgs in = Fp4Weights(false);
    in.dynamic = "local";
    in.observer = "static_minmax";
    s.input_activations = in;
  } else if (name == "MXFP4A16") {
    s.weights = Fp4Weights(true);
  } else if (name == "MXFP4") {
    s.weights = Fp4Weights(true);
    QuantArgs in = Fp4Weights(true);
    in.dynamic = "true";
    in.observer.reset();
    s.input_activations = in;
  } else if (name == "MXFP8A16" || name == "MXFP8") {
    QuantArgs w = Fp8Weights(Strategy::kGroup);
    w.group_size = 32;
    w.scale_dtype = "torch.uint8";
    s.weights = w;
    if (name == "MXFP8") {
      QuantArgs in = w;
      in.dynamic = "true";
      in.observer.reset();
      s.input_activations = in;
    }
  } else {
    std::vector<std::string> names;
    for (const auto& p : Presets()) names.push_back(p.name);
    return absl::InvalidArgumentError(absl::StrCat("unknown scheme '", raw, "'; known schemes: ",
                                                   absl::StrJoin(names, ", "), " (see `llmc schemes`)"));
  }
  return s;
}

}  // namespace llmc
