#include "engine/model/architecture.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/tensor/model_dtype.h"

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
      {"Qwen3MoeForCausalLM", "Qwen3-MoE (routed experts, decoder_sparse_step, mlp_only_layers)", false,
       "attention_bias", nullptr, true, SlidingWindowRule::kOptIn, MoeStyle::kQwen},
      {"Qwen2MoeForCausalLM", "Qwen2-MoE / Qwen1.5-MoE (routed experts + gated shared expert)", true, nullptr,
       nullptr, false, SlidingWindowRule::kOptIn, MoeStyle::kQwen, true},
      {"MixtralForCausalLM", "Mixtral (block_sparse_moe experts, sliding window when configured)", false, nullptr,
       nullptr, false, SlidingWindowRule::kAlways, MoeStyle::kMixtral},
      {.name = "Gemma2ForCausalLM",
       .description = "Gemma 2 (GeGLU, sandwich norms, logit softcapping, alternating sliding window)",
       .qkv_bias = false, .attention_bias_key = "attention_bias", .mlp_bias_key = nullptr, .qk_norm = false,
       .sliding_window = SlidingWindowRule::kEveryOtherLayer, .activation = Activation::kGeluTanh, .gemma = true},
      {.name = "Gemma3ForCausalLM",
       .description = "Gemma 3 text (Gemma 2's block with q/k norms and a local rope for sliding layers)",
       .qkv_bias = false, .attention_bias_key = "attention_bias", .mlp_bias_key = nullptr, .qk_norm = true,
       .sliding_window = SlidingWindowRule::kPattern, .activation = Activation::kGeluTanh, .gemma = true,
       .local_rope = true},
      {.name = "Phi3ForCausalLM",
       .description = "Phi-3 / Phi-4 (fused qkv_proj and gate_up_proj, longrope, partial rotary)",
       .qkv_bias = false, .attention_bias_key = nullptr, .mlp_bias_key = nullptr, .qk_norm = false,
       .sliding_window = SlidingWindowRule::kAlways, .fused_projections = true},
      {.name = "Llama4ForCausalLM",
       .description = "Llama 4 text (routed experts with a shared expert, chunked attention, no-rope layers, L2 q/k "
                      "norm)",
       .qkv_bias = false, .attention_bias_key = "attention_bias", .mlp_bias_key = nullptr, .qk_norm = false,
       .sliding_window = SlidingWindowRule::kNone, .moe = MoeStyle::kLlama4, .moe_shared_expert = true,
       .llama4 = true},
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

// The rope of `rs` (a `rope_scaling` / `rope_parameters` object, or null for the default rope) with base `theta`.
absl::StatusOr<RopeSpec> ParseRope(const json& rs, double theta, absl::string_view source) {
  RopeSpec r;
  r.theta = theta;
  if (!(r.theta > 0)) return Invalid(source, "rope_theta must be positive");
  if (rs.is_null()) return r;
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    auto it = rs.find(key);
    if (it != rs.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type == "su") type = "longrope";  // early Phi-3 configs' name for it, as transformers maps it
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
  } else if (type == "longrope") {
    r.type = RopeSpec::Type::kLongrope;
    for (auto [key, dst] : {std::pair{"short_factor", &r.short_factor}, {"long_factor", &r.long_factor}}) {
      auto it = rs.find(key);
      if (it == rs.end() || !it->is_array() || it->empty())
        return Invalid(source, absl::StrCat("longrope rope scaling needs '", key, "' (a list of numbers)"));
      for (const json& v : *it) {
        if (!v.is_number() || !(v.get<double>() > 0))
          return Invalid(source, absl::StrCat("longrope '", key, "' must hold positive numbers"));
        dst->push_back(v.get<double>());
      }
    }
  } else {
    return absl::UnimplementedError(
        absl::StrCat(source, ": rope type '", type,
                     "' is not supported by the llmc model runtime; supported: default, "
                     "linear, llama3, longrope"));
  }
  if (!(r.factor > 0)) return Invalid(source, "rope scaling factor must be positive");
  return r;
}

absl::StatusOr<RopeSpec> ResolveRope(const ModelConfig& c, const json& config_json,
                                     absl::string_view source) {
  return ParseRope(c.rope_scaling, c.rope_theta, source);
}

