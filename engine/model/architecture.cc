#include "engine/model/architecture.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace llmc {

namespace {
using json = nlohmann::json;
}  // namespace

const std::vector<ArchitectureInfo>& SupportedArchitectures() {
  // name, description, qkv_bias, attention_bias_key, mlp_bias_key, qk_norm, sliding_window
  static const std::vector<ArchitectureInfo> kArchitectures = {
      {"LlamaForCausalLM", "Llama 1/2/3 (incl. llama3 rope scaling)", false, "attention_bias", "mlp_bias",
       false, SlidingWindowRule::kNone},
      {"MistralForCausalLM", "Mistral (sliding-window attention when configured)", false, nullptr, nullptr,
       false, SlidingWindowRule::kAlways},
      {"Qwen2ForCausalLM", "Qwen2 / Qwen2.5 (q/k/v biases)", true, nullptr, nullptr, false,
       SlidingWindowRule::kOptIn},
      {"Qwen3ForCausalLM", "Qwen3 dense (q/k RMSNorm, explicit head_dim)", false, "attention_bias", nullptr,
       true, SlidingWindowRule::kOptIn},
  };
  return kArchitectures;
}

std::string SupportedArchitectureNames() {
  std::vector<std::string> names;
  for (const auto& a : SupportedArchitectures()) names.push_back(a.name);
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<const ArchitectureInfo*> FindArchitecture(absl::string_view name) {
  for (const auto& a : SupportedArchitectures())
    if (name == a.name) return &a;
  return absl::InvalidArgumentError(absl::StrCat(
      "architecture '", name,
      "' is not supported by the llmc model runtime; supported: ", SupportedArchitectureNames()));
}

namespace {

absl::Status Invalid(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

bool BoolKey(const json& j, const char* key) {
  if (key == nullptr) return false;
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

absl::StatusOr<double> RopeNumber(const json& rope, const char* key, std::optional<double> dflt,
                                  absl::string_view source) {
  auto it = rope.find(key);
  if (it == rope.end() || it->is_null()) {
    if (dflt) return *dflt;
    return Invalid(source, absl::StrCat("rope scaling needs '", key, "'"));
  }
  if (!it->is_number()) return Invalid(source, absl::StrCat("rope scaling '", key, "' must be a number"));
  return it->get<double>();
}

absl::StatusOr<RopeSpec> ResolveRope(const ModelConfig& c, const json& config_json,
                                     absl::string_view source) {
  RopeSpec r;
  r.theta = c.rope_theta;
  if (!(r.theta > 0)) return Invalid(source, "rope_theta must be positive");
  auto partial = [&](const json& j) -> absl::Status {
    auto it = j.find("partial_rotary_factor");
    if (it != j.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 1.0))
      return Invalid(source, "partial_rotary_factor other than 1 is not supported by the llmc model runtime");
    return absl::OkStatus();
  };
  if (auto s = partial(config_json); !s.ok()) return s;
  const json& rs = c.rope_scaling;
  if (rs.is_null()) return r;
  if (auto s = partial(rs); !s.ok()) return s;
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    auto it = rs.find(key);
    if (it != rs.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type == "default") return r;
  if (type == "linear") {
    r.type = RopeSpec::Type::kLinear;
    auto f = RopeNumber(rs, "factor", std::nullopt, source);
    if (!f.ok()) return f.status();
    r.factor = *f;
  } else if (type == "llama3") {
    r.type = RopeSpec::Type::kLlama3;
    auto f = RopeNumber(rs, "factor", std::nullopt, source);
    auto lo = RopeNumber(rs, "low_freq_factor", std::nullopt, source);
    auto hi = RopeNumber(rs, "high_freq_factor", std::nullopt, source);
    auto orig = RopeNumber(rs, "original_max_position_embeddings", std::nullopt, source);
    for (const auto* s : {&f, &lo, &hi, &orig})
      if (!s->ok()) return s->status();
    r.factor = *f;
    r.low_freq_factor = *lo;
    r.high_freq_factor = *hi;
    r.original_max_position_embeddings = static_cast<int64_t>(*orig);
    if (!(r.high_freq_factor > r.low_freq_factor) || r.low_freq_factor <= 0 ||
        r.original_max_position_embeddings <= 0)
      return Invalid(source,
                     "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and a positive "
                     "original_max_position_embeddings");
  } else {
    return absl::UnimplementedError(
        absl::StrCat(source, ": rope type '", type,
                     "' is not supported by the llmc model runtime; supported: default, "
                     "linear, llama3"));
  }
  if (!(r.factor > 0)) return Invalid(source, "rope scaling factor must be positive");
  return r;
}

}  // namespace

absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelConfig& c, const json& config_json,
                                           absl::string_view source) {
  if (c.architectures.empty())
    return Invalid(source, absl::StrCat("'architectures' is missing; the llmc model runtime supports ",
                                        SupportedArchitectureNames()));
  auto arch = FindArchitecture(c.architectures[0]);
  if (!arch.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", arch.status().message()));
  ModelSpec s;
  s.arch = *arch;
  s.hidden_size = c.hidden_size;
  s.num_layers = c.num_hidden_layers;
  s.num_heads = c.num_attention_heads;
  s.num_kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim;
  s.intermediate_size = c.intermediate_size;
  s.vocab_size = c.vocab_size;
  s.rms_norm_eps = c.rms_norm_eps;
  s.tie_word_embeddings = c.tie_word_embeddings;
  const std::pair<const char*, int64_t> dims[] = {{"hidden_size", s.hidden_size},
                                                  {"num_hidden_layers", s.num_layers},
                                                  {"num_attention_heads", s.num_heads},
                                                  {"num_key_value_heads", s.num_kv_heads},
                                                  {"head_dim", s.head_dim},
                                                  {"intermediate_size", s.intermediate_size},
                                                  {"vocab_size", s.vocab_size}};
  for (const auto& [key, v] : dims)
    if (v <= 0) return Invalid(source, absl::StrCat("'", key, "' must be a positive integer"));
  if (s.num_heads % s.num_kv_heads != 0)
    return Invalid(source, absl::StrCat("num_attention_heads ", s.num_heads,
                                        " is not a multiple of num_key_value_heads ", s.num_kv_heads));
  if (s.head_dim % 2 != 0)
    return Invalid(source, absl::StrCat("head_dim ", s.head_dim, " must be even for rotary embedding"));
  if (!(s.rms_norm_eps > 0)) return Invalid(source, "rms_norm_eps must be positive");
  for (const char* key : {"hidden_act", "hidden_activation"}) {
    auto it = config_json.find(key);
    if (it != config_json.end() && it->is_string() && it->get<std::string>() != "silu")
      return absl::UnimplementedError(
          absl::StrCat(source, ": ", key, " '", it->get<std::string>(),
                       "' is not supported by the llmc model runtime (only silu)"));
  }
  auto rope = ResolveRope(c, config_json, source);
  if (!rope.ok()) return rope.status();
  s.rope = *rope;
  const ArchitectureInfo& a = **arch;
  bool attention_bias = BoolKey(config_json, a.attention_bias_key);
  s.qkv_bias = a.qkv_bias || attention_bias;
  s.o_bias = attention_bias;
  s.mlp_bias = BoolKey(config_json, a.mlp_bias_key);
  s.qk_norm = a.qk_norm;
  switch (a.sliding_window) {
    case SlidingWindowRule::kNone:
      break;
    case SlidingWindowRule::kAlways: {
      auto it = config_json.find("sliding_window");
      if (it != config_json.end() && !it->is_null()) {
        if (!it->is_number_integer() || it->get<int64_t>() <= 0)
          return Invalid(source, "'sliding_window' must be a positive integer or null");
        s.sliding_window = it->get<int64_t>();
      }
      break;
    }
    case SlidingWindowRule::kOptIn:
      if (BoolKey(config_json, "use_sliding_window"))
        return absl::UnimplementedError(absl::StrCat(
            source,
            ": use_sliding_window (per-layer sliding-window attention) is not supported by the llmc model "
            "runtime"));
      break;
  }
  return s;
}

absl::StatusOr<ModelSpec> ResolveModelSpec(const ModelDir& dir) {
  const std::string source = (std::filesystem::path(dir.path()) / "config.json").string();
  absl::StatusOr<CheckpointLayout> layout = ResolveCheckpointLayout(dir);
  if (!layout.ok()) return layout.status();
  if (!layout->multimodal) {
    absl::StatusOr<ModelSpec> spec = ResolveModelSpec(dir.config(), dir.config_json(), source);
    if (!spec.ok()) return spec.status();
    spec->layout = std::move(*layout);
    return spec;
  }
  const std::string what = absl::StrCat(source, " (text_config of ", layout->architecture, ")");
  if (!FindArchitecture(layout->text_architecture).ok())
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ", layout->architecture, ": its text decoder ", layout->text_architecture,
        " (text_config.model_type '", layout->text_model_type,
        "') is not supported by the llmc model runtime; supported text decoders: ", SupportedArchitectureNames()));
  absl::StatusOr<ModelConfig> text = ParseModelConfig(layout->text_config.dump(), what);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelSpec> spec = ResolveModelSpec(*text, layout->text_config, what);
  if (!spec.ok()) return spec.status();
  spec->layout = std::move(*layout);
  return spec;
}

}  // namespace llmc