// partial_rotary_factor (top level or in the rope object): 1 unless the architecture rotates part of each head.
absl::Status ResolvePartialRotary(const ModelConfig& c, const json& config_json, bool allowed,
                                  absl::string_view source, ModelSpec* s) {
  double factor = 1.0;
  for (const json* j : {&config_json, &c.rope_scaling}) {
    if (!j->is_object()) continue;
    auto it = j->find("partial_rotary_factor");
    if (it == j->end() || it->is_null()) continue;
    if (!it->is_number() || !(it->get<double>() > 0) || it->get<double>() > 1)
      return Invalid(source, "'partial_rotary_factor' must be a number in (0, 1]");
    factor = it->get<double>();
  }
  if (factor == 1.0) return absl::OkStatus();
  if (!allowed)
    return absl::UnimplementedError(absl::StrCat(
        source, ": partial_rotary_factor other than 1 is not supported by the llmc model runtime for ",
        s->arch->name, " (only Phi3ForCausalLM)"));
  // transformers: dim = int(head_dim * partial_rotary_factor).
  s->rotary_dims = static_cast<int64_t>(static_cast<double>(s->head_dim) * factor);
  if (s->rotary_dims < 2 || s->rotary_dims % 2 != 0)
    return Invalid(source, absl::StrCat("partial_rotary_factor ", factor, " gives ", s->rotary_dims,
                                        " rotary dimensions of head_dim ", s->head_dim, "; it must be even"));
  return absl::OkStatus();
}

// longrope's context lengths and attention factor, as transformers' _compute_longrope_parameters: with an
// original_max_position_embeddings (in the rope object or at the top level, as Phi-3 writes it) the scaling
// factor is max_position_embeddings / original_max_position_embeddings, else rope `factor`; the attention factor
// is `attention_factor` or sqrt(1 + ln(factor) / ln(original)) (1 when factor <= 1).
absl::Status ResolveLongrope(const ModelConfig& c, const json& j, absl::string_view source, ModelSpec* s) {
  RopeSpec& r = s->rope;
  const int64_t dims = s->rotary_dim() / 2;
  if (static_cast<int64_t>(r.short_factor.size()) != dims || static_cast<int64_t>(r.long_factor.size()) != dims)
    return Invalid(source, absl::StrCat("longrope short_factor and long_factor must have ", dims,
                                        " entries (rotary dimensions / 2), got ", r.short_factor.size(), " and ",
                                        r.long_factor.size()));
  double max_pos = 0;
  if (auto it = j.find("max_position_embeddings"); it != j.end() && it->is_number()) max_pos = it->get<double>();
  std::optional<double> original;
  for (const json* o : {&c.rope_scaling, &j})
    if (auto it = o->find("original_max_position_embeddings"); !original && it != o->end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<int64_t>() <= 0)
        return Invalid(source, "'original_max_position_embeddings' must be a positive integer");
      original = it->get<double>();
    }
  double factor = 1.0;
  if (original) {
    if (!(max_pos > 0)) return Invalid(source, "longrope needs 'max_position_embeddings'");
    factor = max_pos / *original;
  } else {
    if (!(max_pos > 0)) return Invalid(source, "longrope needs 'max_position_embeddings'");
    original = max_pos;
    auto f = RopeNumber(c.rope_scaling, "factor", 1.0, source);
    if (!f.ok()) return f.status();
    factor = *f;
  }
  r.original_max_position_embeddings = static_cast<int64_t>(*original);
  const double dflt = factor <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(factor) / std::log(*original));
  auto att = RopeNumber(c.rope_scaling, "attention_factor", dflt, source);
  if (!att.ok()) return att.status();
  r.attention_factor = *att;
  return absl::OkStatus();
}

// Gemma 3's two ropes: transformers 5 writes `rope_parameters: {full_attention: {...}, sliding_attention: {...}}`;
// earlier configs give the global one as rope_theta + rope_scaling and the local base as `rope_local_base_freq`.
absl::Status ResolveDualRope(const ModelConfig& c, const json& config_json, absl::string_view source,
                             ModelSpec* s) {
  const json& rp = c.rope_scaling;
  if (rp.is_object() && (rp.contains("full_attention") || rp.contains("sliding_attention"))) {
    for (const auto& [key, value] : rp.items())
      if (key != "full_attention" && key != "sliding_attention")
        return Invalid(source, absl::StrCat("rope_parameters.", key,
                                            " is not a layer type llmc knows (full_attention, sliding_attention)"));
    for (const char* key : {"full_attention", "sliding_attention"}) {
      auto it = rp.find(key);
      if (it == rp.end() || !it->is_object())
        return Invalid(source, absl::StrCat("rope_parameters.", key, " must be an object"));
      double theta = 10000.0;
      if (auto t = it->find("rope_theta"); t != it->end() && t->is_number()) theta = t->get<double>();
      auto r = ParseRope(*it, theta, source);
      if (!r.ok()) return r.status();
      (std::string(key) == "full_attention" ? s->rope : s->rope_local) = *r;
    }
    return absl::OkStatus();
  }
  auto global = ResolveRope(c, config_json, source);
  if (!global.ok()) return global.status();
  s->rope = *global;
  double local = 10000.0;
  if (auto it = config_json.find("rope_local_base_freq"); it != config_json.end() && !it->is_null()) {
    if (!it->is_number()) return Invalid(source, "'rope_local_base_freq' must be a number");
    local = it->get<double>();
  }
  auto r = ParseRope(json(), local, source);
  if (!r.ok()) return r.status();
  s->rope_local = *r;
  return absl::OkStatus();
}

// An optional positive number (null or absent: 0).
absl::StatusOr<double> OptionalPositive(const json& j, const char* key, absl::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return 0.0;
  if (!it->is_number() || !(it->get<double>() > 0))
    return Invalid(source, absl::StrCat("'", key, "' must be a positive number or null"));
  return it->get<double>();
}

// Gemma's embedding scale, attention scale and softcaps.
absl::Status ResolveGemma(const ModelConfig& c, const json& j, absl::string_view source, ModelSpec* s) {
  s->norm_offset = 1.0f;
  s->sandwich_norms = true;
  // transformers multiplies by sqrt(hidden_size) as a tensor of the model's dtype.
  std::optional<DType> dtype;
  if (c.torch_dtype == "bfloat16") dtype = DType::kBF16;
  if (c.torch_dtype == "float16") dtype = DType::kF16;
  const float scale = static_cast<float>(std::sqrt(static_cast<double>(s->hidden_size)));
  s->embedding_scale = dtype ? RoundToDType(scale, *dtype) : scale;
  auto q = OptionalPositive(j, "query_pre_attn_scalar", source);
  if (!q.ok()) return q.status();
  // Absent: transformers' Gemma2Config / Gemma3TextConfig default, 256.
  s->attention_scale = static_cast<float>(std::pow(*q > 0 ? *q : 256.0, -0.5));
  auto a = OptionalPositive(j, "attn_logit_softcapping", source);
  if (!a.ok()) return a.status();
  auto f = OptionalPositive(j, "final_logit_softcapping", source);
  if (!f.ok()) return f.status();
  s->attention_softcap = static_cast<float>(*a);
  s->final_softcap = static_cast<float>(*f);
  if (BoolKey(j, "use_bidirectional_attention"))
    return absl::UnimplementedError(absl::StrCat(
        source, ": use_bidirectional_attention is not supported by the llmc model runtime (causal attention only)"));
  return absl::OkStatus();
}

// A non-negative integer key, or `dflt` when absent or null.
absl::StatusOr<int64_t> IntKey(const json& j, const char* key, int64_t dflt, int64_t min, absl::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number_integer() || it->get<int64_t>() < min)
    return Invalid(source, absl::StrCat("'", key, "' must be an integer of at least ", min));
  return it->get<int64_t>();
}

// Llama4TextConfig's keys, with its defaults: intermediate_size_mlp for the dense layers, no_rope_layers (1: the
// layer uses rope; default every no_rope_layer_interval-th layer has none), layer_types (chunked_attention for
// rope layers, full_attention for the others), attention_chunk_size, use_qk_norm, attn_temperature_tuning with
// floor_scale and attn_scale.
absl::Status ResolveLlama4(const json& j, absl::string_view source, ModelSpec* s) {
  s->rope_interleaved = true;
  s->mlp_prefix = "feed_forward.";
  LLMC_ASSIGN_OR_RETURN(int64_t mlp, IntKey(j, "intermediate_size_mlp", 0, 1, source));
  if (mlp > 0) s->intermediate_size = mlp;  // the dense layers' MLP; the experts' is moe.expert_intermediate
  LLMC_ASSIGN_OR_RETURN(int64_t interval, IntKey(j, "no_rope_layer_interval", 4, 1, source));
  s->rope_layers.assign(s->num_layers, true);
  if (auto it = j.find("no_rope_layers"); it != j.end() && !it->is_null() &&
                                          !(it->is_array() && it->empty())) {
    if (!it->is_array() || static_cast<int64_t>(it->size()) != s->num_layers)
      return Invalid(source, absl::StrCat("'no_rope_layers' must list 0 or 1 per layer (", s->num_layers, ")"));
    for (int64_t i = 0; i < s->num_layers; ++i) {
      const json& v = (*it)[i];
      if (!v.is_number_integer() || (v.get<int64_t>() != 0 && v.get<int64_t>() != 1))
        return Invalid(source, absl::StrCat("no_rope_layers[", i, "] must be 0 (no rope) or 1 (rope)"));
      s->rope_layers[i] = v.get<int64_t>() == 1;
    }
  } else {
    for (int64_t i = 0; i < s->num_layers; ++i) s->rope_layers[i] = (i + 1) % interval != 0;
  }
  LLMC_ASSIGN_OR_RETURN(s->attention_chunk, IntKey(j, "attention_chunk_size", 8192, 1, source));
  s->layer_attention.assign(s->num_layers, AttentionKind::kFull);
  const auto lt = j.find("layer_types");
  const bool has_types = lt != j.end() && !lt->is_null();
  if (has_types && (!lt->is_array() || static_cast<int64_t>(lt->size()) != s->num_layers))
    return Invalid(source, absl::StrCat("'layer_types' must list one type per layer (", s->num_layers, ")"));
  for (int64_t i = 0; i < s->num_layers; ++i) {
    if (!has_types) {
      s->layer_attention[i] = s->rope_layers[i] ? AttentionKind::kChunked : AttentionKind::kFull;
      continue;
    }
    const json& t = (*lt)[i];
    if (t == "chunked_attention") {
      s->layer_attention[i] = AttentionKind::kChunked;
    } else if (t != "full_attention") {
      return absl::UnimplementedError(absl::StrCat(source, ": layer_types[", i, "] ", t.dump(),
                                                   " is not supported by the llmc model runtime for Llama 4; ",
                                                   "supported: full_attention, chunked_attention"));
    }
  }
  s->l2_qk_norm = true;
  if (auto it = j.find("use_qk_norm"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return Invalid(source, "'use_qk_norm' must be true or false");
    s->l2_qk_norm = it->get<bool>();
  }
  bool tuning = true;
  // Some hub configs give it as a number (4), which transformers takes as true.
  if (auto it = j.find("attn_temperature_tuning"); it != j.end() && !it->is_null()) {
    if (it->is_boolean()) {
      tuning = it->get<bool>();
    } else if (it->is_number()) {
      tuning = it->get<double>() != 0.0;
    } else {
      return Invalid(source, "'attn_temperature_tuning' must be true or false");
    }
  }
  if (tuning) {
    double floor_scale = 8192, attn_scale = 0.1;
    for (auto [key, dst] : {std::pair{"floor_scale", &floor_scale}, {"attn_scale", &attn_scale}})
      if (auto it = j.find(key); it != j.end() && !it->is_null()) {
        if (!it->is_number() || !(it->get<double>() > 0))
          return Invalid(source, absl::StrCat("'", key, "' must be a positive number"));
        *dst = it->get<double>();
      }
    s->temperature_floor_scale = floor_scale;
    s->temperature_attn_scale = attn_scale;
  }
  return absl::OkStatus();
}

// The per-layer attention kinds: `layer_types` when given, else the architecture's rule.
absl::Status ResolveLayerTypes(const ArchitectureInfo& a, const json& j, absl::string_view source, ModelSpec* s) {
  // Qwen's configs carry a window (often 0 or the context length) that is unused unless use_sliding_window.
  if (a.sliding_window == SlidingWindowRule::kOptIn && !BoolKey(j, "use_sliding_window")) return absl::OkStatus();
  auto window = j.find("sliding_window");
  const bool has_window = window != j.end() && !window->is_null();
  if (has_window && (!window->is_number_integer() || window->get<int64_t>() <= 0))
    return Invalid(source, "'sliding_window' must be a positive integer or null");
  if (has_window) s->sliding_window = window->get<int64_t>();
  if (a.sliding_window == SlidingWindowRule::kAlways) return absl::OkStatus();
  // Gemma's layer kinds also choose the rope (Gemma 3), so they are resolved even without a window.
  if (!has_window && a.sliding_window == SlidingWindowRule::kOptIn) return absl::OkStatus();
  s->layer_attention.assign(s->num_layers, AttentionKind::kFull);
  if (auto lt = j.find("layer_types"); lt != j.end() && !lt->is_null()) {
    if (!lt->is_array() || static_cast<int64_t>(lt->size()) != s->num_layers)
      return Invalid(source, absl::StrCat("'layer_types' must list one type per layer (", s->num_layers, ")"));
    for (int64_t i = 0; i < s->num_layers; ++i) {
      const json& t = (*lt)[i];
      if (t == "sliding_attention") {
        s->layer_attention[i] = AttentionKind::kSliding;
      } else if (t != "full_attention") {
        return absl::UnimplementedError(absl::StrCat(source, ": layer_types[", i, "] ", t.dump(),
                                                     " is not supported by the llmc model runtime; supported: "
                                                     "full_attention, sliding_attention"));
      }
    }
    return absl::OkStatus();
  }
  int64_t pattern = 6;
  for (const char* key : {"sliding_window_pattern", "_sliding_window_pattern"})
    if (auto it = j.find(key); it != j.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<int64_t>() <= 0)
        return Invalid(source, absl::StrCat("'", key, "' must be a positive integer"));
      pattern = it->get<int64_t>();
      break;
    }
  int64_t max_window_layers = 28;  // transformers' Qwen2Config / Qwen3Config default
  if (auto it = j.find("max_window_layers"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0)
      return Invalid(source, "'max_window_layers' must be a non-negative integer");
    max_window_layers = it->get<int64_t>();
  }
  for (int64_t i = 0; i < s->num_layers; ++i) {
    bool sliding = false;
    switch (a.sliding_window) {
      case SlidingWindowRule::kOptIn:
        sliding = i >= max_window_layers;
        break;
      case SlidingWindowRule::kEveryOtherLayer:
        sliding = (i + 1) % 2 != 0;
        break;
      case SlidingWindowRule::kPattern:
        sliding = (i + 1) % pattern != 0;
        break;
      default:
        break;
    }
    s->layer_attention[i] = sliding ? AttentionKind::kSliding : AttentionKind::kFull;
  }
  return absl::OkStatus();
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
  const ArchitectureInfo& a = **arch;
  s.activation = a.activation;
  for (const char* key : {"hidden_act", "hidden_activation"}) {
    auto it = config_json.find(key);
    if (it == config_json.end() || it->is_null()) continue;
    const std::string act = it->is_string() ? it->get<std::string>() : it->dump();
    if (act == "silu") {
      s.activation = Activation::kSilu;
    } else if (act == "gelu_pytorch_tanh") {
      s.activation = Activation::kGeluTanh;
    } else {
      return absl::UnimplementedError(
          absl::StrCat(source, ": ", key, " '", act,
                       "' is not supported by the llmc model runtime (supported: silu, gelu_pytorch_tanh)"));
    }
  }
  if (a.local_rope) {
    s.local_rope = true;
    if (auto st = ResolveDualRope(c, config_json, source, &s); !st.ok()) return st;
  } else {
    auto rope = ResolveRope(c, config_json, source);
    if (!rope.ok()) return rope.status();
    s.rope = *rope;
  }
  if (a.gemma)
    if (auto st = ResolveGemma(c, config_json, source, &s); !st.ok()) return st;
  if (auto st = ResolvePartialRotary(c, config_json, a.fused_projections, source, &s); !st.ok()) return st;
  if (s.local_rope && s.rope_local.type == RopeSpec::Type::kLongrope)
    return absl::UnimplementedError(absl::StrCat(source, ": rope type 'longrope' for sliding_attention layers is not "
                                                         "supported by the llmc model runtime"));
  if (s.rope.type == RopeSpec::Type::kLongrope) {
    if (!a.fused_projections)
      return absl::UnimplementedError(absl::StrCat(source, ": rope type 'longrope' is supported by the llmc model "
                                                           "runtime for Phi3ForCausalLM only"));
    if (auto st = ResolveLongrope(c, config_json, source, &s); !st.ok()) return st;
  }
  s.fused_projections = a.fused_projections;
  bool attention_bias = BoolKey(config_json, a.attention_bias_key);
  s.qkv_bias = a.qkv_bias || attention_bias;
  // Qwen2-MoE's config says whether q/k/v have biases (`qkv_bias`, default true).
  if (auto it = config_json.find("qkv_bias"); a.qkv_bias && it != config_json.end() && it->is_boolean())
    s.qkv_bias = it->get<bool>() || attention_bias;
  s.o_bias = attention_bias;
  s.mlp_bias = BoolKey(config_json, a.mlp_bias_key);
  s.qk_norm = a.qk_norm;
  LLMC_ASSIGN_OR_RETURN(s.moe, ResolveMoeSpec(a.moe, a.moe_shared_expert, config_json, s.num_layers,
                                              s.intermediate_size, source));
  if (a.sliding_window != SlidingWindowRule::kNone)
    if (auto st = ResolveLayerTypes(a, config_json, source, &s); !st.ok()) return st;
  if (a.llama4) {
    if (auto st = ResolveLlama4(config_json, source, &s); !st.ok()) return st;
    if (s.rope.type != RopeSpec::Type::kDefault && s.rope.type != RopeSpec::Type::kLlama3 &&
        s.rope.type != RopeSpec::Type::kLinear)
      return absl::UnimplementedError(absl::StrCat(source, ": Llama 4 with this rope type is not supported by the ",
                                                   "llmc model runtime (default, linear and llama3 are)"));
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
